"""Grade one (gold, completion) pair with math-verify, in the main thread of the calling process.

math-verify is used with its own timeouts off (they rely on `signal.alarm`, which one per-item
timer of ours would collide with) and with `raise_on_error=True`, so that an internal error is
recorded as such instead of being read as a wrong answer. Two exact rationals (integers,
fractions, integer powers, factorials) are compared exactly instead (`exact.py`), since
math-verify's numeric check rounds them (1/2004! "equals" 1/2006!). Statuses:

- no_answer:   nothing in the completion's answer (see `extract.py`) parses as an answer.
- ok:          some parse of the gold equals some parse of the answer (correct), or both parsed
               into maths and no comparison equals (incorrect).
- parse_error: the answer or the gold could not be parsed, or it raised while being parsed, and
               nothing matched (exact string equality still counts as a match).
- error:       a comparison raised and nothing matched; also any unexpected failure.
- timeout:     the item ran past `timeout_s`.

Timeouts use SIGALRM, so `grade_one` only runs in a main thread, and a computation stuck inside C
code cannot be interrupted here: `VerifierPool` adds a hard per-item limit from outside the worker.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from dypo_data.contracts import VerdictStatus
from dypo_data.grading.config import VerifierConfig
from dypo_data.grading.extract import Candidate, answer_candidates, gold_latex, snippet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradeItem:
    key: str  # returned unchanged in the Grade (the verify job passes the trace id)
    gold: str
    completion: str


@dataclass(frozen=True)
class Grade:
    key: str
    status: VerdictStatus
    correct: bool | None  # None when the item could not be graded
    reward: float | None  # 1.0 / 0.0, None when the item could not be graded
    extracted_answer: str | None
    seconds: float


def make_grade(key: str, status: VerdictStatus, correct: bool | None, extracted: str | None,
               seconds: float) -> Grade:
    reward = None if correct is None else float(correct)
    return Grade(key, status, correct, reward, extracted, seconds)


class _ItemTimeout(BaseException):
    """Raised by our SIGALRM handler; a BaseException so that `except Exception` cannot swallow it."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _ItemTimeout()


def grade_one(gold: str, completion: str, config: VerifierConfig) -> Grade:
    """Grade `completion` against `gold` in this process; the Grade's key is "".

    Must run in the main thread (the timeout is a SIGALRM timer). For many items, or for untrusted
    text, use `VerifierPool`: it also survives computations that ignore signals, and it replaces a
    worker after a timeout, since the interrupt can land anywhere (even inside a lazy import) and
    leave the process unreliable. In-process, the caller takes that risk.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("grade_one needs the main thread (its timeout uses SIGALRM); use VerifierPool")
    started = time.perf_counter()
    tried: list[Candidate] = []  # answers handed to math-verify so far, for the verdict on timeout
    previous = signal.getsignal(signal.SIGALRM)
    if previous is None:  # a handler installed from C; the best we can restore is the default
        previous = signal.SIG_DFL
    try:
        try:
            signal.signal(signal.SIGALRM, _raise_timeout)
            signal.setitimer(signal.ITIMER_REAL, config.timeout_s)
            status, correct, extracted = _judge(gold, completion, config, tried)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    except _ItemTimeout:
        # the alarm can also land inside the `finally` above, so disarm and restore again
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        status, correct, extracted = VerdictStatus.TIMEOUT, None, snippet(tried[-1].label) if tried else None
    except Exception:  # noqa: BLE001 - any failure becomes a verdict, never a crash of the run
        logger.debug("grading failed", exc_info=True)
        status, correct, extracted = VerdictStatus.ERROR, None, snippet(tried[-1].label) if tried else None
    return make_grade("", status, correct, extracted, time.perf_counter() - started)


def _judge(gold: str, completion: str, config: VerifierConfig,
           tried: list[Candidate]) -> tuple[VerdictStatus, bool | None, str | None]:
    answer: tuple = ()
    for candidate in answer_candidates(completion, config.answer_position):
        tried.append(candidate)
        try:
            answer = _parse(candidate.text)
        except Exception:  # noqa: BLE001
            return VerdictStatus.PARSE_ERROR, None, snippet(candidate.label)
        if answer:
            break
    if not answer:
        return VerdictStatus.NO_ANSWER, False, None
    extracted = _answer_text(answer, tried[-1])
    try:
        gold_parsed = _parse_gold(gold)
    except Exception:  # noqa: BLE001
        return VerdictStatus.PARSE_ERROR, None, extracted
    matched, raised = _compare(gold, tried[-1].text, config.float_rounding, config.numeric_precision, config.strict)
    if matched:
        return VerdictStatus.OK, True, extracted
    if not (_has_maths(gold_parsed) and _has_maths(answer)):
        return VerdictStatus.PARSE_ERROR, None, extracted
    if raised:
        return VerdictStatus.ERROR, None, extracted
    return VerdictStatus.OK, False, extracted


# The rollouts of one prompt share a gold and often an answer, so parses and comparisons are cached
# per process. Only completed calls are cached: a timeout or an exception is never stored.
@functools.lru_cache(maxsize=8192)
def _compare(gold: str, answer_text: str, float_rounding: int, numeric_precision: int,
             strict: bool) -> tuple[bool, bool]:
    """(some gold parse equals some answer parse, some comparison raised).

    Pairs are compared one by one so that one raising pair does not hide a later matching one.
    A pair of exact rationals (integers, fractions, integer powers, factorials) is decided by
    `exact_equal` and never reaches math-verify, whose numeric check rounds: it calls 1/2004!
    and 1/2006! equal (see `exact.py`). Other pairs, and exact ones too large to compute, are
    math-verify's.
    """
    from dypo_data.grading.exact import exact_equal  # imports sympy: only in the grading workers

    verify = _math_verify().verify
    raised = False
    for g in _parse_gold(gold):
        for a in _parse(answer_text):
            exact = exact_equal(g, a)
            if exact is not None:
                if exact:
                    return True, False
                continue
            try:
                if verify(g, a, float_rounding=float_rounding, numeric_precision=numeric_precision, strict=strict,
                          timeout_seconds=None, raise_on_error=True):
                    return True, False
            except Exception:  # noqa: BLE001
                logger.debug("comparison failed", exc_info=True)
                raised = True
    return False, raised


def _parse(text: str) -> tuple:
    # a boxed answer or a gold is short and often repeated; a long unboxed tail rarely is
    return _parse_short(text) if len(text) <= _CACHED_TEXT_CHARS else _parse_uncached(text)


def _parse_uncached(text: str) -> tuple:
    return tuple(_math_verify().parse(text, parsing_timeout=None, raise_on_error=True))


_CACHED_TEXT_CHARS = 1000
_parse_short = functools.lru_cache(maxsize=8192)(_parse_uncached)


def _parse_gold(gold: str) -> tuple:
    return _parse(gold_latex(gold))


def _has_maths(parsed: tuple) -> bool:
    from sympy import Basic, MatrixBase

    return any(isinstance(p, (Basic, MatrixBase)) for p in parsed)


def _answer_text(parsed: tuple, candidate: Candidate) -> str:
    """The answer as written when it was boxed, else math-verify's string for what it matched.

    Never `str()` of a sympy object, which can itself run for hours.
    """
    if candidate.shown is not None:
        return snippet(candidate.shown)
    return snippet(next((p for p in parsed if isinstance(p, str)), candidate.text))


def _drop_disabled_timeout_warning(record: logging.LogRecord) -> bool:
    # math-verify warns once per process that its timeouts are off; ours are on, so drop it.
    return not record.getMessage().startswith("Timeout is disabled")


@functools.cache
def _math_verify() -> Any:
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_drop_disabled_timeout_warning)
    return math_verify
