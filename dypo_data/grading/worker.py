"""The grading worker process: math-verify in its own main thread, one item at a time.

Protocol over one duplex pipe. Parent to worker: a list of `(seq, gold, completion)` items per
message, `None` to stop. Worker to parent: `("ready", pid)` once warmed up, then lists of
`(seq, status, correct, extracted_answer, seconds)` results, in the order the items came. Results
are sent in groups of `config.queue_depth // 2`, earlier when the worker runs out of items or, checked
after each item, once the oldest held result has waited `HOLD_S`; the parent wakes once per group.

Before it starts an item the worker writes the item's seq and start time into `progress`, a
shared array of two doubles the parent reads: the parent therefore knows which item a stuck or
dead worker was grading, and since when, even while that worker's finished results are still held.

After an item that timed out, the worker sends what it holds and exits: its own timer interrupted
Python at an arbitrary point, which can leave a module half-imported or a cache inconsistent, so
the parent replaces it with a fresh process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections import deque
from multiprocessing.connection import Connection

from dypo_data.contracts import VerdictStatus
from dypo_data.grading.config import VerifierConfig

READY = "ready"
HOLD_S = 0.05  # a held result is sent after the first item that ends this long after it
IDLE = -1.0  # progress[0] until the worker starts its first item
WARMUP_TIMEOUT_S = 60.0  # per warm-up item: a loaded machine must not interrupt the first imports
# Graded once before a worker reports ready: sympy and latex2sympy import dozens of modules lazily
# on first use (simplify, sets, matrices, complex numbers), which takes about a second. Done here,
# no item pays for it, and no timeout interrupts an import halfway (which would break the worker).
WARMUP = (
    ("1", "\\boxed{1}"),
    ("x^2+1", "\\boxed{1+x^2}"),
    ("2\\sin x", "\\boxed{\\sin(x)+\\sin(x)}"),
    ("x^2-1", "\\boxed{(x-1)(x+2)}"),
    ("\\frac{1}{2}", "\\boxed{0.5}"),
    ("\\sqrt{2}", "\\boxed{2^{1/2}}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}"),
    ("[1, 2)", "\\boxed{[1,2)}"),
    ("x > 1", "\\boxed{(1, \\infty)}"),
    ("(-\\infty, 0) \\cup (1, \\infty)", "\\boxed{(1, \\infty) \\cup (-\\infty, 0)}"),
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}"),
    ("1, 2", "\\boxed{2, 1}"),
    ("x=2", "\\boxed{2}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}"),
    ("3+4i", "\\boxed{4i+3}"),
    ("\\text{Evelyn}", "\\boxed{Evelyn}"),
    ("10\\%", "The answer is 10."),
    ("90^\\circ", "\\boxed{90}"),
)


def _cap_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    import resource

    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run_worker(conn: Connection, config: VerifierConfig, progress=None) -> None:
    """Entry point of a worker process (the target of `multiprocessing.Process`).

    `progress`: a shared array of two doubles, [seq of the item started last or IDLE, its start
    (time.monotonic)]. It keeps the last item after that item is done, so the parent never reads
    "idle" in the moment between two items.
    """
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cap_memory(config.worker_memory_mb)
    from dypo_data.grading.verdict import grade_one  # imports math-verify lazily

    progress = progress if progress is not None else [IDLE, 0.0]
    warmup_config = dataclasses.replace(config, timeout_s=max(config.timeout_s, WARMUP_TIMEOUT_S))
    for gold, completion in WARMUP:
        grade_one(gold, completion, warmup_config)
    group = max(1, config.queue_depth // 2)
    todo: deque = deque()
    done: list[tuple] = []
    held_since = 0.0
    try:
        conn.send((READY, os.getpid()))
        while True:
            if not todo or conn.poll():  # out of items (wait for more), or more have come
                if not todo and done:
                    conn.send(done)
                    done = []
                message = conn.recv()
                if message is None:
                    return
                todo.extend(message)
                continue
            seq, gold, completion = todo.popleft()
            progress[1] = time.monotonic()  # the start first: a reader that sees the new seq sees its start
            progress[0] = seq
            grade = grade_one(gold, completion, config)
            if not done:
                held_since = time.monotonic()
            done.append((seq, grade.status.value, grade.correct, grade.extracted_answer, grade.seconds))
            if grade.status is VerdictStatus.TIMEOUT:
                conn.send(done)
                return  # interrupted at an arbitrary point: the parent starts a fresh worker
            if len(done) >= group or time.monotonic() - held_since >= HOLD_S:
                conn.send(done)
                done = []
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent has gone away
    finally:
        conn.close()
