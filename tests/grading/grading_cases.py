"""Inputs shared by the grading tests: the benchmark golds and a real pathological answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The repository sits beside ../shared, which holds the real evaluation sets; DYPO_BENCHMARKS
# points elsewhere (a checkout that does not sit beside it).
BENCHMARKS = Path(
    os.environ.get("DYPO_BENCHMARKS") or Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"
)
# A real input that sympy cannot finish: math-verify's numeric comparison evaluates the power
# tower 9^(9^(9^9)) exactly, which runs for hours (interruptible by a signal between steps).
POWER_TOWER = "So the count is \\boxed{9^{9^{9^{9}}}}."


def benchmark_golds() -> list[tuple[str, int, str]]:
    """(file name, 1-based line, gold answer) for every row of ../shared/benchmarks/*.jsonl."""
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmarks not found at {BENCHMARKS}; set DYPO_BENCHMARKS to their directory")
    rows = []
    for path in sorted(BENCHMARKS.glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                rows.append((path.name, line_no, json.loads(line)["answer"]))
    return rows
