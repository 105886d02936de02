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

Shared: processes that plan the same rows of the same shards (the ranks of a data-parallel run on one
machine) use one working set (`SharedWorkingDir`, named by what it holds): the first builds it while
the others wait on its lock, then all map the same files; the last to close removes it. So N ranks
cost one pass over the store and one copy on disk, not N.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import shutil
import tempfile
import time
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
from dypo_data.store.views import has_shards, shard_variable
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
    np.save(_order_path(path), order)
    return RowFile(_mapped(path), order, _spans(located.column(key)))


def keep(table: pa.Table, key: str, path: Path) -> RowFile:
    """Write `table` (sorted by `key`, all its columns small) to `path` as it is."""
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    order = np.arange(table.num_rows)
    np.save(_order_path(path), order)
    return RowFile(_mapped(path), order, _spans(table.column(key)))


def load(path: Path, key: str) -> RowFile:
    """The RowFile that `materialise` or `keep` wrote to `path` (its rows mapped, not read)."""
    table = _mapped(path)
    order = np.load(_order_path(path))
    return RowFile(table, order, _spans(table.column(key).take(pa.array(order))))


def _order_path(path: Path) -> Path:
    return path.with_suffix(".order.npy")


def _mapped(path: Path) -> pa.Table:
    return ipc.open_file(pa.memory_map(str(path))).read_all()


class SharedWorkingDir:
    """A working-set directory named by `key` (what it holds), shared by every process of this user
    that opens the same key; see the module docstring.

    Every user holds the directory's lock shared while it uses the files. Opening takes it shared; a
    directory not `ready` yet is built by whoever first gets the lock exclusively (the others wait,
    retrying, and then find it ready). `close()` removes the directory when no one else holds it, and
    lets go. Two streams of one process on the same key share it too (their locks are compatible). A
    directory left by a killed process is rebuilt (not ready) or reused (ready: its files are complete
    for its key).
    """

    READY = ".complete"

    def __init__(self, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        self.path = Path(tempfile.gettempdir()) / f"dypo-working-set-{os.getuid()}-{digest}"
        self._fd, self.ready = self._enter()
        self._finalizer = weakref.finalize(self, _leave_shared, self.path, self._fd)

    def _enter(self) -> tuple[int, bool]:
        """(the lock file held shared if the directory is ready, else exclusively to build it, ready)."""
        lock = self.path / ".lock"
        while True:
            self.path.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a process builds or removes it
            if _is_current(fd, lock):
                if (self.path / self.READY).exists():
                    return fd, True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # only one may build; the others retry
                    if _is_current(fd, lock) and not (self.path / self.READY).exists():
                        return fd, False
                except BlockingIOError:
                    pass
            os.close(fd)
            time.sleep(random.uniform(0.02, 0.2))

    def mark_ready(self) -> None:
        (self.path / self.READY).touch()
        self.ready = True
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        self._finalizer()


def _is_current(fd: int, lock: Path) -> bool:
    """`fd` is the directory's lock file, not one that its last user removed meanwhile."""
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _leave_shared(path: Path, fd: int) -> None:
    """Remove `path` if no other process holds its lock (an exclusive lock is then free), then let go."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another process still reads it: the last one removes it
    else:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)


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
        """Locate and copy the rows of `units` through `con` (a store connection, see dypo_data.store.connect),
        or map those another process copied for the same key (see the module docstring)."""
        self.unit_kind = unit_kind
        self.rows_read = 0  # rows taken from the working set so far (what a step costs)
        self.dir = SharedWorkingDir(_share_key(con, units, unit_kind, teachers))
        self.built = not self.dir.ready  # this process copied the rows (else it maps another's copy)
        try:
            if self.built:
                self._build(con, units, teachers)
                self.dir.mark_ready()
            else:
                self._load()
        except OSError as exc:
            self._discard()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(f"no room for the run's working set in {self.dir.path.parent} ({exc.strerror})",
                                 "point TMPDIR at a disk with room for the run's rollouts uncompressed (about 3 GB per "
                                 "100k prompts x 8 rollouts x 400 tokens)") from exc
            raise
        except BaseException:
            self._discard()
            raise

    def _build(self, con, units: list[str], teachers: list[str]) -> None:
        path = self.dir.path
        self.rollouts = None
        if self.unit_kind == "group":
            located = queries.rollout_locations(con, units)
            self.rollouts = materialise(located, "group_id", ROLLOUT_LARGE, path / "rollouts.arrow")
            prompt_ids = sorted(set(located.column("prompt_id").to_pylist()))
        else:
            prompt_ids = sorted(set(units))
        self.prompts = keep(queries.prompts_of(con, prompt_ids), "prompt_id", path / "prompts.arrow")
        located = (queries.teacher_locations(con, prompt_ids, teachers) if teachers and has_shards(con, "traces")
                   else pa.table({"prompt_id": pa.array([], pa.string()), "trace_id": pa.array([], pa.string()),
                                  "model": pa.array([], pa.string()), "filename": pa.array([], pa.string()),
                                  "file_row_number": pa.array([], pa.int64())}))
        self.teachers = materialise(located, "prompt_id", TEACHER_LARGE, path / "teachers.arrow")

    def _load(self) -> None:
        path = self.dir.path
        self.rollouts = load(path / "rollouts.arrow", "group_id") if self.unit_kind == "group" else None
        self.prompts = load(path / "prompts.arrow", "prompt_id")
        self.teachers = load(path / "teachers.arrow", "prompt_id")

    def _discard(self) -> None:
        """After a failure: let go of the directory; one this process was building (not ready, held exclusively)
        is removed with what it wrote, and a process waiting for it then builds it afresh."""
        self.dir.close()

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


def _share_key(con, units: list[str], unit_kind: str, teachers: list[str]) -> str:
    """What a working set holds: these units and teachers from exactly the shards `con`'s views read (each
    file's path, size and modification time), so a store that changed since gives another key."""
    digest = hashlib.sha256()
    for part in (unit_kind, *teachers, "|", *units, "|"):
        digest.update(part.encode() + b"\0")
    for table in ("prompts", "traces", "verdicts"):
        for name in con.execute(f"SELECT getvariable('{shard_variable(table)}')").fetchall()[0][0] or []:
            stat = os.stat(name)
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode() + b"\0")
    return digest.hexdigest()


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
