"""Running the toolkit's commands from the pipeline: one log file per command, core binding, stage markers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # dypo-data and dypo-train live beside the interpreter that runs the pipeline


class CommandFailed(RuntimeError):
    """A toolkit command exited non-zero; the message names the command and its log."""


def tool(name: str) -> str:
    """The path of a console script of this environment (dypo-data, dypo-train)."""
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise CommandFailed(f"{name} is not installed beside {sys.executable}; run `make install` first")
        return found
    return str(path)


def bound_env(cores: tuple[int, ...] | None) -> dict[str, str]:
    """Environment of a command that must stay on `cores` (None: the whole machine).

    vLLM on CPU binds its OpenMP threads to VLLM_CPU_OMP_THREADS_BIND; torch in the trainer follows
    OMP_NUM_THREADS. Two runs side by side each get their own cores, so their spinning threads do not
    starve each other.
    """
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cores is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
        env["OMP_NUM_THREADS"] = str(len(cores))
    return env


def run(args: list[str], log: Path, *, cores: tuple[int, ...] | None = None) -> float:
    """Run a command with its output appended to `log`; returns its wall-clock seconds.

    Raises:
        CommandFailed: the command exited non-zero (the message has the log's last lines).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    prefix = ["taskset", "-c", ",".join(map(str, cores))] if cores is not None and shutil.which("taskset") else []
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(prefix + args, stdout=fh, stderr=subprocess.STDOUT, env=bound_env(cores))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        raise CommandFailed(f"`{' '.join(args[:3])} ...` exited {proc.returncode} after {seconds:.0f} s; "
                            f"log {log}:\n  " + "\n  ".join(tail))
    return seconds


def store_rows(store: Path, query: str, params: list | None = None) -> list[dict]:
    """Rows of a read-only query (`?` parameters) over a store's views, as dicts."""
    from dypo_data.store.views import connect

    con = connect(store)
    try:
        cur = con.execute(query, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def done(marker: Path) -> bool:
    return marker.is_file()


def mark_done(marker: Path, info: dict) -> None:
    """Write a stage's marker last (atomically): its presence means the stage is complete."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".tmp-{marker.name}")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, marker)
