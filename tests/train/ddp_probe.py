"""`dypo-train` that records what accelerate set up in each process, so a test can tell that a launch really
ran N data-parallel processes (accelerate can silently start N independent single-process runs instead).

Writes $DYPO_TEST_PROBE_DIR/rank-<i>.json: process index, process count, distributed type, the wrapped model's
class, and the tokens this process trained at each step.

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml tests/train/ddp_probe.py run --store ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dypo_train.cli import main
from dypo_train.loop import trainer

_train = trainer.Trainer.train


def train(self, **kwargs):
    history = _train(self, **kwargs)
    acc = self.acc
    record = {
        "process_index": acc.process_index, "num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type),
        "env_rank": os.environ.get("RANK"), "env_world_size": os.environ.get("WORLD_SIZE"),
        "model_class": type(self.setup.model).__name__, "tokens": [h["perf/rank_tokens"] for h in history],
    }
    Path(os.environ["DYPO_TEST_PROBE_DIR"], f"rank-{acc.process_index}.json").write_text(json.dumps(record))
    return history


trainer.Trainer.train = train

if __name__ == "__main__":
    main()
