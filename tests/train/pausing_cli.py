"""`dypo-train` that sleeps right after checkpoint $DYPO_TEST_PAUSE_AFTER_CHECKPOINT is complete (its `latest`
pointer written), so a test can SIGKILL it at a known point of a run that is otherwise too fast to catch (the
tiny model trains a step in well under a second). The pause sits inside `Trainer.checkpoint`, after the
checkpoint write: anything the trainer does after writing a checkpoint has not happened when the kill lands.

    DYPO_TEST_PAUSE_AFTER_CHECKPOINT=2 python tests/train/pausing_cli.py run --store ... --set run.checkpoint_every=1
"""

from __future__ import annotations

import os
import time

from dypo_train.cli import main
from dypo_train.loop import trainer

PAUSE_AT = int(os.environ["DYPO_TEST_PAUSE_AFTER_CHECKPOINT"])
_save_checkpoint = trainer.save_checkpoint


def save_checkpoint(accelerator, model, tokenizer, run_dir, step, state, **kwargs):
    path = _save_checkpoint(accelerator, model, tokenizer, run_dir, step, state, **kwargs)
    if step == PAUSE_AT:
        time.sleep(3600)
    return path


trainer.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    main()
