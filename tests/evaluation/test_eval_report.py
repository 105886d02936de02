"""`dypo-data eval-report` through the real CLI on a store of eval_results written with the real row
builder and shard writer: the newest setting per model@version wins, side by side, JSON, one PNG per
metric for a run with several steps, and the bad inputs (unknown benchmark or model, no results)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from train_runs import assert_one_line_error

from dypo_data.contracts import EVAL_RESULTS
from dypo_data.contracts.rows import eval_result_row
from dypo_data.store import ShardWriter, connect

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
METRICS = ("avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "samples", "ungradable", "truncation_rate", "mean_length")


def dypo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True, timeout=300)


def rows_for(model: str, version: str, benchmark: str, base: float, *, shash: str, minutes: int, run_id: str) -> list[dict]:
    out = []
    for i, metric in enumerate(METRICS):
        interval = metric not in ("samples", "ungradable", "truncation_rate", "mean_length")
        value = base + 0.01 * i
        out.append(eval_result_row(
            run_id=run_id, model=model, policy_version=version, benchmark=benchmark, metric=metric, value=value,
            low=value - 0.05 if interval else None, high=value + 0.05 if interval else None, n_problems=10, k=4,
            settings_json=json.dumps({"k": 4}), shash=shash, created_at=T0 + dt.timedelta(minutes=minutes)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "st"
    rows = rows_for("smollm2", "base", "math500", 0.10, shash="s1", minutes=0, run_id="eval-a")
    for step in (1, 2, 3):
        for bench in ("math500", "aime24"):
            rows += rows_for("r1", str(step), bench, 0.1 * step, shash="s1", minutes=step, run_id="eval-b")
    # r1@1 on math500 again, later, at another setting: the report shows this one
    rows += rows_for("r1", "1", "math500", 0.9, shash="s2", minutes=10, run_id="eval-c")
    ShardWriter(root, "eval-test").write("eval_results", pa.Table.from_pylist(rows, schema=EVAL_RESULTS))
    return root


def test_view_keeps_one_row_per_key(store):
    con = connect(store)
    n = con.execute("SELECT count(*) FROM eval_results").fetchone()[0]
    assert n == len(METRICS) * (1 + 6 + 1)
    con.close()


def test_json_rows_are_the_newest_setting(store):
    out = dypo("eval-report", "--store", str(store), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(METRICS) * 7
    first = {(r["model"], r["policy_version"], r["benchmark"], r["metric"]): r for r in rows}
    assert first[("r1", "1", "math500", "avg@4")]["value"] == pytest.approx(0.9)
    assert first[("r1", "2", "aime24", "avg@4")]["step"] == 2
    assert first[("smollm2", "base", "math500", "avg@4")]["step"] is None


def test_side_by_side_table_and_plots(store, tmp_path):
    out = dypo("eval-report", "--store", str(store), "--benchmark", "math500", "--out", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "math500" in text and "aime24" not in text
    for column in ("smollm2", "r1@1", "r1@2", "r1@3"):
        assert column in text
    assert "0.900 [0.850, 0.950]" in text  # r1@1's newest setting
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == sorted(("avg_at_4.png", "pass_at_1.png", "pass_at_2.png", "pass_at_4.png", "maj_at_4.png",
                           "samples.png", "ungradable.png", "truncation_rate.png", "mean_length.png"))
    assert (tmp_path / "plots" / "avg_at_4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_filter(store):
    out = dypo("eval-report", "--store", str(store), "--model", "smollm2", "--json")
    assert {json.loads(line)["model"] for line in out.stdout.splitlines()} == {"smollm2"}


def test_unknown_benchmark_names_the_known_ones(store):
    assert_one_line_error(dypo("eval-report", "--store", str(store), "--benchmark", "aime2099"), "aime2099", "aime24, math500")


def test_unknown_model(store):
    assert_one_line_error(dypo("eval-report", "--store", str(store), "--model", "nobody"), "nobody", "r1")


def test_store_without_results(tmp_path):
    (tmp_path / "st").mkdir()
    assert_one_line_error(dypo("eval-report", "--store", str(tmp_path / "st")), "no eval results", "dypo-data eval")
    assert_one_line_error(dypo("eval-report", "--store", str(tmp_path / "missing")), "does not exist")
