"""Solution styles (`--style compact`) and the opt-in `operation` kind of the problem generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dypo_data.errors import ConfigError
from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool
from dypo_data.prompts.synthetic import KINDS, generate_problems
from dypo_data.prompts.worked import arithmetic_chain_solution, parse_expression


def test_compact_style_changes_only_the_solutions():
    worked = generate_problems(60, seed=5, kinds=["arithmetic"], difficulty=3)
    compact = generate_problems(60, seed=5, kinds=["arithmetic"], difficulty=3, style="compact")
    assert [(p["problem"], p["answer"], p["params"]) for p in worked] == [(p["problem"], p["answer"], p["params"]) for p in compact]
    assert all(w["solution"] != c["solution"] for w, c in zip(worked, compact))


def test_compact_chain_by_hand():
    assert arithmetic_chain_solution(parse_expression("3 + 4 * 5")) == "$3 + 4 \\times 5 = 3 + 20 = 23$.\nThe answer is $\\boxed{23}$."
    # + and - group from the left as a reader reads them; parentheses go first
    assert arithmetic_chain_solution(parse_expression("(2 - 7) * 3 - 1")) == (
        "$\\left(2 - 7\\right) \\times 3 - 1 = -5 \\times 3 - 1 = -15 - 1 = -16$.\nThe answer is $\\boxed{-16}$.")


def test_compact_solutions_verify_against_the_gold():
    problems = [p for d in (1, 3, 5) for kind in ("arithmetic", "operation")
                for p in generate_problems(40, seed=9, kinds=[kind], difficulty=d, style="compact")]
    for p in problems:
        assert p["solution"].endswith(f"$\\boxed{{{p['answer']}}}$."), p
        assert p["solution"].count("=") >= 1 and len(p["solution"].splitlines()) == 2, p
    with VerifierPool(VerifierConfig(workers=1)) as pool:
        grades = list(pool.grade([GradeItem(str(i), p["answer"], p["solution"]) for i, p in enumerate(problems)]))
    assert all(g.status.value == "ok" and g.correct for g in grades)


def test_operation_is_one_operation_and_stays_out_of_the_default_cycle():
    assert "operation" not in KINDS
    for p in generate_problems(50, seed=1, kinds=["operation"], difficulty=2):
        assert len(re.findall(r" [-+] | \\times ", p["problem"])) == 1, p["problem"]
        assert p["kind"] == "operation" and eval(p["params"]["expression"]) == int(p["answer"])  # noqa: S307
    assert [p["kind"] for p in generate_problems(len(KINDS), seed=0)] == list(KINDS)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"style": "terse"}, "unknown solution style"),
    ({"style": "compact", "kinds": ["fraction"]}, "has no form for kind(s) fraction"),
    ({"kinds": ["operations"]}, "unknown problem kind"),
])
def test_bad_style_or_kind_is_a_config_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        generate_problems(4, **kwargs)


def test_synth_cli_writes_the_style(tmp_path):
    out = tmp_path / "p.jsonl"
    script = Path(sys.executable).with_name("dypo-data")
    done = subprocess.run([str(script), "synth", "--out", str(out), "-n", "5", "--kind", "operation", "--difficulty", "1",
                           "--style", "compact"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(r["solution"].startswith("$") for r in rows)
    bad = subprocess.run([str(script), "synth", "--out", str(out), "--style", "compact"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode != 0 and "has no form for kind(s)" in bad.stderr and "Traceback" not in bad.stderr
