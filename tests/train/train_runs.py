"""Shared by the trainer's integration tests: configs for the tiny policy, runs in-process and through
the real `dypo-train` CLI, and readers of what a run leaves behind (store tables, checkpoints).

The store from `train_store.build_train_store` has 16 prompts, 2 of them in unscored groups, so 14
groups train; at PROMPTS_PER_STEP = 7 an epoch is exactly STEPS_PER_EPOCH = 2 steps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from train_store import build_train_store

PROMPTS_PER_STEP = 7
STEPS_PER_EPOCH = 2
CLI_TIMEOUT_S = 300


def make_store(root: Path, model_dir: Path, **kw):
    from transformers import AutoTokenizer

    return build_train_store(root, AutoTokenizer.from_pretrained(model_dir), **kw)


def overrides(store: Path, model_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    """`--set` values of a small float32 run of the tiny policy (extra ones win)."""
    return [f"data.store={store}", f"model.policy={model_dir}", "model.mixed_precision=no", "run.report_to=[]",
            f"run.output_dir={out}", f"run.name={name}", f"run.prompts_per_step={PROMPTS_PER_STEP}", "optim.lr=1e-3", *extra]


def reset_accelerate() -> None:
    """Accelerate keeps process-wide state; in-process runs start from a clean one."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def train(recipe: str, sets: list[str]):
    """Resolve and run in this process on one thread; returns (run_dir, per-step metrics).

    One thread: on a small shared machine two busy-waiting OpenMP threads made the tiny model's steps ~10x slower.
    """
    import torch

    from dypo_train.loop.run import run_training
    from dypo_train.recipes import resolve

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reset_accelerate()
    try:
        return run_training(resolve(recipe, overrides=sets))
    finally:
        reset_accelerate()
        torch.set_num_threads(threads)


# -- the real CLI ------------------------------------------------------------------------------------


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("dypo-train")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dypo_train.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command(), *args], check=False, capture_output=True, text=True, env=env or cli_env(), timeout=timeout)


def sets_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, no traceback, and an `error: ... (fix: ...)` last line on stderr naming each fragment."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, result.stdout
    err = lines[-1]
    assert err.startswith("error: ") and "(fix: " in err, result.stderr
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def step_lines(stdout: str) -> list[str]:
    """The console's per-step lines (`step 3/4 | ...`)."""
    return [line.split(" | ")[0] for line in stdout.splitlines() if line.startswith("step ")]


# -- what a run leaves behind ---------------------------------------------------------------------


def query(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of `sql` over the store's views."""
    from dypo_data.store.views import connect

    con = connect(Path(store))
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def step_metrics(store: Path, run_id: str) -> dict[int, dict[str, float]]:
    """train_metrics of a run as {step: {name: value}} (the view keeps the latest row per step and name)."""
    from dypo_data.store.views import connect

    con = connect(Path(store))
    try:
        rows = con.execute("SELECT step, name, value FROM train_metrics WHERE run_id = ? ORDER BY step, name", [run_id]).fetchall()
    finally:
        con.close()
    out: dict[int, dict[str, float]] = {}
    for step, name, value in rows:
        out.setdefault(int(step), {})[name] = value
    return out


def latest_dir(run_dir: Path) -> Path:
    root = Path(run_dir) / "checkpoints"
    return root / (root / "latest").read_text().strip()


def model_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def checkpoint_weights(run_dir: Path, step: int | None = None) -> dict:
    from dypo_train.loop.checkpoint import checkpoint_name

    ckpt = latest_dir(run_dir) if step is None else Path(run_dir) / "checkpoints" / checkpoint_name(step)
    return model_weights(ckpt / "model")


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def tree_hashes(root: Path, *, stamps: bool = False) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (with its mtime and inode when `stamps`: a rewrite shows)."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = f"{digest} {p.stat().st_mtime_ns} {p.stat().st_ino}" if stamps else digest
    return out


def tmp_entries(run_dir: Path) -> list[str]:
    """Leftover temporary checkpoint names."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-")) if root.is_dir() else []
