"""The demo's generate step on the embedded model, small, on whatever CPU runs the suite.

`make demo` once died on an AVX2-only CPU: bf16 ran emulated, one core computed, and one engine
step prefilled the whole batch for minutes until vLLM's step timeout killed the engine. This test
runs the demo's generate settings with a tight step timeout of the user's own (kept by the CPU
plan), so a configuration that makes single steps slow fails here, loudly, with the engine's
error, rather than as a timing assertion. With those old settings one step of this batch took
about 60 s on a 2-core AVX2 EPYC; with the chosen ones the longest took about 6 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dypo_data.backends.cpu import detect_cpu
from dypo_data.store import read_table

STEP_TIMEOUT_S = 30  # several times the longest step measured with the chosen settings


def test_demo_generate_settings_keep_every_engine_step_short(smollm2_cache, tmp_path):
    problems, store = tmp_path / "problems.jsonl", tmp_path / "store"
    env = dict(os.environ, DYPO_CACHE=str(smollm2_cache), VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=str(STEP_TIMEOUT_S),
               TOKENIZERS_PARALLELISM="false")
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # --kv-cache-gib sets it, as in the demo

    def dypo(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", *args], capture_output=True, text=True,
                             env=env, timeout=900)
        assert out.returncode == 0, f"{args[0]} exited {out.returncode}\n{out.stderr[-4000:]}"
        return out

    dypo("synth", "--out", str(problems), "-n", "8", "--difficulty", "1", "--seed", "0")
    out = dypo("generate", "--store", str(store), "--prompts", str(problems),
               "--teacher", "smollm2-teacher=smollm2", "-m", "2", "--policy", "smollm2", "-k", "4",
               "--temperature", "0.7", "--max-tokens", "64", "--kv-cache-gib", "2", "--json")
    # the chosen settings and why, one line, without --verbose
    plan = [line for line in out.stderr.splitlines() if "dypo_data.backends.cpu: cpu " in line]
    assert plan and "steps of at most" in plan[0] and f"step timeout {STEP_TIMEOUT_S} s (yours)" in plan[0]
    summaries = {s["role"]: s for s in json.loads(out.stdout.strip().splitlines()[-1])}
    assert summaries["teacher"]["samples_generated/smollm2-teacher"] == 16
    assert summaries["policy"]["samples_generated/SmolLM2-135M-Instruct"] == 32
    # teacher and policy are one checkpoint: one engine start for both roles
    assert summaries["policy"]["engine_start_seconds/SmolLM2-135M-Instruct"] == 0.0
    # traces record the dtype the engine ran, which the CPU decided
    traces = read_table(store, "traces", ["role", "sampling"]).to_pylist()
    dtypes = {json.loads(t["sampling"])["model"]["dtype"] for t in traces if t["role"] == "policy"}
    assert dtypes == {"auto" if detect_cpu().native_bf16 else "float32"}


@pytest.mark.parametrize("isa", ["avx2"])
def test_forced_cpu_level_shows_in_the_cpu_command(isa):
    out = subprocess.run([sys.executable, "-m", "dypo_data.cli.main", "cpu", "--json"], capture_output=True, text=True,
                         env=dict(os.environ, DYPO_CPU_ISA=isa), timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["isa"] == isa and info["native_bf16"] is False and info["plan"]["dtype"] == "float32"
    assert info["source"] == f"DYPO_CPU_ISA={isa}"
