"""Procedural math problems with exact LaTeX answers, deterministic from a seed.

    generate_problems(64, seed=0, difficulty=2)        # every kind in turn
    generate_problems(8, kinds=["fraction"], difficulty=5)
    write_problems_jsonl("problems.jsonl", n=256)       # rows: problem, answer, solution, kind, difficulty, params

Each kind is one function `(rng, difficulty) -> (problem, answer, params, solution)`; `params` holds
what the problem was built from, so the answer can be recomputed without parsing the text. Answers
are integers, reduced fractions (`\\frac{3}{4}`, `-\\frac{1}{2}`), terminating decimals, ordered pairs
or comma-separated roots, all of which math-verify reads. `solution` is a worked step-by-step
solution built from the same numbers (`dypo_data.prompts.worked`) that ends in `\\boxed{answer}`;
prompt loaders import it as a teacher trace. Adding it drew no random numbers: a seed gives the
same problems and answers as before solutions existed.

Difficulty 1 is one or two small steps; 5 is many steps with large numbers (for arithmetic: 2 to 6
operations on numbers up to 9 ... 999). Problem i draws from its own generator seeded by (seed, i),
so a longer list starts with the shorter one; a problem already in the list is redrawn.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from dypo_data.errors import ConfigError
from dypo_data.prompts import worked
from dypo_data.prompts.latex import latex_decimal, latex_number, latex_terms
from dypo_data.prompts.worked import Node, expression_latex, expression_python, expression_value

MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 5
MAX_REDRAWS = 200

Generated = tuple[str, str, dict[str, Any], str]  # problem, answer, params, worked solution
KindFn = Callable[[random.Random, int], Generated]  # (rng, difficulty) -> problem, answer, params, solution
KINDS: dict[str, KindFn] = {}  # registration order is the order generate_problems cycles through
EXTRA_KINDS: dict[str, KindFn] = {}  # asked for by name only: the default cycle (and so every seed's problems) is unchanged


def kind(name: str, *, default: bool = True) -> Callable[[KindFn], KindFn]:
    """Register a problem kind under `name`; `default=False` keeps it out of the default cycle."""

    def register(fn: KindFn) -> KindFn:
        (KINDS if default else EXTRA_KINDS)[name] = fn
        return fn

    return register


# --- kinds ---------------------------------------------------------------------------------------------

_ARITH_MAX = (9, 20, 50, 100, 999)


def _expression(rng: random.Random, ops: int, top: int) -> Node:
    """A random expression tree with `ops` operators on numbers 1..top."""
    if ops == 0:
        return rng.randint(1, top)
    op = rng.choice("+-*")
    left_ops = rng.randint(0, ops - 1)
    left = _expression(rng, left_ops, top)
    right = _expression(rng, ops - 1 - left_ops, top)
    return (op, left, right)


@kind("arithmetic")
def arithmetic(rng: random.Random, difficulty: int) -> Generated:
    """Integer arithmetic with + - x and parentheses; operator precedence decides the answer."""
    return _arithmetic(rng, difficulty, ops=difficulty + 1)


@kind("operation", default=False)
def operation(rng: random.Random, difficulty: int) -> Generated:
    """One operation (+ - x) on two numbers up to 9 ... 999: the arithmetic facts the other kinds build on
    (a task a tiny model learns; `arithmetic` at the same difficulty chains two or more of them)."""
    return _arithmetic(rng, difficulty, ops=1)


def _arithmetic(rng: random.Random, difficulty: int, *, ops: int) -> Generated:
    top = _ARITH_MAX[difficulty - 1]
    while True:
        tree = _expression(rng, ops, top)
        value = expression_value(tree)
        if abs(value) <= 10 ** (difficulty + 3):
            break
    verb = rng.choice(("Compute", "Evaluate", "What is the value of"))
    end = "?" if verb.startswith("What") else "."
    problem = f"{verb} ${expression_latex(tree)}${end}"
    return problem, str(value), {"expression": expression_python(tree)}, worked.arithmetic_solution(tree)


_FRACTION_TERMS = (2, 2, 3, 3, 4)
_FRACTION_DEN = (6, 10, 12, 16, 25)
_FRACTION_LATEX = {"+": "+", "-": "-", "*": "\\times", "/": "\\div"}


@kind("fraction")
def fraction(rng: random.Random, difficulty: int) -> Generated:
    """Fractions combined with + - x and division; the answer is reduced."""
    top = _FRACTION_DEN[difficulty - 1]
    terms = []
    for _ in range(_FRACTION_TERMS[difficulty - 1]):
        den = rng.randint(2, top)
        num = rng.randint(1, 2 * den - 1)
        terms.append((num, den))
    ops = [rng.choice("+-" if difficulty == 1 else "+-*/") for _ in terms[1:]]
    value = eval_fraction_terms(terms, ops)
    latex = f"\\frac{{{terms[0][0]}}}{{{terms[0][1]}}}"
    for op, (num, den) in zip(ops, terms[1:]):
        latex += f" {_FRACTION_LATEX[op]} \\frac{{{num}}}{{{den}}}"
    problem = f"Compute ${latex}$. Express your answer as a fraction in lowest terms."
    params = {"terms": [list(t) for t in terms], "ops": ops}
    return problem, latex_number(value), params, worked.fraction_solution(terms, ops)


def eval_fraction_terms(terms: list[tuple[int, int]], ops: list[str]) -> Fraction:
    """Value of t0 op0 t1 op1 t2 ... with x and division before + and -."""
    sums: list[Fraction] = [Fraction(*terms[0])]
    signs = [1]
    for op, t in zip(ops, terms[1:]):
        x = Fraction(*t)
        if op == "*":
            sums[-1] *= x
        elif op == "/":
            sums[-1] /= x
        else:
            sums.append(x)
            signs.append(1 if op == "+" else -1)
    return sum((s * v for s, v in zip(signs, sums)), Fraction(0))


@kind("linear")
def linear(rng: random.Random, difficulty: int) -> Generated:
    """ax + b = cx + d in one unknown; integer solutions up to difficulty 3, fractions above."""
    span = 5 * difficulty
    while True:
        if difficulty <= 2:
            a, c = Fraction(rng.randint(1, 4 * difficulty)), Fraction(0)
        else:
            a, c = Fraction(rng.randint(-span, span)), Fraction(rng.randint(-span, span))
        if difficulty == 5:
            a += Fraction(rng.choice((-1, 1)), rng.randint(2, 5))
        if a != c and a != 0:
            break
    b = Fraction(rng.randint(-span * 2, span * 2))
    if difficulty <= 3:
        x = Fraction(rng.randint(-span, span) if difficulty > 1 else rng.randint(0, 10))
        d = (a - c) * x + b
    else:
        d = Fraction(rng.randint(-span * 2, span * 2))
        x = (d - b) / (a - c)
    var = rng.choice("xyntk")
    lhs = latex_terms([(a, var), (b, "")])
    rhs = latex_terms([(c, var), (d, "")])
    params = {"a": str(a), "b": str(b), "c": str(c), "d": str(d), "variable": var}
    solution = worked.linear_solution(a, b, c, d, var)
    return f"Solve for ${var}$: ${lhs} = {rhs}$.", latex_number(x), params, solution


_NICE_PERCENTS = (10, 20, 25, 50, 75)


@kind("percent")
def percent(rng: random.Random, difficulty: int) -> Generated:
    """Percentages: p% of n; successive changes; what percent one number is of another."""
    if difficulty <= 2:
        p = rng.choice(_NICE_PERCENTS) if difficulty == 1 else rng.randint(1, 99)
        n = rng.randint(1, 10) * 20 if difficulty == 1 else rng.randint(2, 100) * 5
        value = Fraction(p * n, 100)
        params = {"mode": "of", "percent": p, "number": n}
        return f"What is ${p}\\%$ of ${n}$?", latex_decimal(value), params, worked.percent_of_solution(p, n)
    if difficulty == 4:
        whole = rng.randint(2, 80) * 5
        p = Fraction(rng.randint(1, 399), 2)  # 0.5% steps: the percentage is a short decimal
        part = whole * p / 100
        params = {"mode": "what_percent", "part": str(part), "whole": whole}
        problem = f"What percent of ${whole}$ is ${latex_decimal(part)}$? Give the number without the percent sign."
        return problem, latex_decimal(p), params, worked.percent_of_what_solution(part, whole)
    steps = 2 if difficulty == 3 else 3
    price = rng.randint(2, 50) * 20
    changes = [rng.choice((-1, 1)) * rng.choice((5, 10, 15, 20, 25, 30, 40, 50)) for _ in range(steps)]
    value = Fraction(price)
    for ch in changes:
        value *= Fraction(100 + ch, 100)
    said = ", then ".join(f"{'increased' if ch > 0 else 'decreased'} by ${abs(ch)}\\%$" for ch in changes)
    problem = f"A price of ${price}$ dollars is {said}. What is the final price in dollars?"
    params = {"mode": "changes", "price": price, "changes": changes}
    return problem, latex_decimal(value), params, worked.percent_changes_solution(price, changes)


_GCD_TOP = (12, 20, 40, 60, 120)


@kind("gcd_lcm")
def gcd_lcm(rng: random.Random, difficulty: int) -> Generated:
    """Greatest common divisor or least common multiple of two (three from difficulty 4) numbers."""
    count = 2 if difficulty <= 3 else 3
    g = rng.randint(2, _GCD_TOP[difficulty - 1])
    factors = rng.sample(range(1, 4 + 3 * difficulty), count)
    numbers = [g * f for f in factors]
    op = rng.choice(("gcd", "lcm"))
    value = math.gcd(*numbers) if op == "gcd" else math.lcm(*numbers)
    listed = ", ".join(f"${n}$" for n in numbers[:-1]) + f" and ${numbers[-1]}$"
    what = "greatest common divisor" if op == "gcd" else "least common multiple"
    params = {"op": op, "numbers": numbers}
    return f"Find the {what} of {listed}.", str(value), params, worked.gcd_lcm_solution(op, numbers)


@kind("system")
def system(rng: random.Random, difficulty: int) -> Generated:
    """Two linear equations in x and y; the answer is the ordered pair (x, y)."""
    span = 2 + 2 * difficulty
    while True:
        a1, b1, a2, b2 = (rng.choice([v for v in range(-span, span + 1) if v]) for _ in range(4))
        if a1 * b2 - a2 * b1:
            break
    if difficulty <= 3:
        x, y = Fraction(rng.randint(-span, span)), Fraction(rng.randint(-span, span))
        c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    else:
        c1, c2 = Fraction(rng.randint(-3 * span, 3 * span)), Fraction(rng.randint(-3 * span, 3 * span))
        x, y = solve_2x2(a1, b1, c1, a2, b2, c2)
    eq1 = f"{latex_terms([(a1, 'x'), (b1, 'y')])} = {latex_number(c1)}"
    eq2 = f"{latex_terms([(a2, 'x'), (b2, 'y')])} = {latex_number(c2)}"
    problem = (f"Solve the system of equations ${eq1}$ and ${eq2}$. "
               "Give your answer as an ordered pair $(x, y)$.")
    params = {"a1": a1, "b1": b1, "c1": str(c1), "a2": a2, "b2": b2, "c2": str(c2)}
    solution = worked.system_solution(a1, b1, c1, a2, b2, c2)
    return problem, f"({latex_number(x)}, {latex_number(y)})", params, solution


def solve_2x2(a1: int, b1: int, c1: Fraction, a2: int, b2: int, c2: Fraction) -> tuple[Fraction, Fraction]:
    """Cramer's rule for a1 x + b1 y = c1, a2 x + b2 y = c2 (non-zero determinant)."""
    det = Fraction(a1 * b2 - a2 * b1)
    return (c1 * b2 - c2 * b1) / det, (a1 * c2 - a2 * c1) / det


@kind("quadratic")
def quadratic(rng: random.Random, difficulty: int) -> Generated:
    """Real roots of a quadratic: monic with integer roots (1-2), a leading coefficient (3), rational roots (4-5)."""
    span = (5, 9, 9, 6, 9)[difficulty - 1]
    p1, p2 = rng.randint(-span, span), rng.randint(-span, span)
    q1, q2 = 1, 1  # roots p1/q1 and p2/q2 of (q1 x - p1)(q2 x - p2)
    if difficulty >= 4:
        top = 3 if difficulty == 4 else 5
        q1, q2 = rng.randint(2, top), rng.randint(1, top)
    a, b, c = q1 * q2, -(q1 * p2 + q2 * p1), p1 * p2
    if difficulty == 3:
        k = rng.randint(2, 4) * rng.choice((-1, 1))
        a, b, c = a * k, b * k, c * k
    else:
        g = math.gcd(a, b, c)
        a, b, c = a // g, b // g, c // g
    roots = sorted({Fraction(p1, q1), Fraction(p2, q2)})
    equation = latex_terms([(a, "x^2"), (b, "x"), (c, "")])
    problem = (f"Find all real solutions of ${equation} = 0$. "
               "Enter the solutions separated by commas, from least to greatest.")
    answer = ", ".join(latex_number(r) for r in roots)
    return problem, answer, {"coefficients": [a, b, c]}, worked.quadratic_solution(a, b, c)


@kind("modular")
def modular(rng: random.Random, difficulty: int) -> Generated:
    """Remainders: of a number, then of a power (difficulty 3 and above)."""
    if difficulty <= 2:
        m = rng.randint(2, 9 if difficulty == 1 else 30)
        n = rng.randint(m + 1, 100 if difficulty == 1 else 10_000)
        return (f"What is the remainder when ${n}$ is divided by ${m}$?", str(n % m),
                {"base": n, "exponent": 1, "modulus": m}, worked.modular_solution(n, 1, m))
    base = rng.randint(2, (20, 50, 99)[difficulty - 3])
    exponent = rng.randint(5, (20, 100, 2000)[difficulty - 3])
    m = rng.randint(3, (20, 50, 200)[difficulty - 3])
    problem = f"What is the remainder when ${base}^{{{exponent}}}$ is divided by ${m}$?"
    params = {"base": base, "exponent": exponent, "modulus": m}
    return problem, str(pow(base, exponent, m)), params, worked.modular_solution(base, exponent, m)


# --- the generator -------------------------------------------------------------------------------------


# --- solution styles -----------------------------------------------------------------------------------

# Another way to write a kind's solution, from its params: a second teacher's style. "worked" (every
# kind's own builder) is the default; a style lists the kinds it can write.
SOLUTION_STYLES: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "worked": {},
    "compact": {name: lambda params: worked.arithmetic_chain_solution(worked.parse_expression(params["expression"]))
                for name in ("arithmetic", "operation")},
}


def _check_style(style: str, kinds: list[str]) -> None:
    if style not in SOLUTION_STYLES:
        raise ConfigError(f"unknown solution style {style!r}", f"use one of: {', '.join(SOLUTION_STYLES)}")
    writes = SOLUTION_STYLES[style]
    missing = [k for k in kinds if style != "worked" and k not in writes]
    if missing:
        raise ConfigError(f"solution style {style!r} has no form for kind(s) {', '.join(missing)}",
                          f"pick kinds among {', '.join(writes)} for this style, or use the style 'worked'")


def _check(n: int, kinds: Iterable[str] | str | None, difficulty: int) -> list[str]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n={n!r} must be a whole number >= 0", "ask for e.g. n=64 problems")
    if isinstance(difficulty, bool) or difficulty not in range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1):
        raise ConfigError(f"difficulty={difficulty!r} is out of range",
                          f"use {MIN_DIFFICULTY} (easiest) to {MAX_DIFFICULTY}")
    chosen = [kinds] if isinstance(kinds, str) else list(kinds or ())
    unknown = [k for k in chosen if k not in KINDS and k not in EXTRA_KINDS]
    if unknown:
        raise ConfigError(f"unknown problem kind(s) {unknown}", f"use some of: {', '.join([*KINDS, *EXTRA_KINDS])}")
    return list(dict.fromkeys(chosen)) or list(KINDS)


def generate_problems(
    n: int, *, seed: int = 0, kinds: Iterable[str] | str | None = None, difficulty: int = 2, style: str = "worked"
) -> list[dict[str, Any]]:
    """`n` distinct problems cycling through `kinds` (all by default), as dicts with keys
    problem, answer, solution, kind, difficulty, params. `style` picks how solutions are written
    (SOLUTION_STYLES); the problems and answers do not depend on it."""
    order = _check(n, kinds, difficulty)
    _check_style(style, order)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in range(n):
        name = order[i % len(order)]
        rng = random.Random(f"dypo.synthetic:{seed}:{i}")
        for _ in range(MAX_REDRAWS):
            problem, answer, params, solution = (KINDS.get(name) or EXTRA_KINDS[name])(rng, difficulty)
            if problem not in seen:
                break
        else:
            raise ConfigError(
                f"ran out of distinct {name} problems at difficulty {difficulty} after {i} problems",
                "ask for fewer problems, more kinds or a higher difficulty",
            )
        seen.add(problem)
        if style != "worked":
            solution = SOLUTION_STYLES[style][name](params)
        out.append({"problem": problem, "answer": answer, "solution": solution, "kind": name,
                    "difficulty": difficulty, "params": params})
    return out


def write_problems_jsonl(
    path: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    kinds: Iterable[str] | str | None = None,
    difficulty: int = 2,
    style: str = "worked",
) -> int:
    """Write `generate_problems(...)` as JSONL (atomically: a temporary file renamed into place); returns n."""
    problems = generate_problems(n, seed=seed, kinds=kinds, difficulty=difficulty, style=style)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in problems:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return len(problems)
