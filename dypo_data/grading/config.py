"""Verifier settings and the version string recorded with every verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, get_args

from dypo_data.errors import ConfigError

AnswerPosition = Literal["last", "first"]
# Bump when the extraction rules in `extract.py`, the status rules in `verdict.py` or the exact
# comparison in `exact.py` change the verdict of some completion: it is part of `settings()`, so
# old verdicts are not reused. 2: exact rationals are compared exactly (1/2004! != 1/2006!).
GRADING_RULES = "dypo-grading-2"
_VERSIONED = ("math-verify", "latex2sympy2_extended", "sympy")


def verifier_version() -> str:
    """Installed versions of the packages a verdict depends on, e.g. "math-verify==0.9.0;...".

    Read from package metadata, so math-verify is not imported.
    """
    parts = []
    for name in _VERSIONED:
        try:
            parts.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name}==missing")
    return ";".join(parts)


@dataclass(frozen=True)
class VerifierConfig:
    workers: int = field(
        default=2, metadata={"help": "Worker processes that run math-verify (one per core is fastest)."}
    )
    timeout_s: float = field(
        default=5.0,
        metadata={"help": "Wall-clock limit per item in seconds; a slower item gets status 'timeout'."},
    )
    float_rounding: int = field(
        default=6, metadata={"help": "Decimal places floats are rounded to before comparing (math-verify)."}
    )
    numeric_precision: int = field(
        default=15, metadata={"help": "Significant digits of numeric comparisons (math-verify)."}
    )
    strict: bool = field(
        default=True,
        metadata={"help": "math-verify strict mode: variable names matter and sets never equal tuples."},
    )
    answer_position: AnswerPosition = field(
        default="last",
        metadata={"help": "Which stated answer is graded when a completion gives several: 'last' or 'first'."},
    )
    queue_depth: int = field(
        default=8,
        metadata={"help": "Items sent ahead to each worker so it never waits for the parent; items are "
                          "sent and answered in groups of half this, so the parent wakes once per group. "
                          "The timeout still applies to each item from the moment its worker starts it."},
    )
    worker_memory_mb: int = field(
        default=4096,
        metadata={"help": "Address-space cap per worker in MiB (0: none); an item that exceeds it gets "
                          "status 'error' instead of exhausting the machine's memory."},
    )

    def __post_init__(self) -> None:
        _check_int(self, "workers", 1, "use 1 or the number of free cores")
        _check_int(self, "float_rounding", 0, "use 6, math-verify's default")
        _check_int(self, "numeric_precision", 1, "use 15, math-verify's default")
        _check_int(self, "queue_depth", 1, "use 8")
        _check_int(self, "worker_memory_mb", 0, "use 4096, or 0 for no cap")
        if not isinstance(self.timeout_s, (int, float)) or not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ConfigError(f"timeout_s={self.timeout_s!r} must be a positive number of seconds", "use 5")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict={self.strict!r} must be true or false")
        if self.answer_position not in get_args(AnswerPosition):
            choices = ", ".join(get_args(AnswerPosition))
            raise ConfigError(f"answer_position={self.answer_position!r} is not one of: {choices}",
                              "use 'last' to grade the answer a completion ends with")
        if 0 < self.worker_memory_mb < 256:
            raise ConfigError(f"worker_memory_mb={self.worker_memory_mb} is too small for math-verify to load",
                              "use at least 256, or 0 for no cap")

    def settings(self) -> dict[str, Any]:
        """Everything that can change a verdict, as JSON-able values; its hash keys the verdicts.

        Resource settings (workers, queue_depth, worker_memory_mb) are left out: they change speed,
        not verdicts. The timeout is in, since it decides which items are graded at all.
        """
        return {
            "rules": GRADING_RULES,
            "versions": verifier_version(),
            "timeout_s": float(self.timeout_s),
            "float_rounding": self.float_rounding,
            "numeric_precision": self.numeric_precision,
            "strict": self.strict,
            "answer_position": self.answer_position,
        }


def _check_int(cfg: VerifierConfig, name: str, minimum: int, fix: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}", fix)
