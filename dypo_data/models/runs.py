"""The checkpoints of a dypo-train run, as models to evaluate.

A run directory written by `dypo-train run` (see dypo_train/loop/checkpoint.py, whose layout this
reads without importing the trainer)::

    RUN/checkpoints/step-000040/model/          a Hugging Face model directory (weights + tokenizer)
    RUN/checkpoints/step-000040/trainer_state.json   written last: its presence marks a complete checkpoint
    RUN/checkpoints/latest                      the name of the newest complete checkpoint

Temporary `.tmp-*` directories of a checkpoint being written are never listed. The trainer keeps
only the newest `run.keep_checkpoints` checkpoints, so older steps may be gone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dypo_data.errors import ConfigError, InputError

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int  # optimizer updates behind these weights: recorded as the policy version
    path: Path  # the Hugging Face model directory


def run_checkpoints(run_dir: str | Path, steps: tuple[int, ...] | None = None) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first; only `steps` when given (each must exist).

    Raises:
        InputError: the run directory does not exist, has no complete checkpoint, or lacks a step.
    """
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"run directory {run_dir} does not exist",
                         "pass a dypo-train run directory, e.g. --run runs/dypo-20261125-101500")
    found = _complete(root / CHECKPOINTS)
    if not found:
        raise InputError(f"run {run_dir} has no complete checkpoint under {root / CHECKPOINTS}",
                         "wait for the run's first checkpoint (run.checkpoint_every=N writes one every N steps)")
    if steps is None:
        return found
    by_step = {c.step: c for c in found}
    missing = [s for s in steps if s not in by_step]
    if missing:
        have = ", ".join(str(c.step) for c in found)
        raise InputError(f"run {run_dir} has no checkpoint for step(s) {', '.join(map(str, missing))}",
                         f"choose --steps among {have} (older checkpoints are pruned: run.keep_checkpoints)")
    return [by_step[s] for s in sorted(set(steps))]


def _complete(folder: Path) -> list[Checkpoint]:
    if not folder.is_dir():
        return []
    out = []
    for path in folder.iterdir():
        match = _STEP.match(path.name)
        if match and (path / STATE_FILE).is_file() and (path / MODEL_DIR / "config.json").is_file():
            out.append(Checkpoint(int(match.group(1)), path / MODEL_DIR))
    return sorted(out, key=lambda c: c.step)


def parse_steps(text: str | None) -> tuple[int, ...] | None:
    """`"100,200"` -> (100, 200); None or "" -> None (every checkpoint)."""
    if not text:
        return None
    steps = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--steps {text!r}: {part!r} is not a step number", "write e.g. --steps 100,200")
        steps.append(int(part))
    return tuple(steps)
