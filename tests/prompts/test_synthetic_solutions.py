"""Worked solutions of the generated problems: graded correct by the project's verifier, ending in the
gold answer, and made of real steps (each intermediate result checked independently here)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from fractions import Fraction

import pytest

from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool
from dypo_data.grading.extract import find_boxes
from dypo_data.prompts.latex import latex_decimal, latex_number, latex_terms
from dypo_data.prompts.synthetic import KINDS, generate_problems

DIFFICULTIES = range(1, 6)
PER_DIFFICULTY = 25 * len(KINDS)  # 200 problems, 25 of each kind


def test_solutions_leave_problems_and_answers_as_they_were():
    """Digest of (problem, answer, kind, difficulty, params) taken before solutions existed: the prompt
    ids of existing stores depend on these texts."""
    digest = hashlib.sha256()
    for difficulty in DIFFICULTIES:
        for seed in (0, 3, 9):
            for p in generate_problems(200, seed=seed, difficulty=difficulty):
                fields = [p["problem"], p["answer"], p["kind"], p["difficulty"], p["params"]]
                digest.update(json.dumps(fields, sort_keys=True).encode())
    assert digest.hexdigest() == "0923582076af8d921a00c34a9513e9721b01185e1692f1f4eca156f85a9d0986"


def test_every_solution_verifies_and_boxes_the_gold():
    """A few hundred problems of every difficulty through the verifier pool the verify job uses."""
    problems = [p for d in DIFFICULTIES for p in generate_problems(PER_DIFFICULTY, seed=21, difficulty=d)]
    for p in problems:
        boxes = find_boxes(p["solution"])
        assert len(boxes) == 1 and boxes[0].content == p["answer"], p
        assert p["solution"].endswith(f"$\\boxed{{{p['answer']}}}$."), p
        assert len(p["solution"].splitlines()) >= 2, p  # at least one step before the answer
    items = [GradeItem(str(i), p["answer"], p["solution"]) for i, p in enumerate(problems)]
    with VerifierPool(VerifierConfig(workers=2)) as pool:
        grades = {g.key: g for g in pool.grade(items)}
    wrong = [(problems[int(k)], g) for k, g in grades.items() if not (g.status.value == "ok" and g.correct)]
    assert len(grades) == len(problems) and not wrong, wrong[:3]


def test_solutions_are_deterministic_and_written_with_the_problems(tmp_path):
    from dypo_data.prompts.synthetic import write_problems_jsonl

    first = generate_problems(30, seed=4, difficulty=3)
    assert [p["solution"] for p in first] == [p["solution"] for p in generate_problems(30, seed=4, difficulty=3)]
    write_problems_jsonl(tmp_path / "p.jsonl", 30, seed=4, difficulty=3)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["solution"] for r in rows] == [p["solution"] for p in first]
    assert list(rows[0]) == ["problem", "answer", "solution", "kind", "difficulty", "params"]


# --- the steps are real: intermediate results recomputed here ------------------------------------------

_SAFE_INT_EXPR = re.compile(r"[\d\s+\-*()]+")


def int_value(latex: str) -> int:
    """Value of an integer expression in the generator's LaTeX (\\times, \\left( \\right))."""
    text = latex.replace("\\times", "*").replace("\\left(", "(").replace("\\right)", ")")
    assert _SAFE_INT_EXPR.fullmatch(text), latex
    return eval(text)  # noqa: S307 - digits, + - *, parentheses only (checked above)


def check_arithmetic(p: dict) -> None:
    """One line per operator; each line's operation is right and the expression it leaves keeps the value."""
    steps = p["solution"].splitlines()[1:-1]
    assert len(steps) == p["difficulty"] + 1
    value = int(p["answer"])
    for line in steps:
        m = re.fullmatch(r"\$(.+) = (-?\d+)\$(?:, which leaves \$(.+)\$)?\.", line)
        assert m, line
        assert int_value(m.group(1)) == int(m.group(2)), line
        assert int_value(m.group(3)) == value if m.group(3) else int(m.group(2)) == value, line


def check_fraction(p: dict) -> None:
    ops = p["params"]["ops"]
    products = [line for line in p["solution"].splitlines() if "\\cdot" in line]
    assert len(products) == sum(op in "*/" for op in ops)
    if set(ops) & {"+", "-"}:
        m = re.search(r"common denominator \$(\d+)\$", p["solution"])
        den = Fraction(re.sub(r"-?\\frac\{(\d+)\}\{(\d+)\}", r"\1/\2", p["answer"]).lstrip("-")).denominator
        assert m and int(m.group(1)) % den == 0, p["solution"]


def check_linear(p: dict) -> None:
    a, b, c, d = (Fraction(p["params"][k]) for k in "abcd")
    var = p["params"]["variable"]
    collected = f"${latex_terms([(a - c, var)])} = "  # the rearranged equation: (a - c) var = d - b
    assert collected in p["solution"] or (b == 0 and c == 0), p["solution"]
    if a - c != 1:
        assert f"Divide both sides by ${latex_number(a - c)}$" in p["solution"]


def check_percent(p: dict) -> None:
    params = p["params"]
    if params["mode"] == "changes":
        value = Fraction(params["price"])
        for change in params["changes"]:
            value *= Fraction(100 + change, 100)
            assert f"= {latex_decimal(value)}$" in p["solution"]
    elif params["mode"] == "of":
        assert f"\\frac{{{params['percent']} \\cdot {params['number']}}}{{100}}" in p["solution"]
    else:
        ratio = Fraction(params["part"]) / params["whole"]
        assert f"{latex_decimal(ratio)} \\times 100" in p["solution"]


def check_gcd_lcm(p: dict) -> None:
    for n in p["params"]["numbers"]:
        m = re.search(rf"\${n} = ([^$]+)\$", p["solution"])
        if m is None:
            assert f"${n}$ is prime" in p["solution"] and all(n % k for k in range(2, math.isqrt(n) + 1))
            continue
        product = 1
        for prime, exp in re.findall(r"(\d+)(?:\^\{(\d+)\})?", m.group(1)):
            product *= int(prime) ** int(exp or 1)
        assert product == n, m.group(0)


def check_system(p: dict) -> None:
    y = p["answer"][1:-1].split(", ")[1]
    assert f"Substitute $y = {y}$ into the first equation" in p["solution"]


def check_quadratic(p: dict) -> None:
    a, b, c = p["params"]["coefficients"]
    g = math.gcd(a, b, c) * (1 if a > 0 else -1)
    disc = (b // g) ** 2 - 4 * (a // g) * (c // g)
    assert re.search(rf"The discriminant is .* = {disc}\$", p["solution"])


def check_modular(p: dict) -> None:
    base, exponent, modulus = (p["params"][k] for k in ("base", "exponent", "modulus"))
    if exponent == 1:
        q, r = divmod(base, modulus)
        assert f"{base} = {modulus} \\cdot {q} + {r}" in p["solution"]
        return
    powers = re.findall(r"^\$(\d+)\^\{(\d+)\} \\equiv .* (\d+) \\pmod\{(\d+)\}\$\.$", p["solution"], re.MULTILINE)
    assert len(powers) >= exponent.bit_length() - 1
    for b, k, r, m in powers:
        assert (int(b), int(m)) == (base, modulus) and pow(base, int(k), modulus) == int(r)


CHECKS = {"arithmetic": check_arithmetic, "fraction": check_fraction, "linear": check_linear,
          "percent": check_percent, "gcd_lcm": check_gcd_lcm, "system": check_system,
          "quadratic": check_quadratic, "modular": check_modular}


def test_every_kind_has_a_step_check():
    assert set(CHECKS) == set(KINDS)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_solution_steps_are_the_working(kind, difficulty):
    for p in generate_problems(20, seed=5, kinds=[kind], difficulty=difficulty):
        CHECKS[kind](p)
