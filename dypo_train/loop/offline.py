"""Offline data: the rollout groups (or, for SFT only, the teacher pool) already in the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dypo_train.config import TrainConfig
from dypo_train.stream.reader import StoreStream, total_steps
from dypo_train.stream.types import PromptGroup


def unit_kind(cfg: TrainConfig) -> str:
    """SFT-only runs iterate over prompts with verified teacher traces; the rest over rollout groups."""
    return "teacher_prompt" if cfg.loss.gate == "sft" else "group"


class OfflineSource:
    """Reads each step's groups from the store (see dypo_train.stream.reader).

    The next step's groups are read in a background thread while this step trains, so the store
    read is off the critical path; the reader's connection is only ever used by that thread. Given a
    planner (`plan_ahead`: the trainer's phase 2, a pure function of the step and its groups), that
    thread plans the step too, and `planned` hands the plan over with the groups.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        d = cfg.data
        self.stream = StoreStream(d.store, unit_kind=unit_kind(cfg), rollout_model=d.rollout_model, teachers=d.teachers,
                                  max_teachers=d.max_teachers, seed=d.seed)
        self.batch = cfg.run.prompts_per_step
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="store-reader")
        self.pending: tuple[int, Future] | None = None
        self.planner: Callable[[int, list[PromptGroup]], Any] | None = None
        self.ready: tuple[int, list[PromptGroup], Any] | None = None  # (step, its groups, their plan)

    def plan_ahead(self, planner: Callable[[int, list[PromptGroup]], Any]) -> None:
        """Plan each step in the reader thread, right after reading it (set before the first `groups`)."""
        self.planner = planner

    def planned(self, step: int, groups: list[PromptGroup]) -> Any | None:
        """The plan made ahead of `step` for these very groups (None when there is none)."""
        if self.ready is not None and self.ready[0] == step and self.ready[1] is groups:
            return self.ready[2]
        return None

    def total_steps(self) -> int:
        return total_steps(self.stream.steps_per_epoch(self.batch), max_steps=self.cfg.run.max_steps, epochs=self.cfg.run.epochs)

    def _read(self, step: int) -> tuple[list[PromptGroup], Any]:
        groups = self.stream.read(self.stream.units_for_step(step, self.batch))
        return groups, (self.planner(step, groups) if self.planner is not None else None)

    def groups(self, step: int) -> tuple[list[PromptGroup], dict[str, float]]:
        started = time.perf_counter()
        if self.pending is None or self.pending[0] != step:
            self.pending = (step, self.reader.submit(self._read, step))
        groups, plan = self.pending[1].result()
        self.ready = (step, groups, plan)
        self.pending = (step + 1, self.reader.submit(self._read, step + 1)) if step + 1 < self.total_steps() else None
        return groups, {"time/data": time.perf_counter() - started, "data/epoch": self.stream.epoch_of(step, self.batch)}

    def after_update(self, step: int) -> dict[str, float]:
        return {}

    def close(self) -> None:
        if self.pending is not None:
            self.pending[1].cancel()
        self.reader.shutdown(wait=True)
        self.stream.close()
