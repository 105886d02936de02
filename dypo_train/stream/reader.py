"""Reads a step's prompt groups from the store, one step at a time.

Planning a run lists its units (ids) and copies their rows (rollouts with token ids, rewards and
logprobs, prompts, teacher pool) out of the store once, into a working set on disk (see
working_set.py); a step then reads only its own rows from there, so its cost does not grow with the
store, and the store is never loaded whole into memory nor read again after planning.

The data order is a pure function of (seed, step): step s reads batch s % steps_per_epoch of the
permutation of epoch s // steps_per_epoch. Resuming at any step, an epoch boundary included,
reads exactly what an uninterrupted run would have read.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from dypo_data.errors import InputError
from dypo_data.store import connect, naming_damaged_shards, open_store
from dypo_train.stream.types import PromptGroup
from dypo_train.stream.working_set import RunRows

log = logging.getLogger(__name__)

Unit = str  # a group_id (offline rollouts) or a prompt_id (SFT only, online)

_GROUP_UNITS = """
    SELECT group_id, k, model FROM groups
    WHERE tier <> 'unscored' AND (? = '' OR model = ?)
    ORDER BY group_id
"""
_UNSCORED_GROUPS = "SELECT count(*) FROM groups WHERE tier = 'unscored' AND (? = '' OR model = ?)"
_TEACHER_PROMPT_UNITS = "SELECT DISTINCT prompt_id FROM teacher_pool WHERE list_contains(?, model) ORDER BY prompt_id"
_PROMPT_UNITS = "SELECT prompt_id FROM prompts WHERE ? = '' OR split = ? ORDER BY prompt_id"
_TEACHER_NAMES = "SELECT DISTINCT model FROM traces WHERE role = 'teacher' ORDER BY model"


@dataclass(frozen=True)
class StreamPlan:
    """What a run iterates over: its units, in store order, and the group size."""

    units: list[Unit]
    unit_kind: str  # "group" or "prompt"
    k: int | None  # rollouts per group (offline groups); None for prompt units
    teachers: list[str]
    skipped_unscored: int = 0


class StoreStream:
    """Prompt groups of a store, batch by batch; see the module docstring."""

    def __init__(self, store: str | Path, *, unit_kind: str, rollout_model: str = "", teachers: list[str] | None = None,
                 max_teachers: int = 0, seed: int = 0, prompt_split: str = "") -> None:
        self.root = open_store(store)
        self.seed = seed
        self.prompt_split = prompt_split  # prompt units: only prompts of this split ('' for all)
        self._order: tuple[int, list[Unit]] | None = None  # (epoch, its permutation of the units)
        self.con = connect(self.root)
        try:
            with naming_damaged_shards(self.root):
                self.plan = self._plan(unit_kind, rollout_model, teachers or [], max_teachers)
                self.rows = RunRows(self.con, units=self.plan.units, unit_kind=self.plan.unit_kind, teachers=self.plan.teachers)
        finally:
            self.con.close()  # planned: the store is not read again
            self.con = None  # and its readers lock goes with the connection (a compaction may remove what it merged)

    # -- planning ------------------------------------------------------------------------------

    def _teacher_names(self, wanted: list[str], max_teachers: int) -> list[str]:
        present = [r[0] for r in self.con.execute(_TEACHER_NAMES).fetchall()]
        if wanted:
            missing = sorted(set(wanted) - set(present))
            if missing:
                raise InputError(f"teacher(s) {missing} have no traces in store {self.root}",
                                 f"use some of: {', '.join(present) or '(none: generate teacher traces first)'}")
            present = [t for t in present if t in wanted]
        return present[:max_teachers] if max_teachers else present

    def _plan(self, unit_kind: str, rollout_model: str, wanted: list[str], max_teachers: int) -> StreamPlan:
        teachers = self._teacher_names(wanted, max_teachers)
        if unit_kind == "group":
            rows = self.con.execute(_GROUP_UNITS, [rollout_model, rollout_model]).fetchall()
            unscored = self.con.execute(_UNSCORED_GROUPS, [rollout_model, rollout_model]).fetchall()[0][0]
            if not rows:
                which = f" of model {rollout_model!r}" if rollout_model else ""
                raise InputError(
                    f"store {self.root} has no graded rollout groups{which} ({unscored} unscored)",
                    "generate policy rollouts with `dypo-data generate --policy ...` and grade them with `dypo-data verify`, "
                    "or train online with data.mode=online",
                )
            ks = sorted({int(r[1]) for r in rows})
            if len(ks) > 1:
                raise InputError(
                    f"store {self.root} mixes rollout groups of different sizes k={ks}",
                    "select one group size with data.rollout_model=<model>, or regenerate so every group has the same k",
                )
            return StreamPlan([r[0] for r in rows], "group", ks[0], teachers, unscored)
        if unit_kind == "teacher_prompt":
            rows = self.con.execute(_TEACHER_PROMPT_UNITS, [teachers]).fetchall()
            if not rows:
                raise InputError(f"store {self.root} has no verified-correct teacher traces",
                                 "generate them with `dypo-data generate --teacher ...` and `dypo-data verify`")
            return StreamPlan([r[0] for r in rows], "prompt", None, teachers)
        rows = self.con.execute(_PROMPT_UNITS, [self.prompt_split, self.prompt_split]).fetchall()
        if not rows:
            which = f" of split {self.prompt_split!r}" if self.prompt_split else ""
            raise InputError(f"store {self.root} has no prompts{which}",
                             "add some with `dypo-data import FILE --store ...`, or pick another data.prompt_split")
        return StreamPlan([r[0] for r in rows], "prompt", None, teachers)

    # -- batches -------------------------------------------------------------------------------

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per pass (a last partial batch is dropped, as every step has the same size)."""
        return max(1, len(self.plan.units) // batch_size)

    def units_for_step(self, step: int, batch_size: int) -> list[Unit]:
        """The units of optimizer step `step` (0-based)."""
        per_epoch = self.steps_per_epoch(batch_size)
        epoch, index = divmod(step, per_epoch)
        return self._epoch_order(epoch)[index * batch_size:(index + 1) * batch_size]

    def _epoch_order(self, epoch: int) -> list[Unit]:
        """The permutation of the units for `epoch`, kept while steps of that epoch are read (shuffling
        100k units costs tens of milliseconds: more than reading a step)."""
        cached = self._order
        if cached is None or cached[0] != epoch:
            order = list(self.plan.units)
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            cached = self._order = (epoch, order)
        return cached[1]

    def epoch_of(self, step: int, batch_size: int) -> float:
        return step / self.steps_per_epoch(batch_size)

    def read(self, units: list[Unit]) -> list[PromptGroup]:
        """The prompt groups of `units`, in the order given, from the run's working set."""
        return self.rows.groups(units)

    def close(self) -> None:
        self.rows.close()


def total_steps(steps_per_epoch: int, *, max_steps: int, epochs: int) -> int:
    """Optimizer steps of a run: max_steps when set, else epochs x steps_per_epoch."""
    return max_steps if max_steps > 0 else epochs * steps_per_epoch


__all__ = ["StoreStream", "StreamPlan", "total_steps"]
