"""Exact numbers as LaTeX, shared by the problem generator and its worked solutions.

    latex_number(Fraction(-3, 4))          # -\\frac{3}{4}
    latex_decimal(Fraction(3, 8))          # 0.375
    latex_terms([(3, "x"), (-1, "y")])     # 3x - y
    paren(Fraction(-1, 2))                 # \\left(-\\frac{1}{2}\\right)
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction


def latex_number(x: Fraction | int) -> str:
    """An integer, or a reduced fraction `\\frac{p}{q}` with the sign in front."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


def latex_decimal(x: Fraction | int) -> str:
    """Exact decimal of a terminating fraction (denominator 2^a 5^b): 3/8 -> 0.375, 5 -> 5."""
    x = Fraction(x)
    places = 0
    while (x * 10**places).denominator != 1:
        places += 1
        if places > 12:
            raise ValueError(f"{x} has no short terminating decimal")
    if places == 0:
        return str(x.numerator)
    scaled = abs(x.numerator * 10**places // x.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    return f"{'-' if x < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def latex_terms(terms: Iterable[tuple[Fraction | int, str]]) -> str:
    """A sum of coefficient*variable terms: [(3, 'x'), (-1, 'y'), (Fraction(1, 2), '')] -> 3x - y + \\frac{1}{2}."""
    out = ""
    for coef, var in terms:
        coef = Fraction(coef)
        if coef == 0:
            continue
        size = abs(coef)
        body = latex_number(size) if (size != 1 or not var) else ""
        body += var
        if not out:
            out = f"-{body}" if coef < 0 else body
        else:
            out += f" - {body}" if coef < 0 else f" + {body}"
    return out or "0"


def paren(x: Fraction | int, text: str | None = None) -> str:
    """`text` (default: latex_number(x)) in \\left( \\right) when x is negative, as an operand must be."""
    shown = latex_number(x) if text is None else text
    return f"\\left({shown}\\right)" if x < 0 else shown


def frac(numerator: str | int, denominator: str | int) -> str:
    """`\\frac{numerator}{denominator}` of two LaTeX texts, as written (not reduced)."""
    return f"\\frac{{{numerator}}}{{{denominator}}}"
