"""The eval's metrics from the store, through the real CLI, on verdicts chosen by hand: after a first
eval (transformers backend, no engine to start), newer verdicts with known answers are written for its
samples and a rerun recomputes the metrics from them. maj@k must merge answers the verifier calls
equal ("0.5" and "1/2"), which string equality would split into a tie.

The hand verdicts are written under other verifier settings (a 6 s timeout) than the first eval's,
as a re-verification would be; the rerun with `--timeout 6` finds its samples graded already."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dypo_data.contracts import VERDICTS, VerdictStatus
from dypo_data.contracts.rows import verdict_row, verifier_settings_hash
from dypo_data.grading import VerifierConfig, verifier_version
from dypo_data.grading.verdict import make_grade
from dypo_data.store import ShardWriter, connect

PROBLEMS = [{"problem": "Write one half as a number.", "answer": "\\frac{1}{2}"},
            {"problem": "What is 1 + 2?", "answer": "3"}]
# (extracted answer, correct) per sample; correct None: ungradable (timeout)
CHOSEN = {
    "Write one half as a number.": [("0.5", True), ("1/2", True), ("2", False), ("7", False)],
    "What is 1 + 2?": [("4", False), ("4.0", False), ("3", True), ("3", None)],
}


def dypo(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DYPO_CACHE=str(cache), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_chosen_verdicts(store: Path) -> int:
    con = connect(store)
    try:
        rows = con.execute("SELECT t.trace_id, t.sample_idx, p.problem, p.answer FROM traces t JOIN prompts p USING (prompt_id) "
                           "WHERE t.role = 'eval'").fetchall()
    finally:
        con.close()
    settings = VerifierConfig(timeout_s=6.0).settings()  # the rerun's verifier: its verdicts are the ones it reads
    out = []
    for trace, idx, problem, gold in rows:
        answer, correct = CHOSEN[problem][idx]
        status = VerdictStatus.TIMEOUT if correct is None else VerdictStatus.OK
        grade = make_grade(trace, status, correct, answer, 0.01)
        out.append(verdict_row(grade, gold, vhash=verifier_settings_hash(settings), settings_json=json.dumps(settings),
                               version=verifier_version()))
    ShardWriter(store, "hand-verdicts").write("verdicts", pa.Table.from_pylist(out, schema=VERDICTS))
    return len(out)


def test_metrics_follow_the_newest_verdicts_and_maj_merges_equal_answers(tmp_path):
    prompts = tmp_path / "half.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    args = ["eval", "--store", str(tmp_path / "st"), "--model", "tiny", "--prompts", str(prompts), "-k", "4",
            "--max-tokens", "4", "--backend", "transformers", "--dtype", "float32", "--json"]
    first = json.loads(dypo(*args, cache=tmp_path / "cache").stdout.splitlines()[-1])
    assert first["counts"]["samples_generated"] == 8 and first["counts"]["samples_graded"] == 8
    assert write_chosen_verdicts(tmp_path / "st") == 8
    again = json.loads(dypo(*args, "--timeout", "6", cache=tmp_path / "cache").stdout.splitlines()[-1])
    assert again["counts"]["samples_generated"] == 0 and again["counts"]["samples_graded"] == 0
    got = {r["metric"]: r for r in again["results"]}
    assert got["avg@4"]["value"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    # problem 1: {0.5, 1/2} win 2 votes to 1 and 1 (a 4-way tie, 0.5, by strings); problem 2: {4, 4.0} beat "3"
    assert got["maj@4"]["value"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["pass@4"]["n_problems"] == 1 and got["pass@4"]["value"] == 1.0  # problem 2 has 3 graded samples
    assert got["ungradable"]["value"] == 1 and got["samples"]["value"] == 8
    assert not math.isnan(got["mean_length"]["value"])
    dypo(*args, "--timeout", "6", cache=tmp_path / "cache")
    con = connect(tmp_path / "st")
    try:
        n = con.execute("SELECT count(*) FROM eval_results WHERE metric = 'maj@4'").fetchone()[0]
        raw = con.execute(f"SELECT count(*) FROM '{tmp_path / 'st'}/eval_results/*.parquet' WHERE metric = 'maj@4'").fetchone()[0]
    finally:
        con.close()
    assert (n, raw) == (2, 3)  # one row per verifier setting in the view: the third run superseded the second
