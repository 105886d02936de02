"""Checkpoints: Hugging Face model + tokenizer, Accelerate state (optimizer, scheduler, RNG), trainer state.

Layout of a run directory:

    RUN/config.json                 the resolved config (written at the start)
    RUN/checkpoints/step-000040/    model/ (save_pretrained + tokenizer), state/ (accelerator.save_state),
                                    trainer_state.json
    RUN/checkpoints/latest          the name of the newest complete checkpoint

A checkpoint is written under a temporary name and renamed when complete; `latest` is replaced
atomically after that, and older checkpoints are deleted only then. A failed write (full disk)
removes its temporary directory and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from dypo_data.errors import InputError, StoreError

LATEST = "latest"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(accelerator: Any, model: Any, tokenizer: Any, run_dir: Path, step: int, state: dict[str, Any], *, keep: int) -> Path:
    """Write checkpoint `step` atomically (every process must call this); returns its directory."""
    root = run_dir / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
    try:
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp / "state"))
        state_dict = accelerator.get_state_dict(model)  # collective under FSDP / ZeRO-3: every process calls it
        accelerator.wait_for_everyone()  # every rank's state/ files are written before the directory is renamed
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            unwrapped.save_pretrained(tmp / "model", state_dict=state_dict)
            tokenizer.save_pretrained(tmp / "model")
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_text_atomic(root / LATEST, final.name)
            _prune(root, keep)
    except Exception as exc:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            (root / f"{TMP_PREFIX}{LATEST}").unlink(missing_ok=True)
        reason = _write_failure(exc, root)
        if reason is None:
            raise
        raise StoreError(
            f"could not write checkpoint {final}: {reason}",
            "free space or choose another run.output_dir; the previous checkpoint is intact",
        ) from exc
    accelerator.wait_for_everyone()
    return final


# How writers other than Python's file objects report a failed write: torch.save's zip writer (RuntimeError)
# and safetensors (SafetensorError) on a full disk.
_WRITE_FAILURES = ("file write failed", "unexpected pos", "PytorchStreamWriter failed", "StorageFull", "No space left")


def _write_failure(exc: BaseException, root: Path) -> str | None:
    """Why a checkpoint write failed, in a few words, or None when `exc` is not a write failure."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if not any(s in str(exc) for s in _WRITE_FAILURES):
        return None
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = -1
    if "StorageFull" in str(exc) or "No space left" in str(exc) or 0 <= free < 1 << 20:
        return f"{os.strerror(errno.ENOSPC)} ({max(free, 0)} bytes free)"
    return str(exc).strip().splitlines()[0]


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise InputError(f"checkpoint {path} named by {pointer} is incomplete", f"delete {pointer} to start the run over")
    return path


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())
