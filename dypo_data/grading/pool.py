"""VerifierPool: math-verify in worker processes, with a hard per-item time limit and crash recovery.

Each worker is a spawned process that grades one item at a time in its main thread, where
math-verify's signal-based code works, and stops a slow item itself after `timeout_s`. The parent
keeps up to `queue_depth` items queued per worker, sent and answered in groups (`worker.py`), and
enforces a hard limit of `hard_timeout_s` per item from outside: a worker whose current item has
run that long (stuck in C code, stopped, swapping) is killed and replaced, and that item is
recorded as `timeout`. A worker that dies (killed for memory, crashed) is replaced too: the item it
was grading is recorded as `error`; the items it had finished but not yet sent, and those queued
behind, are graded again by the others. So one pathological answer costs at most one item and one
respawn.

An item's clock starts when its worker starts it: each worker writes the item it starts and the
time into a small shared array, so the parent knows which item a stuck worker holds and since when.

Routing: each gold has a home worker (a hash of the gold), whose caches then serve all rollouts of
a prompt. Items are read ahead of the workers, up to `LOOKAHEAD_PER_WORKER` per worker, into one
queue per home; a worker whose queue is empty once the read-ahead is full (or the input ended)
takes the newest item of the longest other queue, so no worker idles while work is queued.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Iterable, Iterator

from dypo_data.contracts import VerdictStatus
from dypo_data.errors import DypoError
from dypo_data.grading.config import VerifierConfig
from dypo_data.grading.extract import answer_candidates, snippet
from dypo_data.grading.verdict import Grade, GradeItem, make_grade
from dypo_data.grading.worker import IDLE, READY, run_worker

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a worker must import math-verify and warm up within this
MAX_START_FAILURES = 3  # consecutive workers that die before they are ready
LOOKAHEAD_PER_WORKER = 64  # items read ahead of the workers, to route each gold to its home worker


class VerifierError(DypoError):
    """The grading workers cannot be started."""

    exit_code = 3


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    progress: Any  # shared [seq being graded or IDLE, its start]; written by the worker (worker.py)
    spawned_at: float
    ready: bool = False
    broken: bool = False  # a send failed: the process is dying, do not send more
    retiring: bool = False  # stopped an item by its own timer: replace it, its state may be damaged
    inflight: deque = field(default_factory=deque)  # (seq, item) sent and not yet answered, in order
    heard: float = 0.0  # when the parent last sent to or heard from the worker

    def running(self) -> tuple[int, float] | None:
        """(index in inflight, start) of the item the worker is grading, if it is one of ours."""
        seq, started = self.progress[0], self.progress[1]
        if seq == IDLE or self.progress[0] != seq:  # idle, or the worker moved on while we read
            return None
        for index, (sent, _) in enumerate(self.inflight):
            if sent == seq:
                return index, started
        return None

    def started(self) -> float:
        """When the worker started its current item (at the latest, when it last had news)."""
        running = self.running()
        return running[1] if running else self.heard


class VerifierPool:
    """Grade items in `config.workers` processes; use as a context manager.

    `grade(items)` streams one Grade per item, in completion order, pulling items lazily.
    """

    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        self.hard_timeout_s = config.timeout_s + max(1.0, 0.25 * config.timeout_s)
        # respawns, worker_died, killed_timeout (hard limit), recycled_after_timeout (own timer)
        self.counters: Counter[str] = Counter()
        self._ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads or vLLM
        self._seq = itertools.count()
        self._workers: list[_Worker] = []
        self._pending: deque[GradeItem] = deque()  # items taken back from a replaced worker
        self._homes: list[deque[GradeItem]] = [deque() for _ in range(config.workers)]  # read ahead, by home
        self._source: Iterator[GradeItem] | None = None  # None once exhausted
        self._grading = False
        self._start_failures = 0
        self._closed = False
        try:
            self._workers = [self._spawn() for _ in range(config.workers)]
            while not all(w.ready for w in self._workers):
                self._poll(self._wait_timeout())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def grade(self, items: Iterable[GradeItem]) -> Iterator[Grade]:
        """Yield one Grade per item (any order). Stopping early discards the items in flight."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        if self._grading:
            raise RuntimeError("VerifierPool.grade is already running; finish or close that iterator first")
        self._grading = True
        self._source = iter(items)
        try:
            while True:
                self._dispatch()
                idle = not (self._pending or any(self._homes) or any(w.inflight for w in self._workers))
                if self._source is None and idle:
                    return
                yield from self._poll(self._wait_timeout())
        finally:
            self._grading = False
            self._source = None
            self._pending.clear()
            for home in self._homes:
                home.clear()
            for w in list(self._workers):  # stopped early: results still in flight would go stale
                if w.inflight:
                    w.inflight.clear()
                    if not self._closed:
                        self._replace(w)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            self._stop(w)
        self._workers = []

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("d", [IDLE, 0.0])
        process = self._ctx.Process(target=run_worker, args=(child_end, self.config, progress), name="dypo-grader",
                                    daemon=True)
        process.start()
        child_end.close()
        now = time.monotonic()
        return _Worker(process, parent_end, progress, now, heard=now)

    def _stop(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(5.0)
        w.conn.close()

    def _replace(self, w: _Worker, status: VerdictStatus | None = None) -> list[Grade]:
        """Stop `w` and start a new worker; its head item gets `status`, the rest go back to the queue."""
        self._stop(w)
        if not w.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                raise VerifierError(f"grading workers keep exiting before they are ready "
                                    f"(last exit code {w.process.exitcode})",
                                    "check that math-verify imports: python -c 'import math_verify'")
        grades = []
        if w.inflight and status is not None:
            # the item it was grading; unknown (it died between items): the oldest, as the likeliest cause
            index, started = w.running() or (0, w.heard)
            _, item = w.inflight[index]
            del w.inflight[index]
            seconds = time.monotonic() - started
            grades.append(make_grade(item.key, status, None, _candidate(item, self.config), seconds))
        self._pending.extendleft(item for _, item in reversed(w.inflight))
        self.counters["respawns"] += 1
        self._workers[self._workers.index(w)] = self._spawn()
        return grades

    # -- the event loop -----------------------------------------------------------------------

    def _next_item(self, slot: int) -> GradeItem | None:
        """The next item for the worker at `slot`: one taken back from a replaced worker, else the
        oldest read-ahead item of its home (reading further ahead while that is empty), else the
        newest item of the longest other home (see the module docstring)."""
        if self._pending:
            return self._pending.popleft()
        home = self._homes[slot]
        limit = LOOKAHEAD_PER_WORKER * len(self._workers)
        while not home and self._source is not None and sum(map(len, self._homes)) < limit:
            try:
                item = next(self._source)
            except StopIteration:
                self._source = None
                break
            self._homes[zlib.crc32(item.gold.encode()) % len(self._homes)].append(item)
        if home:
            return home.popleft()
        donor = max(self._homes, key=len)
        return donor.pop() if donor else None

    def _dispatch(self) -> None:
        """Top up every worker that has answered half its queue, one message per worker."""
        for slot, w in enumerate(self._workers):
            if not w.ready or w.broken or w.retiring or len(w.inflight) > self.config.queue_depth // 2:
                continue
            if not w.process.is_alive():  # died idle: nothing of ours to blame, `_poll` replaces it
                w.broken = True
                continue
            batch = []
            while len(w.inflight) + len(batch) < self.config.queue_depth:
                item = self._next_item(slot)
                if item is None:
                    break
                batch.append((next(self._seq), item))
            if not batch:
                return
            try:
                w.conn.send([(seq, item.gold, item.completion) for seq, item in batch])
            except OSError:  # the worker is dying; `_poll` sees its sentinel and replaces it
                w.broken = True
                self._pending.extendleft(item for _, item in reversed(batch))
                continue
            if not w.inflight:
                w.heard = time.monotonic()
            w.inflight.extend(batch)

    def _wait_timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [w.started() + self.hard_timeout_s for w in self._workers if w.ready and w.inflight]
        deadlines += [w.spawned_at + START_TIMEOUT_S for w in self._workers if not w.ready]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _poll(self, timeout: float | None) -> list[Grade]:
        """Wait up to `timeout` for results, deaths or deadlines; return the grades that came in."""
        by_conn = {w.conn: w for w in self._workers}
        by_sentinel = {w.process.sentinel: w for w in self._workers}
        woken = wait(list(by_conn) + list(by_sentinel), timeout)
        grades: list[Grade] = []
        exited = {w for w in self._workers if w.broken}
        for obj in woken:
            w = by_conn.get(obj) or by_sentinel[obj]
            if not self._drain(w, grades) or obj in by_sentinel:
                exited.add(w)
        now = time.monotonic()
        for w in list(self._workers):
            if w.retiring:
                # The worker stopped an item with its own timer, at an arbitrary point (maybe inside
                # a lazy import or a cache update), and exits: a fresh process is a sure clean state.
                self.counters["recycled_after_timeout"] += 1
                grades += self._replace(w)
            elif w in exited:
                self.counters["worker_died"] += 1
                logger.warning("grading worker %s exited (code %s); replacing it", w.process.pid, w.process.exitcode)
                grades += self._replace(w, VerdictStatus.ERROR)
            elif w.ready and w.inflight and now - w.started() > self.hard_timeout_s:
                self.counters["killed_timeout"] += 1
                logger.warning("grading worker %s passed the hard limit of %.1fs on one item; replacing it",
                               w.process.pid, self.hard_timeout_s)
                grades += self._replace(w, VerdictStatus.TIMEOUT)
            elif not w.ready and now - w.spawned_at > START_TIMEOUT_S:
                grades += self._replace(w)
        return grades

    def _drain(self, w: _Worker, grades: list[Grade]) -> bool:
        """Read the messages `w` has sent, up to a timeout; False once its pipe is closed."""
        try:
            while not w.retiring and w.conn.poll():
                self._handle(w, w.conn.recv(), grades)
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, w: _Worker, message: tuple | list, grades: list[Grade]) -> None:
        w.heard = time.monotonic()
        if isinstance(message, tuple) and message[0] == READY:
            w.ready = True
            self._start_failures = 0
            return
        for seq, status, correct, extracted, seconds in message:
            if not w.inflight or w.inflight[0][0] != seq:  # cannot happen: workers answer in order
                logger.error("grading worker %s answered item %s out of order; ignored", w.process.pid, seq)
                continue
            _, item = w.inflight.popleft()
            grades.append(make_grade(item.key, VerdictStatus(status), correct, extracted, seconds))
            if status == VerdictStatus.TIMEOUT.value:
                w.retiring = True


def _candidate(item: GradeItem, config: VerifierConfig) -> str | None:
    """The answer text a worker was given to parse, recorded when the parent has to give up on it."""
    try:
        return snippet(answer_candidates(item.completion, config.answer_position)[0].label)
    except Exception:  # noqa: BLE001
        return None
