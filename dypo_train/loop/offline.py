"""Offline data: the rollout groups (or, for SFT only, the teacher pool) already in the store."""

from __future__ import annotations

import time

from dypo_train.config import TrainConfig
from dypo_train.stream.reader import StoreStream, total_steps
from dypo_train.stream.types import PromptGroup


def unit_kind(cfg: TrainConfig) -> str:
    """SFT-only runs iterate over prompts with verified teacher traces; the rest over rollout groups."""
    return "teacher_prompt" if cfg.loss.gate == "sft" else "group"


class OfflineSource:
    """Reads each step's groups from the store (see dypo_train.stream.reader)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        d = cfg.data
        self.stream = StoreStream(d.store, unit_kind=unit_kind(cfg), rollout_model=d.rollout_model, teachers=d.teachers,
                                  max_teachers=d.max_teachers, seed=d.seed)
        self.batch = cfg.run.prompts_per_step

    def total_steps(self) -> int:
        return total_steps(self.stream.steps_per_epoch(self.batch), max_steps=self.cfg.run.max_steps, epochs=self.cfg.run.epochs)

    def groups(self, step: int) -> tuple[list[PromptGroup], dict[str, float]]:
        started = time.perf_counter()
        groups = self.stream.read(self.stream.units_for_step(step, self.batch))
        return groups, {"time/data": time.perf_counter() - started, "data/epoch": self.stream.epoch_of(step, self.batch)}

    def after_update(self, step: int) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self.stream.close()
