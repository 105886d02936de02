"""A run's working set: the rows its steps read, copied once at plan time, then read by position.

Querying the store's views for one step scans and deduplicates every trace of the store, so a step's
read grew with the whole store (seconds at 20k prompts, minutes at real scale). Instead the run's
rows are located once, when the run is planned (small columns through DuckDB: ids, rewards, and
where each row lies), their large columns (token ids, logprobs, teacher completions) read by
location, one pass over the store in all, and written to uncompressed Arrow IPC files in a
temporary directory. A step then takes exactly its rows from the memory-mapped files: its cost
depends on the step's rows, not on the store. After planning the store is not read again.

Disk: about the size of the run's rows uncompressed (for 100k prompts x 8 rollouts x 400 tokens,
about 3 GB) in the system's temporary directory (`TMPDIR`), removed when the stream is closed or the
process ends.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dypo_data.errors import InputError
from dypo_data.store import queries
from dypo_data.store.shards import shard_row_groups
from dypo_data.store.views import has_shards
from dypo_train.stream.types import PromptGroup, Rollout, TeacherTrace

LOCATION = ("filename", "file_row_number")
ROLLOUT_LARGE = ["prompt_token_ids", "completion_token_ids", "completion_logprobs"]
TEACHER_LARGE = ["completion"]


@dataclass(frozen=True)
class RowFile:
    """One materialised table: rows in an IPC file, and for each key the file rows in reading order."""

    table: pa.Table  # memory-mapped
    order: np.ndarray  # file row of each located row, in the located (reading) order
    spans: dict[str, tuple[int, int]]  # key -> [start, end) into `order`

    def __post_init__(self) -> None:
        batches = self.table.to_batches()  # zero-copy views of the file's record batches
        object.__setattr__(self, "batches", batches)
        object.__setattr__(self, "starts", np.cumsum([0] + [b.num_rows for b in batches]))

    def rows_of(self, keys: list[str]) -> np.ndarray:
        """File rows of `keys`, key after key, each in reading order (a key without rows gives none)."""
        spans = [self.spans[k] for k in keys if k in self.spans]
        if not spans:
            return np.zeros(0, np.int64)
        return np.concatenate([self.order[a:b] for a, b in spans])

    def take(self, rows: np.ndarray) -> pa.Table:
        """The file rows `rows`, in that order: zero-copy slices of the record batches holding them, one per
        run of adjacent rows (a table's own slicing walks its chunks from the first: slow with thousands)."""
        if len(rows) == 0:
            return self.table.slice(0, 0)
        pieces = []
        for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
            start, end = int(run[0]), int(run[-1]) + 1
            while start < end:
                k = int(np.searchsorted(self.starts, start, side="right")) - 1
                stop = min(end, int(self.starts[k + 1]))
                pieces.append(self.batches[k].slice(start - int(self.starts[k]), stop - start))
                start = stop
        return pa.Table.from_batches(pieces, schema=self.table.schema).combine_chunks()


def _spans(keys: pa.ChunkedArray | pa.Array) -> dict[str, tuple[int, int]]:
    """key -> [start, end) of its run in `keys`, which is sorted (equal keys are adjacent)."""
    values = keys.to_pylist()
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            spans[values[start]] = (start, i)
            start = i
    return spans


def materialise(located: pa.Table, key: str, large: list[str], path: Path) -> RowFile:
    """Write `located` (sorted by `key` and reading order, with LOCATION columns) plus the `large`
    columns read from the shards at those locations to `path`; the rows are written file by file."""
    small = located.drop_columns(list(LOCATION))
    n = located.num_rows
    by_file = pc.sort_indices(located, [(LOCATION[0], "ascending"), (LOCATION[1], "ascending")]).to_numpy()
    files = located.column(LOCATION[0]).take(by_file).to_pylist()
    rows = located.column(LOCATION[1]).take(by_file).to_numpy()
    order = np.empty(n, np.int64)
    schema = None
    written = 0
    with pa.OSFile(str(path), "wb") as sink:
        writer = None
        start = 0
        for i in range(1, n + 1):
            if i < n and files[i] == files[start]:
                continue
            positions = by_file[start:i]
            done = 0
            for heavy in shard_row_groups(Path(files[start]), rows[start:i].tolist(), large):  # one row group at a time
                taken = positions[done:done + heavy.num_rows]
                part = small.take(pa.array(taken))
                for column in large:
                    part = part.append_column(column, heavy.column(column))
                if writer is None:
                    schema = part.schema
                    writer = ipc.new_file(sink, schema)
                writer.write_table(part.cast(schema))
                order[taken] = np.arange(written, written + len(taken))
                written += len(taken)
                done += heavy.num_rows
            start = i
        if writer is None:
            writer = ipc.new_file(sink, small.schema)
        writer.close()
    return RowFile(_mapped(path), order, _spans(located.column(key)))


def keep(table: pa.Table, key: str, path: Path) -> RowFile:
    """Write `table` (sorted by `key`, all its columns small) to `path` as it is."""
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return RowFile(_mapped(path), np.arange(table.num_rows), _spans(table.column(key)))


def _mapped(path: Path) -> pa.Table:
    return ipc.open_file(pa.memory_map(str(path))).read_all()


class WorkingDir:
    """A temporary directory removed on `close()` or, failing that, when the process ends."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dypo-working-set-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def close(self) -> None:
        self._finalizer()


def list_values(column: pa.ChunkedArray) -> list[list | None]:
    """A list column as Python lists (None for nulls), through NumPy: several times faster than to_pylist."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return []
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False).tolist()
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(array))]


class RunRows:
    """The rows of a planned run (see the module docstring): rollouts, prompts and teacher pool by unit."""

    def __init__(self, con, *, units: list[str], unit_kind: str, teachers: list[str]) -> None:
        """Locate and copy the rows of `units` through `con` (a store connection, see dypo_data.store.connect)."""
        self.unit_kind = unit_kind
        self.dir = WorkingDir()
        self.rows_read = 0  # rows taken from the working set so far (what a step costs)
        try:
            self.rollouts = None
            if unit_kind == "group":
                located = queries.rollout_locations(con, units)
                self.rollouts = materialise(located, "group_id", ROLLOUT_LARGE, self.dir.path / "rollouts.arrow")
                prompt_ids = sorted(set(located.column("prompt_id").to_pylist()))
            else:
                prompt_ids = sorted(set(units))
            self.prompts = keep(queries.prompts_of(con, prompt_ids), "prompt_id", self.dir.path / "prompts.arrow")
            located = (queries.teacher_locations(con, prompt_ids, teachers) if teachers and has_shards(con, "traces")
                       else pa.table({"prompt_id": pa.array([], pa.string()), "trace_id": pa.array([], pa.string()),
                                      "model": pa.array([], pa.string()), "filename": pa.array([], pa.string()),
                                      "file_row_number": pa.array([], pa.int64())}))
            self.teachers = materialise(located, "prompt_id", TEACHER_LARGE, self.dir.path / "teachers.arrow")
        except OSError as exc:
            self.dir.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(f"no room for the run's working set in {self.dir.path.parent} ({exc.strerror})",
                                 "point TMPDIR at a disk with room for the run's rollouts uncompressed (about 3 GB per "
                                 "100k prompts x 8 rollouts x 400 tokens)") from exc
            raise
        except BaseException:
            self.dir.close()
            raise

    def _take(self, rows: RowFile, keys: list[str]) -> pa.Table:
        """The rows of `keys` in reading order."""
        taken = rows.rows_of(keys)
        self.rows_read += len(taken)
        return rows.take(taken)

    def groups(self, units: list[str]) -> list[PromptGroup]:
        """The prompt groups of `units`, in the order given; a unit unknown to the run raises InputError."""
        by_group: dict[str, list[Rollout]] = {}
        prompt_of = {u: u for u in units}
        if self.rollouts is not None:
            rollouts = self._take(self.rollouts, units)
            for group, rollout in zip(rollouts.column("group_id").to_pylist(), _rollouts(rollouts)):
                by_group.setdefault(group, []).append(rollout)
            prompt_of = dict(zip(rollouts.column("group_id").to_pylist(), rollouts.column("prompt_id").to_pylist()))
        prompt_ids = sorted({prompt_of[u] for u in units if u in prompt_of})
        prompts = {r["prompt_id"]: r for r in self._take(self.prompts, prompt_ids).to_pylist()}
        teachers: dict[str, list[TeacherTrace]] = {}
        for r in self._take(self.teachers, prompt_ids).to_pylist():
            teachers.setdefault(r["prompt_id"], []).append(TeacherTrace(r["trace_id"], r["model"], r["completion"]))
        out = []
        for unit in units:
            pid = prompt_of.get(unit)
            if pid is None or pid not in prompts:
                raise InputError(f"unit {unit} of the run has no prompt row", "re-import the prompts of this store")
            p = prompts[pid]
            out.append(PromptGroup(
                prompt_id=pid, messages=[dict(m) for m in p["messages"]], answer=p["answer"],
                group_id=unit if self.unit_kind == "group" else None, rollouts=by_group.get(unit, []),
                teachers=teachers.get(pid, []),
            ))
        return out

    def close(self) -> None:
        self.dir.close()


def _rollouts(table: pa.Table) -> list[Rollout]:
    """Rollouts of the rows of `table`; a reward is None where the verifier could not grade (correct is null)."""
    prompt_ids, completion_ids = list_values(table.column("prompt_token_ids")), list_values(table.column("completion_token_ids"))
    logprobs = list_values(table.column("completion_logprobs"))
    rewards, correct = table.column("reward").to_pylist(), table.column("correct").to_pylist()
    out = []
    for i, (trace, sample) in enumerate(zip(table.column("trace_id").to_pylist(), table.column("sample_idx").to_pylist())):
        reward = None if correct[i] is None else (float(rewards[i]) if rewards[i] is not None else float(correct[i]))
        out.append(Rollout(trace_id=trace, sample_idx=int(sample), prompt_token_ids=prompt_ids[i] or [],
                           completion_token_ids=completion_ids[i] or [], logprobs=logprobs[i], reward=reward))
    return out
