"""Makes the trainer's test helpers (tests/train: `train_runs`, `train_store`) importable here: the
`--run` test trains a tiny policy for two steps the way the trainer's own tests do."""

from __future__ import annotations

import sys
from pathlib import Path

TRAIN_TESTS = str(Path(__file__).resolve().parents[1] / "train")
if TRAIN_TESTS not in sys.path:
    sys.path.insert(0, TRAIN_TESTS)
