"""Exact comparison of rational-valued answers, where math-verify would compare numerically.

math-verify decides that two expressions without a float are equal when `(a - b).evalf(15,
chop=True)` is 0. Chopping drops any value below the working precision, so two exact numbers that
are both tiny, or huge and close, compare equal: `1/2004!` "equals" `1/2006!` (math-verify issue
#14), and so do `1/10^30` and `1/(10^30 + 1)`. When both parsed sides are *exact rationals* we
decide instead with integer arithmetic, which cannot round.

Exact here means a sympy expression built only of:

- integers and rationals (`Integer`, `Rational`),
- sums and products of exact expressions (`Add`, `Mul`; a quotient is a product with a power -1),
- integer powers of exact expressions (`Pow` whose exponent evaluates to an integer),
- factorials of non-negative integers (`factorial`).

Anything else makes the pair "not exact" and the caller falls back to math-verify: a Float (its
`float_rounding` rule applies: 0.3333333 = 1/3), a percentage (`UnevaluatedExpr`, which
math-verify treats leniently: 10% = 10), a root or other non-integer power, pi and other
constants, symbols, functions, sets, tuples, relations, matrices, and division by zero.

Size guard: every number is kept below `MAX_BITS` bits (numerator and denominator together);
a power or factorial is sized from its arguments *before* it is computed, so `10^{10^{10}}` or
`100000!` is refused at once, never built. Such a pair is "too large" and also falls back to
math-verify, under the grader's usual per-item timeout. Within the bound every operation takes
milliseconds (a gcd of two 2^17-bit numbers: about 20 ms on one core).
"""

from __future__ import annotations

import math
from fractions import Fraction

from sympy import Add, Basic, Mul, Pow, Rational, factorial

# Largest exact value handled, in bits of numerator plus denominator: 2^17 bits is about 39,000
# decimal digits, so 10000! (35,660 digits) fits, 20000! does not.
MAX_BITS = 1 << 17
_LOG2_E = 1.0 / math.log(2.0)


class _NotExact(Exception):
    """The expression is not exact in the sense above, or it would exceed MAX_BITS."""


def exact_equal(gold: object, answer: object) -> bool | None:
    """Whether two parsed answers have the same exact rational value.

    Args:
        gold, answer: items of math-verify's `parse` output (sympy expressions or strings).

    Returns:
        True / False when both are exact expressions (see the module docstring) within the size
        guard; None when either is not exact or too large, so that the caller asks math-verify.
    """
    value_gold = exact_value(gold)
    if value_gold is None:
        return None
    value_answer = exact_value(answer)
    if value_answer is None:
        return None
    return value_gold == value_answer


def exact_value(expr: object) -> Fraction | None:
    """The exact value of `expr` as a Fraction, or None when it is not exact or too large."""
    if not isinstance(expr, Basic):
        return None
    try:
        return _value(expr)
    except (_NotExact, RecursionError):
        return None


def _bits(x: Fraction) -> int:
    return x.numerator.bit_length() + x.denominator.bit_length()


def _checked(x: Fraction) -> Fraction:
    if _bits(x) > MAX_BITS:
        raise _NotExact
    return x


def _value(expr: Basic) -> Fraction:
    if isinstance(expr, Rational):  # Integer, Rational and the singletons One, Half, ...
        return _checked(Fraction(int(expr.p), int(expr.q)))
    if isinstance(expr, (Add, Mul)):
        return _fold(expr)
    if isinstance(expr, Pow):
        return _power(_value(expr.base), _value(expr.exp))
    if isinstance(expr, factorial):
        return _factorial(_value(expr.args[0]))
    raise _NotExact  # Float, UnevaluatedExpr, symbols, constants, functions, sets, relations, ...


def _fold(expr: Basic) -> Fraction:
    is_sum = isinstance(expr, Add)
    total = Fraction(0 if is_sum else 1)
    for arg in expr.args:
        term = _value(arg)
        if _bits(total) + _bits(term) > MAX_BITS:  # the sum or product could exceed the bound
            raise _NotExact
        total = total + term if is_sum else total * term
    return total


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise _NotExact  # a root: not rational in general
    e = exponent.numerator
    if base == 0:
        if e < 0:
            raise _NotExact  # division by zero: leave it to math-verify
        return Fraction(1 if e == 0 else 0)
    if abs(base) == 1:  # (+-1)^e never grows, whatever the size of e
        return Fraction(1) if base == 1 or e % 2 == 0 else Fraction(-1)
    largest = max(base.numerator.bit_length(), base.denominator.bit_length())
    # |e| * (bits of the larger part) - |e| bounds the bits of the result from below
    if abs(e) > MAX_BITS or abs(e) * (largest - 1) > MAX_BITS:
        raise _NotExact
    return _checked(base**e)


def _factorial(n: Fraction) -> Fraction:
    if n.denominator != 1 or n.numerator < 0:
        raise _NotExact  # sympy's factorial of a negative or non-integer is not a rational
    k = n.numerator
    if k > MAX_BITS or math.lgamma(k + 1) * _LOG2_E > MAX_BITS:  # log2(k!) bits, before computing
        raise _NotExact
    return _checked(Fraction(math.factorial(k)))
