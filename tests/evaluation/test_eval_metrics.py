"""Evaluation metrics: pass@j and maj@k against hand-made tables and brute force, ungradable
samples, the seeded bootstrap interval's coverage, and bad inputs."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from dypo_data.errors import ConfigError, InputError
from dypo_data.evaluation import (
    avg_per_problem,
    bootstrap_interval,
    count_samples,
    count_ungradable,
    estimate,
    maj_per_problem,
    majority_vote,
    mean_length,
    mean_over_problems,
    pass_at,
    pass_at_per_problem,
    truncation_rate,
)

T, F, U = True, False, None  # correct, wrong, ungradable

# -- pass@j -------------------------------------------------------------------------------------

# (n, c, j, 1 - C(n-c, j) / C(n, j) worked out by hand)
PASS_TABLE = [
    (4, 0, 1, 0), (4, 0, 4, 0), (8, 0, 8, 0),  # c = 0
    (4, 4, 1, 1), (4, 4, 4, 1), (1, 1, 1, 1),  # c = n
    (4, 1, 4, 1), (8, 1, 8, 1), (4, 3, 4, 1),  # j = n, c > 0
    (4, 1, 1, Fraction(1, 4)), (16, 1, 1, Fraction(1, 16)), (5, 3, 1, Fraction(3, 5)),  # j = 1: c / n
    (4, 1, 2, Fraction(1, 2)),  # 1 - 3/6
    (4, 1, 3, Fraction(3, 4)),  # 1 - 1/4
    (4, 2, 2, Fraction(5, 6)),  # 1 - 1/6
    (4, 2, 3, 1),  # n - c = 2 < 3
    (5, 2, 2, Fraction(7, 10)),  # 1 - 3/10
    (5, 2, 3, Fraction(9, 10)),  # 1 - 1/10
    (10, 3, 5, Fraction(11, 12)),  # 1 - 21/252
]


@pytest.mark.parametrize("n,c,j,expected", PASS_TABLE)
def test_pass_at_against_a_hand_made_table(n, c, j, expected):
    assert pass_at(n, c, j) == pytest.approx(float(expected), abs=1e-12)


def test_pass_at_is_exact_at_the_edges():
    for n in range(1, 40):
        for j in range(1, n + 1):
            assert pass_at(n, 0, j) == 0.0  # c = 0
            assert pass_at(n, n, j) == 1.0  # c = n
        for c in range(1, n + 1):
            assert pass_at(n, c, n) == 1.0  # j = n


def test_pass_at_one_is_the_mean():
    for n in range(1, 30):
        for c in range(n + 1):
            assert pass_at(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def brute_force_pass(n: int, c: int, j: int) -> Fraction:
    """Share of the j-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), j))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_equals_brute_force_over_all_subsets(n):
    for c in range(n + 1):
        for j in range(1, n + 1):
            assert pass_at(n, c, j) == pytest.approx(float(brute_force_pass(n, c, j)), abs=1e-12), (n, c, j)


@pytest.mark.parametrize("n,c,j", [(1000, 1, 500), (1000, 3, 10), (512, 17, 64), (256, 200, 32), (2048, 5, 1024)])
def test_pass_at_is_stable_for_many_samples(n, c, j):
    exact = 1 - Fraction(math.comb(n - c, j), math.comb(n, j))
    assert pass_at(n, c, j) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_accepts_numpy_integers():
    assert pass_at(np.int64(4), np.int64(2), np.int32(2)) == pytest.approx(5 / 6)


@pytest.mark.parametrize("n,c,j,error,fragment", [
    (4, 1, 0, ConfigError, "j=0"),
    (4, 1, -1, ConfigError, "j=-1"),
    (4, 1, 5, ConfigError, "pass@5 needs at least 5 samples"),
    (0, 0, 1, ConfigError, "got n=0"),
    (4, 1, 1.0, ConfigError, "j=1.0"),
    (4, 5, 1, InputError, "c=5"),
    (4, -1, 1, InputError, "c=-1"),
    (-1, 0, 1, InputError, "n=-1"),
])
def test_pass_at_refuses_bad_input(n, c, j, error, fragment):
    with pytest.raises(error, match=fragment):
        pass_at(n, c, j)


# -- avg@k, pass@j per problem, ungradable samples ----------------------------------------------

PROBLEMS = [
    [T, T, F, F],  # n 4, c 2
    [F, F, F, F],  # n 4, c 0
    [T, U, F, U],  # n 2, c 1, two ungradable
    [U, U, U, U],  # nothing graded
]


def test_ungradable_samples_are_left_out_of_every_denominator():
    assert count_samples(PROBLEMS[2]) == (2, 1, 2)
    assert count_ungradable(PROBLEMS) == 6
    np.testing.assert_allclose(avg_per_problem(PROBLEMS), [0.5, 0.0, 0.5, np.nan])
    # pass@2 on (n, c) = (4, 2): 5/6; (2, 1): 1; nothing graded: NaN
    np.testing.assert_allclose(pass_at_per_problem(PROBLEMS, 2), [5 / 6, 0.0, 1.0, np.nan])
    # pass@3 needs 3 graded samples: the third problem has 2 left, so it is not estimable (NaN)
    np.testing.assert_allclose(pass_at_per_problem(PROBLEMS, 3), [1.0, 0.0, np.nan, np.nan])
    assert mean_over_problems(avg_per_problem(PROBLEMS)) == (pytest.approx(1 / 3), 3)
    assert mean_over_problems(pass_at_per_problem(PROBLEMS, 3)) == (pytest.approx(0.5), 2)


def test_pass_at_one_per_problem_equals_avg():
    rng = np.random.default_rng(0)
    problems = [list(rng.choice([T, F, U], size=8, p=[0.3, 0.6, 0.1])) for _ in range(50)]
    problems = [[None if v is None else bool(v) for v in p] for p in problems]
    np.testing.assert_allclose(pass_at_per_problem(problems, 1), avg_per_problem(problems), atol=1e-12)


def test_no_answer_is_wrong_not_ungradable():
    # a no_answer verdict is correct=False (graded); only correct=None is ungradable
    assert count_samples([F, F, T]) == (3, 1, 0)


@pytest.mark.parametrize("call,error,fragment", [
    (lambda: pass_at_per_problem(PROBLEMS, 5), ConfigError, "problem 0 has k=4"),
    (lambda: pass_at_per_problem(PROBLEMS, 0), ConfigError, "j=0"),
    (lambda: pass_at_per_problem([[T, F], [T]], 2), ConfigError, "problem 1 has k=1"),
    (lambda: avg_per_problem([[T, 1.0]]), InputError, "correct=1.0"),
    (lambda: count_samples(["yes"]), InputError, "sample 0"),
])
def test_per_problem_metrics_refuse_bad_input(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# -- maj@k --------------------------------------------------------------------------------------

def same_value(a: str, b: str) -> bool:
    """A stand-in for math-verify: compares simple fractions and decimals by value."""
    def value(s: str) -> Fraction:
        if s.startswith("\\frac{"):
            num, den = s[len("\\frac{"):-1].split("}{")
            return Fraction(int(num), int(den))
        return Fraction(s)
    return value(a) == value(b)


# (answers, correct, maj@k score, winning answer, votes, classes, tied) worked out by hand
MAJ_TABLE = [
    (["3", "3", "5"], [T, T, F], 1.0, "3", 2, 2, 1),
    (["5", "3", "5"], [F, T, F], 0.0, "5", 2, 2, 1),
    (["4", "4", "4", "4"], [T, T, T, T], 1.0, "4", 4, 1, 1),  # all agree, right
    (["7", "7", "7"], [F, F, F], 0.0, "7", 3, 1, 1),  # all agree, wrong
    (["3", "5"], [T, F], 0.5, "3", 1, 2, 2),  # a tie: fractional credit
    (["5", "3"], [F, T], 0.5, "5", 1, 2, 2),  # ... whatever the order
    (["1", "2", "3"], [F, T, F], 1 / 3, "1", 1, 3, 3),
    (["1", "1", "2", "2"], [F, F, T, T], 0.5, "1", 2, 2, 2),
    (["1", "1", "2", "2", "3"], [F, F, F, F, T], 0.0, "1", 2, 3, 2),  # the lone right answer is outvoted
    ([None, None, "4"], [F, F, T], 1.0, "4", 1, 1, 1),  # samples without an answer abstain
    ([None, None], [F, F], 0.0, None, 0, 0, 0),  # graded, but no answer to submit: wrong
    (["7", "7", "4"], [U, U, T], 1.0, "4", 1, 1, 1),  # ungradable samples do not vote
    (["7", "7"], [U, U], None, None, 0, 0, 0),  # nothing graded: no score (NaN per problem)
    ([], [], None, None, 0, 0, 0),
]


@pytest.mark.parametrize("answers,correct,score,answer,votes,classes,tied", MAJ_TABLE)
def test_majority_vote_against_a_hand_made_table(answers, correct, score, answer, votes, classes, tied):
    vote = majority_vote(answers, correct)
    assert vote == (pytest.approx(score) if score is not None else None, answer, votes, classes, tied)


def test_answers_the_verifier_calls_equal_count_as_one():
    answers = ["\\frac{1}{2}", "0.5", "3", "1/2", "3"]
    correct = [T, T, F, T, F]
    # as strings: four classes; "3" has two votes and wins
    assert majority_vote(answers, correct) == (0.0, "3", 2, 4, 1)
    # by value: 1/2 has three votes
    assert majority_vote(answers, correct, same=same_value) == (1.0, "\\frac{1}{2}", 3, 2, 1)
    # the same classes, given as labels
    assert majority_vote(answers, correct, labels=[0, 0, 1, 0, 1]) == (1.0, "\\frac{1}{2}", 3, 2, 1)


def test_same_is_asked_representative_first():
    calls = []

    def same(rep, candidate):
        calls.append((rep, candidate))
        return False

    majority_vote(["a", "b", "c"], [T, F, F], same=same)
    assert calls == [("a", "b"), ("a", "c"), ("b", "c")]


def test_a_tie_scores_the_same_in_every_order():
    answers, correct = ["1", "2", "2", "3", "1", "4"], [T, F, F, F, T, F]
    scores = {majority_vote([answers[i] for i in order], [correct[i] for i in order]).score
              for order in itertools.permutations(range(6))}
    assert scores == {0.5}


def test_maj_per_problem():
    answers = [["3", "3", "5"], ["1", "2"], ["7", "7"]]
    correct = [[T, T, F], [F, T], [U, U]]
    np.testing.assert_allclose(maj_per_problem(answers, correct), [1.0, 0.5, np.nan])
    labels = [[0, 0, 1], [0, 0], [0, 0]]  # the second problem's two answers are one class here
    np.testing.assert_allclose(maj_per_problem(answers, correct, labels=labels), [1.0, 0.0, np.nan])


@pytest.mark.parametrize("call,error,fragment", [
    (lambda: majority_vote(["1", "2"], [T]), InputError, "2 answers, 1 verdicts"),
    (lambda: majority_vote(["1", "2"], [T, F], labels=[0]), InputError, "1 labels"),
    (lambda: majority_vote(["1"], [T], same=same_value, labels=[0]), ConfigError, "not both"),
    (lambda: majority_vote(["1"], [0.0]), InputError, "correct=0.0"),
    (lambda: maj_per_problem([["1"]], [[T], [F]]), InputError, "1 problems"),
])
def test_majority_vote_refuses_bad_input(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# -- the bootstrap interval ------------------------------------------------------------------------

def test_the_interval_covers_a_known_mean_about_95_percent_of_the_time():
    # 400 benchmarks of 100 problems each, per-problem scores drawn from a known distribution
    # (Beta(2, 5): mean 2/7, skewed like accuracies); count how often the interval holds 2/7.
    data = np.random.default_rng(1234).beta(2.0, 5.0, size=(400, 100))
    covered = 0
    for trial, values in enumerate(data):
        low, high = bootstrap_interval(values, seed=trial, n_resamples=1000)
        assert low <= values.mean() <= high
        covered += low <= 2 / 7 <= high
    assert 0.91 <= covered / len(data) <= 0.98, covered  # the percentile bootstrap runs a bit narrow


def test_the_interval_is_reproducible_and_seeded():
    values = np.random.default_rng(5).random(60)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)
    narrow = bootstrap_interval(values, seed=3, confidence=0.5)
    wide = bootstrap_interval(values, seed=3, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_the_interval_leaves_out_problems_without_a_value():
    values = np.random.default_rng(6).random(30)
    with_nan = np.concatenate([values, [np.nan] * 5])
    assert bootstrap_interval(with_nan, seed=0) == bootstrap_interval(values, seed=0)
    assert bootstrap_interval([0.25, 0.25, 0.25], seed=0) == (0.25, 0.25)
    assert bootstrap_interval([0.7], seed=0) == (0.7, 0.7)
    assert all(math.isnan(x) for x in bootstrap_interval([np.nan, np.nan], seed=0))
    assert all(math.isnan(x) for x in bootstrap_interval([], seed=0))


def test_estimate_combines_the_mean_and_its_interval():
    values = [1.0, 0.0, 0.5, np.nan]
    est = estimate(values, seed=0)
    assert (est.value, est.n_problems) == (0.5, 3)
    assert (est.low, est.high) == bootstrap_interval(values, seed=0)
    assert est.low <= est.value <= est.high


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"n_resamples": 0}, ConfigError, "n_resamples=0"),
    ({"n_resamples": 10.5}, ConfigError, "n_resamples=10.5"),
    ({"confidence": 1.0}, ConfigError, "confidence=1.0"),
    ({"confidence": 0}, ConfigError, "confidence=0"),
    ({"values": [[0.1, 0.2]]}, InputError, r"shape \(1, 2\)"),
])
def test_the_interval_refuses_bad_input(kwargs, error, fragment):
    kwargs = {"values": [0.1, 0.2], "seed": 0, **kwargs}
    with pytest.raises(error, match=fragment):
        bootstrap_interval(**kwargs)


# -- generation statistics, imports --------------------------------------------------------------

def test_truncation_rate_and_mean_length():
    assert truncation_rate(["stop", "length", None, "length"]) == pytest.approx(2 / 3)
    assert math.isnan(truncation_rate([None, None]))
    assert mean_length([10, None, 20]) == 15.0
    assert math.isnan(mean_length([]))


def test_importing_evaluation_stays_light():
    code = ("import sys, dypo_data.evaluation\n"
            "heavy = [m for m in ('vllm', 'torch', 'math_verify', 'sympy') if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
