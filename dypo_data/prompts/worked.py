"""Worked solutions of the generated problems: one builder per problem kind, from the numbers it drew.

    arithmetic_solution(("+", 3, ("*", 4, 5)))
    # Evaluate $3 + 4 \\times 5$: parentheses first, then multiplication, then addition and ...
    # $4 \\times 5 = 20$, which leaves $3 + 20$.
    # $3 + 20 = 23$.
    # The answer is $\\boxed{23}$.

Each builder does the working a person would write down (the intermediate results of an expression,
the rearranged equation, the discriminant, the repeated squares) and ends with one line
`The answer is $\\boxed{...}$`. The boxed result is computed here, step by step, and not copied from
the generator's answer: the tests check that the two agree exactly and grade every solution with the
project's verifier. The text has no other box, so a grader reading the last one reads the answer.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from typing import Union

from dypo_data.prompts.latex import frac, latex_decimal, latex_number, latex_terms, paren

# An integer expression: a number, or (operator, left, right) with operator one of + - *.
Node = Union[int, tuple[str, "Node", "Node"]]
ARITH_LATEX = {"+": "+", "-": "-", "*": "\\times"}


def answer_line(answer: str) -> str:
    """The last line of every worked solution."""
    return f"The answer is $\\boxed{{{answer}}}$."


def _chain(*forms: str) -> str:
    """`a = b = c`, leaving out a form equal to the one before it."""
    kept = [f for i, f in enumerate(forms) if i == 0 or f != forms[i - 1]]
    return " = ".join(kept)


def _divide(n: Fraction, k: Fraction) -> str:
    """n / k worked out: `\\frac{n}{k} = q` for integers, `n \\div k = n \\cdot 1/k = q` otherwise."""
    if n.denominator == 1 and k.denominator == 1:
        return _chain(frac(n.numerator, k.numerator), latex_number(n / k))
    return _chain(f"{paren(n)} \\div {paren(k)}", f"{paren(n)} \\cdot {paren(1 / k)}", latex_number(n / k))


# --- arithmetic ----------------------------------------------------------------------------------------


def _wrapped(child: Node, op: str, is_right: bool) -> bool:
    """Whether `child` needs parentheses as an operand of `op` (a sum under x, or on the right of -)."""
    return isinstance(child, tuple) and child[0] in "+-" and (op == "*" or (op == "-" and is_right))


def expression_latex(node: Node, *, leftmost: bool = True) -> str:
    """The expression as LaTeX, with only the parentheses precedence needs; a negative number gets its
    own unless it comes first."""
    if isinstance(node, int):
        return str(node) if leftmost else paren(node)
    op, left, right = node
    lt = expression_latex(left, leftmost=leftmost and not _wrapped(left, op, False))
    rt = expression_latex(right, leftmost=False)
    lt = f"\\left({lt}\\right)" if _wrapped(left, op, False) else lt
    rt = f"\\left({rt}\\right)" if _wrapped(right, op, True) else rt
    return f"{lt} {ARITH_LATEX[op]} {rt}"


def expression_python(node: Node) -> str:
    """The expression as Python source, parenthesised like `expression_latex`."""
    if isinstance(node, int):
        return str(node) if node >= 0 else f"({node})"
    op, left, right = node
    lt, rt = expression_python(left), expression_python(right)
    lt = f"({lt})" if _wrapped(left, op, False) else lt
    rt = f"({rt})" if _wrapped(right, op, True) else rt
    return f"{lt} {op} {rt}"


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def expression_value(node: Node) -> int:
    if isinstance(node, int):
        return node
    op, left, right = node
    return _apply(op, expression_value(left), expression_value(right))


def parse_expression(text: str) -> Node:
    """The tree of an expression written by `expression_python` (+ and - grouped from the left)."""
    return _from_ast(ast.parse(text, mode="eval").body)


def as_read(node: Node) -> Node:
    """The tree a reader sees in `expression_latex(node)`: + and - group from the left.

    `3 + (4 - 5)` prints as `3 + 4 - 5`, which is read as `(3 + 4) - 5`; both have the same value, and
    the worked solution follows the reading.
    """
    return parse_expression(expression_python(node))


_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def _from_ast(node: ast.expr) -> Node:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_from_ast(node.operand)  # type: ignore[operator]
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        return (_AST_OPS[type(node.op)], _from_ast(node.left), _from_ast(node.right))
    raise AssertionError(f"not an integer expression: {ast.dump(node)}")


def _ready(node: Node, path: tuple[int, ...] = (), depth: int = 0) -> list[tuple[int, int, tuple[int, ...]]]:
    """(parenthesis depth, 1 for a product else 0, path) of each operation whose operands are both
    numbers, left to right; a path is a sequence of 1 (left) and 2 (right)."""
    if isinstance(node, int):
        return []
    op, left, right = node
    here = [(depth, int(op == "*"), path)] if isinstance(left, int) and isinstance(right, int) else []
    return (_ready(left, path + (1,), depth + _wrapped(left, op, False)) + here
            + _ready(right, path + (2,), depth + _wrapped(right, op, True)))


def _at(node: Node, path: tuple[int, ...]) -> Node:
    for step in path:
        node = node[step]  # type: ignore[index]
    return node


def _replaced(node: Node, path: tuple[int, ...], value: int) -> Node:
    if not path:
        return value
    op, left, right = node  # type: ignore[misc]
    if path[0] == 1:
        return (op, _replaced(left, path[1:], value), right)
    return (op, left, _replaced(right, path[1:], value))


def arithmetic_steps(node: Node) -> list[tuple[str, int, int, int, Node]]:
    """The operations in the order a person does them: the innermost parentheses first, then products,
    then the leftmost operation. Each is (operator, left, right, value, the expression it leaves)."""
    node = as_read(node)
    steps = []
    while isinstance(node, tuple):
        ready = _ready(node)
        depth, product, path = max(ready, key=lambda r: (r[0], r[1]))  # max keeps the first (leftmost) of ties
        op, a, b = _at(node, path)  # type: ignore[misc]
        value = _apply(op, a, b)
        node = _replaced(node, path, value)
        steps.append((op, a, b, value, node))
    return steps


def arithmetic_solution(node: Node) -> str:
    """One operation per line (`arithmetic_steps`), each with the expression it leaves."""
    lines = [f"Evaluate ${expression_latex(as_read(node))}$: parentheses first, then multiplication, "
             "then addition and subtraction from left to right."]
    result: Node = as_read(node)
    for op, a, b, value, result in arithmetic_steps(node):
        step = f"${a} {ARITH_LATEX[op]} {paren(b)} = {value}$"
        lines.append(f"{step}, which leaves ${expression_latex(result)}$." if isinstance(result, tuple) else f"{step}.")
    lines.append(answer_line(str(result)))
    return "\n".join(lines)


def arithmetic_chain_solution(node: Node) -> str:
    """The compact style: one chain of the expressions each operation leaves (`arithmetic_steps`).

        arithmetic_chain_solution(("+", 3, ("*", 4, 5)))
        # $3 + 4 \\times 5 = 3 + 20 = 23$.
        # The answer is $\\boxed{23}$.
    """
    forms = [expression_latex(as_read(node))] + [expression_latex(left) for *_, left in arithmetic_steps(node)]
    return f"${_chain(*forms)}$.\n" + answer_line(forms[-1])


# --- fractions -----------------------------------------------------------------------------------------


def _product_step(left: str, p: int, q: int, op: str, n: int, d: int) -> tuple[str, Fraction]:
    """`left` (= p/q) times or divided by n/d, worked out; returns the line's maths and the value."""
    forms = [f"{left} \\times {frac(n, d)}"]
    if op == "/":  # dividing is multiplying by the reciprocal
        forms = [f"{left} \\div {frac(n, d)}", f"{left} \\times {frac(d, n)}"]
        n, d = d, n
    forms.append(frac(f"{p} \\cdot {n}", f"{q} \\cdot {d}" if q != 1 else d))
    forms.append(frac(p * n, q * d))
    value = Fraction(p * n, q * d)
    forms.append(latex_number(value))
    return _chain(*forms), value


def fraction_solution(terms: list[tuple[int, int]], ops: list[str]) -> str:
    """Products and quotients first, then the sum over a common denominator, then the reduced result."""
    groups: list[list[tuple[str, tuple[int, int]]]] = [[("", terms[0])]]
    signs = ["+"]
    for op, term in zip(ops, terms[1:]):
        if op in "*/":
            groups[-1].append((op, term))
        else:
            groups.append([("", term)])
            signs.append(op)
    lines = ["Multiplication and division come before addition and subtraction."] if set(ops) & {"*", "/"} else []
    shown: list[tuple[str, int, int]] = []  # each group's value as written: latex, numerator, denominator
    for group in groups:
        p, q = group[0][1]
        text = frac(p, q)
        for op, (n, d) in group[1:]:
            maths, value = _product_step(text, p, q, op, n, d)
            lines.append(f"${maths}$.")
            text, p, q = latex_number(value), value.numerator, value.denominator
        shown.append((text, p, q))
    total = sum((Fraction(p, q) * (1 if s == "+" else -1) for s, (_, p, q) in zip(signs, shown)), Fraction(0))
    if len(shown) > 1:
        lines.append(_sum_line(signs, shown, total))
    lines.append(answer_line(latex_number(total)))
    return "\n".join(lines)


def _signed(signs: list[str], parts: list[str]) -> str:
    return parts[0] + "".join(f" {s} {t}" for s, t in zip(signs[1:], parts[1:]))


def _sum_line(signs: list[str], shown: list[tuple[str, int, int]], total: Fraction) -> str:
    common = math.lcm(*(q for _, _, q in shown))
    numerators = [p * (common // q) for _, p, q in shown]
    value = sum(n * (1 if s == "+" else -1) for s, n in zip(signs, numerators))
    written = _signed(signs, [t for t, _, _ in shown])
    if common == 1:
        return f"Adding up: ${_chain(written, latex_number(total))}$."
    forms = [written, _signed(signs, [frac(n, common) for n in numerators]),
             frac(_signed(signs, [str(n) for n in numerators]), common), frac(value, common), latex_number(total)]
    return f"Over the common denominator ${common}$: ${_chain(*forms)}$."


# --- equations -----------------------------------------------------------------------------------------


def linear_solution(a: Fraction, b: Fraction, c: Fraction, d: Fraction, var: str) -> str:
    """a var + b = c var + d: collect the variable on the left, the constants on the right, divide."""
    coef, rhs = a - c, d - b
    lines = [f"Solve ${latex_terms([(a, var), (b, '')])} = {latex_terms([(c, var), (d, '')])}$ for ${var}$."]
    if c != 0:
        move = f"Subtract ${latex_terms([(c, var)])}$ from" if c > 0 else f"Add ${latex_terms([(-c, var)])}$ to"
        lines.append(f"{move} both sides: ${latex_terms([(coef, var), (b, '')])} = {latex_number(d)}$.")
    if b != 0:
        move = f"Subtract ${latex_number(b)}$ from" if b > 0 else f"Add ${latex_number(-b)}$ to"
        maths = f"{latex_number(d)} {'-' if b > 0 else '+'} {latex_number(abs(b))}"
        lines.append(f"{move} both sides: ${latex_terms([(coef, var)])} = {_chain(maths, latex_number(rhs))}$.")
    if coef != 1:
        lines.append(f"Divide both sides by ${latex_number(coef)}$: ${var} = {_divide(rhs, coef)}$.")
    lines.append(answer_line(latex_number(rhs / coef)))
    return "\n".join(lines)


def system_solution(a1: int, b1: int, c1: Fraction, a2: int, b2: int, c2: Fraction) -> str:
    """Eliminate x (scale both equations to the same x coefficient and subtract), then substitute y back."""
    g = math.gcd(a1, a2)
    m1, m2 = a2 // g, a1 // g  # a1 * m1 == a2 * m2
    scaled = [f"the first equation by ${m1}$"] if m1 != 1 else []
    scaled += [f"the second by ${m2}$"] if m2 != 1 else []
    if scaled:
        lines = [f"Eliminate $x$: multiply {' and '.join(scaled)}, so that both have ${a1 * m1}x$:",
                 f"${latex_terms([(a1 * m1, 'x'), (b1 * m1, 'y')])} = {latex_number(c1 * m1)}$ and "
                 f"${latex_terms([(a2 * m2, 'x'), (b2 * m2, 'y')])} = {latex_number(c2 * m2)}$."]
    else:
        lines = [f"Eliminate $x$: both equations have ${latex_terms([(a1, 'x')])}$."]
    coef_y, rhs_y = Fraction(b1 * m1 - b2 * m2), c1 * m1 - c2 * m2
    y = rhs_y / coef_y
    lines.append("Subtract the second equation from the first: "
                 f"${latex_terms([(coef_y, 'y')])} = {latex_number(rhs_y)}$.")
    if coef_y != 1:
        lines.append(f"So $y = {_divide(rhs_y, coef_y)}$.")
    rest = c1 - b1 * y
    ax = latex_terms([(a1, "x")])
    lines.append(f"Substitute $y = {latex_number(y)}$ into the first equation: "
                 f"${ax} + {paren(b1)} \\cdot {paren(y)} = {latex_number(c1)}$, so "
                 f"${ax} = {_chain(f'{latex_number(c1)} - {paren(b1 * y)}', latex_number(rest))}$.")
    x = rest / a1
    if a1 != 1:
        lines.append(f"So $x = {_divide(rest, Fraction(a1))}$.")
    lines.append(answer_line(f"({latex_number(x)}, {latex_number(y)})"))
    return "\n".join(lines)


def quadratic_solution(a: int, b: int, c: int) -> str:
    """ax^2 + bx + c = 0 with rational roots: divide out a common factor, then the quadratic formula."""
    lines = []
    s = math.gcd(a, b, c) * (1 if a > 0 else -1)
    if s != 1:
        a, b, c = a // s, b // s, c // s
        lines.append(f"Divide both sides by ${s}$: ${latex_terms([(a, 'x^2'), (b, 'x'), (c, '')])} = 0$.")
    disc = b * b - 4 * a * c
    root = math.isqrt(disc)
    assert root * root == disc, (a, b, c)  # the generator only draws rational roots
    lines.append(f"Use the quadratic formula with $a = {a}$, $b = {b}$, $c = {c}$. The discriminant is "
                 f"$b^2 - 4ac = {paren(b)}^2 - 4 \\cdot {a} \\cdot {paren(c)} = {disc}$.")
    if disc == 0:
        roots = [Fraction(-b, 2 * a)]
        lines.append(f"It is $0$, so there is one solution: $x = \\frac{{-b}}{{2a}} = "
                     f"{_chain(frac(-b, 2 * a), latex_number(roots[0]))}$.")
    else:
        both = frac(f"{-b} \\pm {root}", 2 * a)
        lines.append(f"$\\sqrt{{{disc}}} = {root}$, so $x = \\frac{{-b \\pm \\sqrt{{b^2 - 4ac}}}}{{2a}} = {both}$.")
        roots = []
        for sign, top in (("+", -b + root), ("-", -b - root)):
            roots.append(Fraction(top, 2 * a))
            maths = _chain(frac(f"{-b} {sign} {root}", 2 * a), frac(top, 2 * a), latex_number(roots[-1]))
            lines.append(f"$x = {maths}$.")
    answer = ", ".join(latex_number(r) for r in sorted(roots))
    if len(roots) > 1:
        lines.append(f"From least to greatest, the solutions are ${answer}$.")
    lines.append(answer_line(answer))
    return "\n".join(lines)


# --- percentages ---------------------------------------------------------------------------------------


def percent_of_solution(percent: int, number: int) -> str:
    value = Fraction(percent * number, 100)
    maths = _chain(f"{frac(percent, 100)} \\times {number}", frac(f"{percent} \\cdot {number}", 100),
                   frac(percent * number, 100), latex_decimal(value))
    return f"${percent}\\%$ of ${number}$ is ${maths}$.\n{answer_line(latex_decimal(value))}"


def percent_of_what_solution(part: Fraction, whole: int) -> str:
    ratio = part / whole
    lines = [f"Divide the part by the whole: ${_chain(frac(latex_decimal(part), whole), latex_decimal(ratio))}$.",
             f"As a percentage: ${latex_decimal(ratio)} \\times 100 = {latex_decimal(ratio * 100)}$, so "
             f"${latex_decimal(part)}$ is ${latex_decimal(ratio * 100)}\\%$ of ${whole}$.",
             answer_line(latex_decimal(ratio * 100))]
    return "\n".join(lines)


def percent_changes_solution(price: int, changes: list[int]) -> str:
    """Each change multiplies the running price by 1 + p/100 (increase) or 1 - p/100 (decrease)."""
    lines = ["An increase by $p\\%$ multiplies the price by $1 + \\frac{p}{100}$, a decrease by $1 - \\frac{p}{100}$."]
    value = Fraction(price)
    for change in changes:
        factor = Fraction(100 + change, 100)
        new = value * factor
        what = "increase" if change > 0 else "decrease"
        lines.append(f"After the {what} by ${abs(change)}\\%$: "
                     f"${latex_decimal(value)} \\times {latex_decimal(factor)} = {latex_decimal(new)}$.")
        value = new
    lines.append(answer_line(latex_decimal(value)))
    return "\n".join(lines)


# --- number theory -------------------------------------------------------------------------------------


def prime_factors(n: int) -> dict[int, int]:
    """prime -> exponent, by trial division (n >= 1)."""
    out: dict[int, int] = {}
    p = 2
    while p * p <= n:
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def _power_product(factors: dict[int, int]) -> str:
    return " \\cdot ".join(f"{p}^{{{e}}}" if e > 1 else str(p) for p, e in sorted(factors.items()))


def gcd_lcm_solution(op: str, numbers: list[int]) -> str:
    """Prime factorisations; the gcd keeps the common primes at their smallest power, the lcm every
    prime at its largest."""
    factors = [prime_factors(n) for n in numbers]
    shown = [f"${n}$ is prime" if len(f) == 1 and n in f else f"${n} = {_power_product(f)}$"
             for n, f in zip(numbers, factors)]
    lines = [f"Factor each number into primes: {', '.join(shown)}."]
    if op == "gcd":
        chosen = {p: min(f[p] for f in factors) for p in set.intersection(*(set(f) for f in factors))}
        lines.append("The greatest common divisor takes each prime that divides all of them, to its smallest power.")
    else:
        chosen = {p: max(f.get(p, 0) for f in factors) for p in set.union(*(set(f) for f in factors))}
        lines.append("The least common multiple takes every prime that appears, to its largest power.")
    value = math.prod(p**e for p, e in chosen.items())
    if chosen:
        lines.append(f"${_chain(_power_product(chosen), str(value))}$.")
    else:
        lines.append("No prime divides all of them, so it is $1$.")
    lines.append(answer_line(str(value)))
    return "\n".join(lines)


def _mod(value: int, modulus: int) -> str:
    """`= value \\equiv r (mod m)`, the reduction left out when value is already below m."""
    reduced = f" \\equiv {value % modulus}" if value >= modulus else ""
    return f"= {value}{reduced} \\pmod{{{modulus}}}"


def modular_solution(base: int, exponent: int, modulus: int) -> str:
    """A remainder by division (exponent 1), else reduce the base and use repeated squaring."""
    if exponent == 1:
        q, r = divmod(base, modulus)
        division = f"${base} = {modulus} \\cdot {q} + {r}$ with $0 \\le {r} < {modulus}$"
        return f"Divide ${base}$ by ${modulus}$: {division}.\n{answer_line(str(r))}"
    m, reduced = modulus, base % modulus
    lines = [f"Work modulo ${m}$ with repeated squaring."]
    if reduced != base:
        lines.append(f"${base} = {m} \\cdot {base // m} + {reduced}$, so ${base} \\equiv {reduced} \\pmod{{{m}}}$.")
    powers = {1: reduced}  # 2^i -> base^(2^i) mod m
    k = 1
    while 2 * k <= exponent:
        powers[2 * k] = powers[k] ** 2 % m
        lines.append(f"${base}^{{{2 * k}}} \\equiv {powers[k]}^2 {_mod(powers[k] ** 2, m)}$.")
        k *= 2
    parts = [p for p in sorted(powers, reverse=True) if exponent & p]
    if len(parts) > 1:
        product = " \\cdot ".join(f"{base}^{{{p}}}" for p in parts)
        lines.append(f"Since ${exponent} = {' + '.join(map(str, parts))}$, ${base}^{{{exponent}}} = {product}$.")
    done, value = parts[0], powers[parts[0]]
    for p in parts[1:]:
        lines.append(f"${base}^{{{done + p}}} \\equiv {value} \\cdot {powers[p]} {_mod(value * powers[p], m)}$.")
        done, value = done + p, value * powers[p] % m
    lines.append(answer_line(str(value)))
    return "\n".join(lines)
