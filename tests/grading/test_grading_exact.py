"""Exact comparison of rational answers (exact.py): math-verify's false positives, the size guard."""

from __future__ import annotations

import time

import math_verify
import pytest
from grading_cases import benchmark_golds
from sympy import Integer, Mul, Pow, Rational, factorial

from dypo_data.contracts import VerdictStatus
from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool, grade_one
from dypo_data.grading.exact import MAX_BITS, exact_equal, exact_value
from dypo_data.grading.extract import gold_latex

CFG = VerifierConfig()
OK = VerdictStatus.OK


def parsed(latex: str) -> tuple:
    return tuple(math_verify.parse(gold_latex(latex), parsing_timeout=None, raise_on_error=True))


def plain_math_verify(gold: str, answer: str) -> bool:
    return math_verify.verify(list(parsed(gold)), list(parsed(answer)), timeout_seconds=None)


# (gold, answer, what plain math-verify says): exact values that differ, tiny or huge
DIFFERENT = [
    (r"\frac{1}{2004!}", r"\frac{1}{2006!}", True),  # math-verify issue #14
    (r"\frac{1}{2004!}", r"\frac{1}{2005!}", True),
    (r"\frac{1}{10^{30}}", r"\frac{1}{10^{30}+1}", True),
    (r"\frac{10^{30}}{10^{30}+1}", r"\frac{10^{30}+1}{10^{30}+2}", True),
    (r"\frac{1}{3^{200}}", r"\frac{1}{3^{200}+1}", True),
    ("3000!", "3001!", False),
    ("3000!", "3000!+1", False),
    ("2^{1000}", "2^{1000}+1", False),
    (r"\frac{2004!}{2003!}", "2005", False),
]
# exact values that are equal, written differently
EQUAL = [
    (r"\frac{2}{4}", r"\frac{1}{2}"),
    ("10!", "3628800"),
    ("2^{10}", "1024"),
    (r"\frac{2004!}{2003!}", "2004"),
    ("3000!", r"\frac{3001!}{3001}"),
    (r"\frac{1}{2004!}", r"\frac{2005}{2005!}"),
    ("2^{-3}", r"\frac{1}{8}"),
    ("(-2)^{3}", "-8"),
    ("2^{1000}", "2^{500} \\cdot 2^{500}"),
    (r"\frac{1}{10^{30}}", "10^{-30}"),
]


@pytest.mark.parametrize("gold,answer,math_verify_says", DIFFERENT)
def test_different_exact_values_are_wrong(gold, answer, math_verify_says):
    assert plain_math_verify(gold, answer) is math_verify_says  # True: a false positive we fix
    grade = grade_one(gold, f"So the value is \\boxed{{{answer}}}.", CFG)
    assert (grade.status, grade.correct) == (OK, False)
    assert grade_one(answer, f"\\boxed{{{gold}}}", CFG).correct is False  # either way round


@pytest.mark.parametrize("gold,answer", EQUAL)
def test_equal_exact_values_stay_correct(gold, answer):
    assert plain_math_verify(gold, answer)
    assert exact_equal(parsed(gold)[0], parsed(answer)[0]) is True  # decided exactly, not by math-verify
    grade = grade_one(gold, f"So the value is \\boxed{{{answer}}}.", CFG)
    assert (grade.status, grade.correct) == (OK, True)


@pytest.mark.parametrize("gold,answer", [
    (r"\frac{1}{3}", "0.3333333"),  # a float: math-verify's float_rounding decides
    ("10\\%", "10"),  # a percentage: math-verify's leniency is kept
    (r"\sqrt{2}", "2^{1/2}"),  # a root is not rational
    (r"\frac{\pi}{2}", r"\frac{2\pi}{4}"),
    ("x^2+1", "1+x^2"),
    ("2, 3", "3, 2"),
])
def test_answers_that_are_not_exact_rationals_are_left_to_math_verify(gold, answer):
    assert exact_equal(parsed(gold)[0], parsed(answer)[0]) is None
    assert grade_one(gold, f"\\boxed{{{answer}}}", CFG).correct is True


@pytest.mark.parametrize("latex", [
    "0.5000001", "10\\%", r"\sqrt{2}", r"\pi", "x", r"\frac{1}{0}", r"\infty", "(1, 2)", "x = 3", "1e3", "(-3)!",
])
def test_not_exact(latex):
    assert exact_value(parsed(latex)[0]) is None
    assert exact_value(latex) is None  # math-verify's string alternative


def test_exact_values():
    assert exact_value(parsed(r"\frac{2004!}{2003!}")[0]) == 2004
    assert exact_value(parsed(r"\frac{1}{2^{3}} + \frac{3}{4}")[0]) == Rational(7, 8)
    assert exact_value(parsed("0.5")[0]) == Rational(1, 2)  # math-verify itself reads 0.5 as 1/2


def unevaluated(base, exponent):
    return Pow(base, exponent, evaluate=False)


TOWER = unevaluated(Integer(10), unevaluated(Integer(10), Integer(10)))  # 10^(10^10)


@pytest.mark.parametrize("expr", [
    TOWER,
    Mul(Integer(1), unevaluated(TOWER, Integer(-1)), evaluate=False),  # 1 / 10^(10^10)
    factorial(TOWER, evaluate=False),
    factorial(Integer(100000), evaluate=False),
    unevaluated(Rational(3, 2), Integer(10**6)),
    unevaluated(Integer(2), Integer(MAX_BITS + 1)),
    Mul(factorial(Integer(9000), evaluate=False), factorial(Integer(9000), evaluate=False), evaluate=False),
], ids=["10^10^10", "1/10^10^10", "(10^10^10)!", "100000!", "(3/2)^10^6", "2^(MAX_BITS+1)", "9000!*9000!"])
def test_the_size_guard_refuses_at_once(expr):
    started = time.perf_counter()
    assert exact_value(expr) is None
    assert time.perf_counter() - started < 0.5


def test_powers_of_zero_and_one_need_no_size():
    huge = unevaluated(Integer(10), Integer(100))
    assert exact_value(unevaluated(Integer(1), huge)) == 1
    assert exact_value(unevaluated(Integer(-1), huge)) == 1
    assert exact_value(unevaluated(Integer(-1), huge + 1)) == -1
    assert exact_value(unevaluated(Integer(0), huge)) == 0
    assert exact_value(unevaluated(Integer(0), Integer(-1))) is None  # 1/0: math-verify's call


def test_pathological_sizes_get_a_verdict_within_the_pool_timeout():
    items = [
        GradeItem("fp", r"\frac{1}{2004!}", r"\boxed{\frac{1}{2006!}}"),
        GradeItem("guarded", "10^{10^{10}}", r"\boxed{10^{10^{10}}+1}"),  # too large: math-verify's answer
        GradeItem("factorial", "3", r"\boxed{(10^{10^{10}})!}"),  # math-verify never finishes this one
        GradeItem("after", "3628800", r"\boxed{10!}"),
    ]
    with VerifierPool(VerifierConfig(workers=2, timeout_s=2.0)) as pool:
        started = time.monotonic()  # after the workers have started, which a loaded machine slows
        grades = {g.key: g for g in pool.grade(items)}
        elapsed = time.monotonic() - started
        limit = pool.hard_timeout_s
    assert (grades["fp"].status, grades["fp"].correct) == (OK, False)
    assert (grades["guarded"].status, grades["guarded"].correct) == (OK, False)
    assert grades["factorial"].status is VerdictStatus.TIMEOUT and grades["factorial"].correct is None
    assert grades["factorial"].seconds < limit + 1.0
    assert (grades["after"].status, grades["after"].correct) == (OK, True)
    assert elapsed < 20


def test_benchmark_golds_verify_against_their_own_box_as_with_plain_math_verify():
    # Every gold of ../shared/benchmarks vs `\boxed{gold}`: wherever the exact comparison decides
    # a pair, it says what math-verify says, so no verdict of test_every_benchmark_gold_matches_
    # its_own_box (test_grading_pool.py) can change; and it does decide most of them.
    decided, disagree = 0, []
    for name, line, gold in benchmark_golds():
        golds = math_verify.parse(gold_latex(gold), parsing_timeout=None)
        boxes = math_verify.parse("\\boxed{" + gold + "}", parsing_timeout=None)
        for g in golds:
            for a in boxes:
                exact = exact_equal(g, a)
                if exact is None:
                    continue
                decided += 1
                if exact != math_verify.verify(g, a, timeout_seconds=None):
                    disagree.append((name, line, gold))
    assert not disagree
    assert decided >= 500  # 563 with the benchmarks of today: mostly integer and fraction answers
