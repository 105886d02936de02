"""Makes the shared helpers in tests/ (`store_factory`, `cli_run`, `parquet_damage`) and the trainer's
(tests/train: `train_runs`, `train_store`) importable from this folder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
for folder in (str(TESTS_DIR), str(TESTS_DIR / "train")):
    if folder not in sys.path:
        sys.path.insert(0, folder)
