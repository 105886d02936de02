"""The metrics of one evaluation (one model, policy version and benchmark), from its graded samples.

    values = summarize(samples, k=8, pass_at=(1, 2, 4, 8), seed=0)
    # [MetricValue("avg@8", 0.41, 0.33, 0.49, 30), MetricValue("pass@1", ...), ..., MetricValue("maj@8", ...),
    #  MetricValue("ungradable", 2.0, None, None, 30), ...]

Pure functions over `metrics.py`, which sets out how ungradable samples are treated. Names carry k
(`avg@8`, `maj@8`) and j (`pass@4`) so that a number is never shown without them. avg@k, pass@j and
maj@k come with a seeded bootstrap interval over problems; the counts and rates below do not:

    samples          samples scored (k per problem)
    ungradable       samples whose verdict is timeout, parse_error or error (left out of every rate)
    truncation_rate  share of samples cut at the token limit (finish reason "length")
    mean_length      mean completion length in tokens
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Hashable, NamedTuple

from dypo_data.errors import ConfigError
from dypo_data.evaluation.metrics import (
    Estimate,
    avg_per_problem,
    count_ungradable,
    estimate,
    maj_per_problem,
    mean_length,
    pass_at_per_problem,
    truncation_rate,
)

COUNT_METRICS = ("samples", "ungradable", "truncation_rate", "mean_length")


class MetricValue(NamedTuple):
    """One number of an evaluation; low/high None where the metric has no interval."""

    metric: str
    value: float
    low: float | None
    high: float | None
    n_problems: int


@dataclass(frozen=True)
class ProblemSamples:
    """One problem's k samples, in sample order. Shapes: each field has length k."""

    correct: Sequence[bool | None]  # the verdict; None when ungradable
    answers: Sequence[str | None]  # the extracted answer; None when the sample states none
    labels: Sequence[Hashable | None]  # answer class (verifier-equal answers share one; see grading.classes)
    finish_reasons: Sequence[str | None]
    num_tokens: Sequence[int | None]


def voting_answers(samples: Sequence[Sequence[Mapping]]) -> list[list[str | None]]:
    """Per problem, the extracted answer of each graded sample (None for an ungradable one): what maj@k
    votes with, and what answer classes are formed over. Each sample has `correct` and `extracted_answer`."""
    return [[s["extracted_answer"] if s["correct"] is not None else None for s in per] for per in samples]


def problem_samples(samples: Sequence[Mapping], labels: Sequence[Hashable | None]) -> ProblemSamples:
    """One problem's ProblemSamples from its graded samples (each with `correct`, `extracted_answer`,
    `finish_reason`, `num_tokens`; `correct` None when ungradable) and their answer classes."""
    return ProblemSamples(correct=[s["correct"] for s in samples], answers=[s["extracted_answer"] for s in samples],
                          labels=labels, finish_reasons=[s["finish_reason"] for s in samples],
                          num_tokens=[s["num_tokens"] for s in samples])


def default_pass_at(k: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to k, and k itself: pass@j for every power of two that k samples allow."""
    check_k(k)
    js = [1 << e for e in range(k.bit_length()) if 1 << e <= k]
    return tuple(sorted(set(js) | {k}))


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r} samples per problem is not possible", "use -k 1 or more (the paper samples 8)")


def check_pass_at(pass_at: Sequence[int], k: int) -> tuple[int, ...]:
    """The pass@j list, sorted and checked against k (j > k cannot be estimated from k samples)."""
    check_k(k)
    if not pass_at:
        raise ConfigError("the pass@j list is empty", f"give at least one j, e.g. --pass-at 1,{k}")
    for j in pass_at:
        if isinstance(j, bool) or not isinstance(j, int) or j < 1:
            raise ConfigError(f"pass@{j} is undefined", "use integers j >= 1")
        if j > k:
            raise ConfigError(f"pass@{j} needs at least {j} samples per problem, but k={k}",
                              f"use j <= {k} in --pass-at, or sample more with -k {j}")
    return tuple(sorted(set(pass_at)))


def summarize(problems: Sequence[ProblemSamples], *, k: int, pass_at: Sequence[int], seed: int,
              n_resamples: int = 2000, confidence: float = 0.95) -> list[MetricValue]:
    """avg@k, pass@j for each j, maj@k (with intervals), then the counts and rates, for P problems."""
    js = check_pass_at(pass_at, k)
    correct = [p.correct for p in problems]
    boot = {"seed": seed, "n_resamples": n_resamples, "confidence": confidence}
    rated = [(f"avg@{k}", avg_per_problem(correct))]
    rated += [(f"pass@{j}", pass_at_per_problem(correct, j)) for j in js]
    rated.append((f"maj@{k}", maj_per_problem([p.answers for p in problems], correct,
                                              labels=[p.labels for p in problems])))
    out = [_with_interval(name, estimate(values, **boot)) for name, values in rated]
    n = len(problems)
    finish = [r for p in problems for r in p.finish_reasons]
    tokens = [t for p in problems for t in p.num_tokens]
    out += [
        MetricValue("samples", float(len(finish)), None, None, n),
        MetricValue("ungradable", float(count_ungradable(correct)), None, None, n),
        MetricValue("truncation_rate", truncation_rate(finish), None, None, n),
        MetricValue("mean_length", mean_length(tokens), None, None, n),
    ]
    return out


def _with_interval(name: str, est: Estimate) -> MetricValue:
    low = None if math.isnan(est.low) else est.low
    high = None if math.isnan(est.high) else est.high
    return MetricValue(name, est.value, low, high, est.n_problems)
