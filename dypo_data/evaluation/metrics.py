"""Evaluation metrics over graded samples: pure functions of stdlib and numpy.

Inputs are per problem: `correct[p]` is the list of one problem's sample verdicts, each True,
False or None. Shapes below use P problems and k samples of one problem.

Ungradable samples (the rule every metric here follows)
    A sample whose `correct` is None (verdict status parse_error, timeout or error) is *not* a
    wrong answer and *not* a right one: it is left out of every denominator and counted apart
    (`SampleCounts.ungradable`, `count_ungradable`). A no_answer sample is graded (correct False).
    So a problem with k samples of which u are ungradable is scored on its n = k - u graded ones:
    avg@k on n, pass@j with the unbiased estimator on (n, c), maj@k as a vote among the graded.
    A problem for which a metric is undefined (no graded sample; for pass@j, fewer than j graded
    samples) gets NaN for that metric: `mean_over_problems` and `bootstrap_interval` leave NaN
    problems out and `Estimate.n_problems` says how many problems a number rests on.

Metrics (per problem, then the mean over problems)
    avg@k   c / n, the mean correctness of the graded samples; pass@1 equals it.
    pass@j  1 - C(n-c, j) / C(n, j): the chance that j samples drawn without replacement from
            the n graded ones hold a correct one (unbiased for pass@j of the model).
    maj@k   whether the answer most samples agree on is correct; ties give fractional credit
            (see `majority_vote`).
"""

from __future__ import annotations

import math
from typing import Callable, Hashable, NamedTuple, Sequence

import numpy as np

from dypo_data.errors import ConfigError, InputError

Verdicts = Sequence["bool | None"]  # one problem's samples: True / False / None (ungradable)


class SampleCounts(NamedTuple):
    """One problem's samples: n graded (correct or not), c correct, ungradable (None)."""

    n: int
    c: int
    ungradable: int


class Estimate(NamedTuple):
    """A metric over problems: its mean, a bootstrap interval, and the problems it rests on."""

    value: float  # mean over the problems where the metric is defined; NaN when none is
    low: float  # bootstrap interval (see `bootstrap_interval`); NaN when no problem counts
    high: float
    n_problems: int  # problems that entered the mean (the rest have NaN for this metric)


class MajorityVote(NamedTuple):
    """The outcome of `majority_vote` for one problem."""

    score: float | None  # 1.0 / 0.0, a fraction on ties; None when no sample was graded
    answer: str | None  # an answer of the winning class (of the first tied class); None: no votes
    votes: int  # samples in the winning class
    classes: int  # distinct answers among the voting samples
    tied: int  # classes sharing the top vote count (1: no tie; 0: no votes)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# -- counting -------------------------------------------------------------------------------------

def count_samples(correct: Verdicts) -> SampleCounts:
    """Count one problem's verdicts. `correct`: length k, each True, False or None (ungradable)."""
    n = c = ungradable = 0
    for i, value in enumerate(correct):
        if value is None:
            ungradable += 1
        elif isinstance(value, (bool, np.bool_)):
            n += 1
            c += bool(value)
        else:
            raise InputError(f"sample {i} has correct={value!r}; each verdict must be True, False or None",
                             "pass Grade.correct, which is None for an ungradable sample")
    return SampleCounts(n, c, ungradable)


def count_ungradable(correct: Sequence[Verdicts]) -> int:
    """Ungradable samples (correct None) over all problems. `correct`: P lists of verdicts."""
    return sum(count_samples(problem).ungradable for problem in correct)


# -- pass@j and avg@k ------------------------------------------------------------------------------

def pass_at(n: int, c: int, j: int) -> float:
    """Unbiased pass@j of one problem: 1 - C(n-c, j) / C(n, j), for n samples of which c are correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - j/i), which never forms the large binomials; exact
    (0.0 or 1.0) where the answer is: c = 0 gives 0, n - c < j (so also c = n, or j = n with
    c > 0) gives 1.

    Raises:
        ConfigError: j < 1 or j > n (pass@j needs at least j samples).
        InputError: n < 0, or c outside 0..n.
    """
    if not (_is_int(n) and _is_int(c)) or n < 0 or not 0 <= c <= n:
        raise InputError(f"c={c!r} correct of n={n!r} samples is impossible; need integers 0 <= c <= n")
    if not _is_int(j) or j < 1:
        raise ConfigError(f"pass@j with j={j!r} is undefined; use an integer j >= 1")
    if j > n:
        raise ConfigError(f"pass@{j} needs at least {j} samples, got n={n}; use j <= {n} or sample more (-k)")
    if c == 0:
        return 0.0
    if n - c < j:  # every draw of j samples holds a correct one
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)  # (c,)
    return float(1.0 - np.prod(1.0 - j / i))


def pass_at_per_problem(correct: Sequence[Verdicts], j: int) -> np.ndarray:
    """pass@j of each problem on its graded samples. Shapes: correct P lists of k_p verdicts -> (P,).

    A problem with fewer than j graded samples (some were ungradable) gets NaN: pass@j cannot be
    estimated without bias from them.

    Raises:
        ConfigError: j < 1, or j > k_p for some problem (more than its samples, graded or not).
    """
    if not _is_int(j) or j < 1:
        raise ConfigError(f"pass@j with j={j!r} is undefined; use an integer j >= 1")
    out = np.full(len(correct), np.nan)
    for p, problem in enumerate(correct):
        if j > len(problem):
            raise ConfigError(f"pass@{j} needs at least {j} samples per problem, problem {p} has k={len(problem)}",
                              f"use j <= {len(problem)} or sample more (-k)")
        counts = count_samples(problem)
        if counts.n >= j:
            out[p] = pass_at(counts.n, counts.c, j)
    return out


def avg_per_problem(correct: Sequence[Verdicts]) -> np.ndarray:
    """avg@k of each problem, c / n over its graded samples (NaN if none). (P lists) -> (P,)."""
    out = np.full(len(correct), np.nan)
    for p, problem in enumerate(correct):
        counts = count_samples(problem)
        if counts.n:
            out[p] = counts.c / counts.n
    return out


# -- maj@k ---------------------------------------------------------------------------------------

def majority_vote(answers: Sequence[str | None], correct: Verdicts, *,
                  same: Callable[[str, str], bool] | None = None,
                  labels: Sequence[Hashable | None] | None = None) -> MajorityVote:
    """maj@k of one problem: the answer most samples agree on, and whether it is correct.

    Args:
        answers: (k,) the extracted answer of each sample; None when it states none.
        correct: (k,) each sample's verdict, True / False / None (ungradable).
        same: answers equivalent? called as `same(representative, candidate)`, the representative
            being the first answer of a class (so it can be math-verify's gold-first `verify`).
        labels: (k,) precomputed class of each sample instead of `same` (None: no answer).
            With neither, answers are equivalent when equal as strings.

    Who votes: samples that are graded (correct not None) and state an answer. Ungradable samples
    are left out, as everywhere in this module; a graded sample without an answer abstains, and if
    no graded sample has an answer the problem scores 0 (no majority answer to submit).

    Classes: each voting sample joins the first earlier class whose representative it equals
    (`same`, or an identical string), else founds a new one. A class is correct when its
    representative is (its members normally agree, as they have equal answers).

    Ties: each class with the top vote count gets an equal share, so the score is the fraction of
    tied classes that are correct. That is the expected score of breaking the tie uniformly at
    random, deterministic, and it does not depend on the order of the samples, which is the order a
    backend returned them in and carries no meaning (a first-come rule would score the pair
    (right, wrong) 1 and (wrong, right) 0).
    """
    if len(answers) != len(correct) or (labels is not None and len(labels) != len(answers)):
        raise InputError(f"maj@k got {len(answers)} answers, {len(correct)} verdicts"
                         + ("" if labels is None else f" and {len(labels)} labels")
                         + "; give one of each per sample")
    if same is not None and labels is not None:
        raise ConfigError("majority_vote takes `same` or `labels`, not both", "pass only one")
    counts = count_samples(correct)
    if counts.n == 0:
        return MajorityVote(None, None, 0, 0, 0)
    keys = labels if labels is not None else answers
    # classes: [representative index, votes], in order of their first sample
    classes: list[list[int]] = []
    for i, (key, verdict) in enumerate(zip(keys, correct)):
        if verdict is None or key is None or answers[i] is None:
            continue
        for cls in classes:
            rep = keys[cls[0]]
            if rep == key or (same is not None and same(answers[cls[0]], answers[i])):
                cls[1] += 1
                break
        else:
            classes.append([i, 1])
    if not classes:
        return MajorityVote(0.0, None, 0, 0, 0)
    top = max(votes for _, votes in classes)
    tied = [rep for rep, votes in classes if votes == top]
    score = sum(bool(correct[rep]) for rep in tied) / len(tied)
    return MajorityVote(score, answers[tied[0]], top, len(classes), len(tied))


def maj_per_problem(answers: Sequence[Sequence[str | None]], correct: Sequence[Verdicts], *,
                    same: Callable[[str, str], bool] | None = None,
                    labels: Sequence[Sequence[Hashable | None]] | None = None) -> np.ndarray:
    """maj@k of each problem (see `majority_vote`); NaN where no sample was graded. -> (P,)."""
    if len(answers) != len(correct) or (labels is not None and len(labels) != len(correct)):
        raise InputError(f"maj@k got answers for {len(answers)} problems and verdicts for {len(correct)}"
                         + ("" if labels is None else f" and labels for {len(labels)}"))
    out = np.full(len(correct), np.nan)
    for p in range(len(correct)):
        vote = majority_vote(answers[p], correct[p], same=same, labels=None if labels is None else labels[p])
        if vote.score is not None:
            out[p] = vote.score
    return out


# -- aggregation ---------------------------------------------------------------------------------

def _per_problem_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InputError(f"per-problem values must be one-dimensional (P,), got shape {array.shape}")
    return array


def mean_over_problems(values: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """(mean over the problems that are not NaN, how many those are). (P,) -> (float, int).

    The mean is NaN when every problem is NaN (or P = 0).
    """
    array = _per_problem_array(values)
    kept = array[~np.isnan(array)]
    return (float(kept.mean()) if kept.size else math.nan), int(kept.size)


def bootstrap_interval(values: Sequence[float] | np.ndarray, *, seed: int, n_resamples: int = 2000,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean over problems. (P,) -> (low, high).

    Resamples the non-NaN problems with replacement `n_resamples` times (numpy Generator seeded
    with `seed`, so the interval is reproducible) and returns the (1-confidence)/2 and
    (1+confidence)/2 quantiles of the resampled means. Problems are the unit of resampling, so
    the samples of one problem stay together. (NaN, NaN) when no problem counts; a single
    problem gives a zero-width interval.

    Raises:
        ConfigError: n_resamples < 1 or confidence not strictly between 0 and 1.
    """
    if not _is_int(n_resamples) or n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples!r} must be an integer >= 1", "use 2000")
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r} must be strictly between 0 and 1", "use 0.95")
    array = _per_problem_array(values)
    kept = array[~np.isnan(array)]
    if kept.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)  # (R,)
    chunk = max(1, (1 << 22) // kept.size)  # resamples per batch: bounded memory for large P
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        picks = rng.integers(0, kept.size, size=(size, kept.size))  # (chunk, P) problem indices
        means[start:start + size] = kept[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def estimate(values: Sequence[float] | np.ndarray, *, seed: int, n_resamples: int = 2000,
             confidence: float = 0.95) -> Estimate:
    """Mean over problems with its bootstrap interval (see the two functions above). (P,) -> Estimate."""
    value, n_problems = mean_over_problems(values)
    low, high = bootstrap_interval(values, seed=seed, n_resamples=n_resamples, confidence=confidence)
    return Estimate(value, low, high, n_problems)


# -- generation statistics -------------------------------------------------------------------------

def truncation_rate(finish_reasons: Sequence[str | None]) -> float:
    """Fraction of samples cut at the token limit (finish_reason "length"). (N,) -> float.

    Samples whose finish reason is unknown (None, e.g. imported traces) are left out; NaN when
    none is known.
    """
    known = [reason for reason in finish_reasons if reason is not None]
    return sum(reason == "length" for reason in known) / len(known) if known else math.nan


def mean_length(num_tokens: Sequence[int | None]) -> float:
    """Mean completion length in tokens over samples whose length is known. (N,) -> float (NaN: none)."""
    known = [n for n in num_tokens if n is not None]
    return float(np.mean(known)) if known else math.nan
