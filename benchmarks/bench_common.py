"""What the side-by-side benchmarks share: each side runs in a fresh child process of the same
script (`--child MODE`), prints one `BENCH_RESULT {json}` line, and the sides alternate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULT_MARK = "BENCH_RESULT "


def print_result(result: dict) -> None:
    """The child's answer: one marked line (engines may print to stdout too)."""
    print(RESULT_MARK + json.dumps(result))


def run_child(script: str, mode: str, args: Sequence[str]) -> dict:
    """Run `script --child MODE ARGS...` in a fresh process; its result, or exit with its stderr."""
    cmd = [sys.executable, script, "--child", mode, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def alternate(modes: tuple[str, str], repeats: int, run: Callable[[str], dict]) -> dict[str, list[dict]]:
    """`repeats` runs of each mode, in alternating order (a, b, b, a, ...): drift on a shared machine hits both."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(repeats):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            runs[mode].append(run(mode))
    return runs


def cached_build(cache: Path, name: str, build: Callable[[Path], object]) -> tuple[Path, float]:
    """`cache/name`, built by `build(tmp)` under a temporary name and renamed into place once complete
    (a killed build leaves no half-built copy), unless it is already there; (path, build seconds)."""
    root = cache / name
    if root.is_dir():
        return root, 0.0
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    build(tmp)
    os.replace(tmp, root)
    return root, time.perf_counter() - started
