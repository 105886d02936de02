"""Published distillation data through the CLI: import its traces, verify them with the real
math-verify pool, and agree with the correctness flags the data shipped with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dypo_data.store import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prompts"))
import prompt_files  # noqa: E402  (tests/prompts: fixture files in the published layouts)


def dypo(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_openr1_import_verify_matches_shipped_flags(tmp_path):
    src = prompt_files.openr1_parquet(tmp_path)
    store = tmp_path / "st"
    out = json.loads(dypo("import", str(src), "--store", str(store), "--json").stdout)
    assert out["prompts_new"] == 3 and out["traces_imported"] == 6
    again = json.loads(dypo("import", str(src), "--store", str(store), "--json").stdout)
    assert again["prompts_new"] == 0 and again.get("traces_imported", 0) == 0
    dypo("verify", "--store", str(store), "--workers", "2", "-q")
    rows = connect(store).execute(
        "SELECT source_correct, correct, status, backend, source FROM scored_traces ORDER BY trace_id"
    ).fetchall()
    assert len(rows) == 6
    for shipped, ours, status, backend, source in rows:
        assert status == "ok" and backend == "import" and source.startswith("import:openr1:")
        assert shipped == ours  # our verdict agrees with the flags OpenR1 computed


def test_dypo_two_teacher_import_to_sft_export(tmp_path):
    src = prompt_files.dypo_parquet(tmp_path)
    store = tmp_path / "st"
    dypo("import", str(src), "--store", str(store), "--teacher-names", "qwen,r1")
    dypo("verify", "--store", str(store), "-q")
    con = connect(store)
    pool = dict(con.execute("SELECT model, count(*) FROM teacher_pool GROUP BY model").fetchall())
    assert pool == {"qwen": 3, "r1": 3}
    dypo("export", "--store", str(store), "--kind", "sft", "--out", str(tmp_path / "sft"))
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "sft"))
    assert len(ds) == 6 and ds[0]["messages"][-1]["role"] == "assistant"


def test_reverify_with_other_settings_adds_verdicts(tmp_path):
    src = prompt_files.luffy_parquet(tmp_path)
    store = tmp_path / "st"
    dypo("import", str(src), "--store", str(store))
    dypo("verify", "--store", str(store), "-q")
    traces_before = sorted(p.name for p in (store / "traces").glob("*.parquet"))
    first = json.loads(dypo("verify", "--store", str(store), "--json").stdout.strip().splitlines()[-1])
    assert first["traces_to_verify"] == 0
    dypo("verify", "--store", str(store), "--float-rounding", "3", "-q")
    con = connect(store)
    assert con.execute("SELECT count(*), count(DISTINCT settings_hash) FROM verdicts").fetchone() == (6, 2)
    assert con.execute("SELECT count(*) FROM latest_verdicts").fetchone()[0] == 3
    assert sorted(p.name for p in (store / "traces").glob("*.parquet")) == traces_before
