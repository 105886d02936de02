"""The grading worker process: math-verify in its own main thread, one item at a time.

Protocol over one duplex pipe. Worker to parent: `("ready", pid)` once warmed up, then one
`(seq, status, correct, extracted_answer, seconds)` per item, in the order the items came. Parent
to worker: `(seq, gold, completion)` per item, `None` to stop. After an item that timed out, the
worker exits: its own timer interrupted Python at an arbitrary point, which can leave a module
half-imported or a cache inconsistent, so the parent replaces it with a fresh process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from multiprocessing.connection import Connection

from dypo_data.contracts import VerdictStatus
from dypo_data.grading.config import VerifierConfig

READY = "ready"
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


def run_worker(conn: Connection, config: VerifierConfig) -> None:
    """Entry point of a worker process (the target of `multiprocessing.Process`)."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cap_memory(config.worker_memory_mb)
    from dypo_data.grading.verdict import grade_one  # imports math-verify lazily

    warmup_config = dataclasses.replace(config, timeout_s=max(config.timeout_s, WARMUP_TIMEOUT_S))
    for gold, completion in WARMUP:
        grade_one(gold, completion, warmup_config)
    try:
        conn.send((READY, os.getpid()))
        while True:
            message = conn.recv()
            if message is None:
                return
            seq, gold, completion = message
            grade = grade_one(gold, completion, config)
            conn.send((seq, grade.status.value, grade.correct, grade.extracted_answer, grade.seconds))
            if grade.status is VerdictStatus.TIMEOUT:
                return  # interrupted at an arbitrary point: the parent starts a fresh worker
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent has gone away
    finally:
        conn.close()
