"""The problem generator: deterministic, difficulty-dependent, and every answer checks out two ways."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from fractions import Fraction

import pytest
import sympy

from dypo_data.errors import ConfigError
from dypo_data.prompts import PromptSource, load_prompts
from dypo_data.prompts.synthetic import KINDS, generate_problems, latex_decimal, latex_number, write_problems_jsonl

DIFFICULTIES = range(1, 6)
PER_KIND = 12


def sample(kind: str, difficulty: int, seed: int = 11) -> list[dict]:
    return generate_problems(PER_KIND, seed=seed, kinds=[kind], difficulty=difficulty)


# --- independent recomputation from params --------------------------------------------------------------

_LATEX_FRACTION = re.compile(r"^(-?)\\frac\{(\d+)\}\{(\d+)\}$")


def number(text: str) -> Fraction:
    """A LaTeX integer, decimal or \\frac{p}{q} as an exact Fraction (written independently of the generator)."""
    text = text.strip()
    m = _LATEX_FRACTION.match(text)
    if m:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        assert value.denominator == int(m.group(3)), f"{text} is not reduced"
        return -value if m.group(1) else value
    assert re.fullmatch(r"-?\d+(\.\d+)?", text), text
    return Fraction(text)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(node: ast.AST) -> Fraction:
    """Exact value of an arithmetic expression tree (integers, + - * /, parentheses)."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](evaluate(node.left), evaluate(node.right))
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return Fraction(node.value)
    raise AssertionError(f"unexpected node {ast.dump(node)}")


def expected_answer(kind: str, params: dict) -> list[Fraction]:
    """The answer recomputed from the parameters: one number, or the numbers of a pair / list of roots."""
    x, y = sympy.symbols("x y")
    if kind == "arithmetic":
        return [evaluate(ast.parse(params["expression"], mode="eval"))]
    if kind == "fraction":
        text = f"{params['terms'][0][0]} / {params['terms'][0][1]}"
        for op, (num, den) in zip(params["ops"], params["terms"][1:]):
            text += f" {op} ({num} / {den})"
        return [evaluate(ast.parse(text, mode="eval"))]
    if kind == "linear":
        a, b, c, d = (sympy.Rational(params[k]) for k in "abcd")
        (root,) = sympy.solve(sympy.Eq(a * x + b, c * x + d), x)
        return [Fraction(str(root))]
    if kind == "percent":
        if params["mode"] == "of":
            return [Fraction(params["percent"]) * params["number"] / 100]
        if params["mode"] == "what_percent":
            return [Fraction(params["part"]) / params["whole"] * 100]
        value = Fraction(params["price"])
        for change in params["changes"]:
            value = value + value * Fraction(change, 100)
        return [value]
    if kind == "gcd_lcm":
        fn = math.gcd if params["op"] == "gcd" else math.lcm
        return [Fraction(fn(*params["numbers"]))]
    if kind == "system":
        eqs = [sympy.Eq(params["a1"] * x + params["b1"] * y, sympy.Rational(params["c1"])),
               sympy.Eq(params["a2"] * x + params["b2"] * y, sympy.Rational(params["c2"]))]
        sol = sympy.solve(eqs, [x, y])
        return [Fraction(str(sol[x])), Fraction(str(sol[y]))]
    if kind == "quadratic":
        a, b, c = params["coefficients"]
        return sorted(Fraction(str(r)) for r in sympy.solve(a * x**2 + b * x + c, x))
    if kind == "modular":
        return [Fraction(pow(params["base"], params["exponent"], params["modulus"]))]
    raise AssertionError(f"no recomputation for kind {kind}")


def answer_numbers(kind: str, answer: str) -> list[Fraction]:
    if kind == "system":
        m = re.fullmatch(r"\((.+), (.+)\)", answer)
        assert m, answer
        return [number(m.group(1)), number(m.group(2))]
    return [number(part) for part in answer.split(", ")]


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_answers_match_an_independent_computation(kind, difficulty):
    for p in sample(kind, difficulty):
        assert (p["kind"], p["difficulty"]) == (kind, difficulty)
        assert answer_numbers(kind, p["answer"]) == expected_answer(kind, p["params"]), p


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_text_is_the_expression(difficulty):
    """The LaTeX the model reads is the expression the answer was computed from."""
    for p in sample("arithmetic", difficulty):
        latex = re.search(r"\$(.+)\$", p["problem"]).group(1)
        python_expr = latex.replace("\\times", "*").replace("\\left(", "(").replace("\\right)", ")")
        assert python_expr == p["params"]["expression"]
        assert python_expr.count("+") + python_expr.count("-") + python_expr.count("*") == difficulty + 1


def test_parameters_appear_in_the_problem():
    for p in generate_problems(80, seed=5, difficulty=3):
        params = p["params"]
        shown = {
            "gcd_lcm": [str(n) for n in params.get("numbers", [])],
            "modular": [str(params.get("base")), str(params.get("modulus"))],
            "fraction": [f"\\frac{{{n}}}{{{d}}}" for n, d in params.get("terms", [])],
        }.get(p["kind"], [])
        for item in shown:
            assert item in p["problem"], (item, p["problem"])


def test_every_answer_verifies_with_math_verify():
    """verify(gold, boxed gold) for every kind and difficulty, in the main thread (math-verify's timeouts need it)."""
    from math_verify import parse, verify

    for difficulty in DIFFICULTIES:
        for p in generate_problems(4 * len(KINDS), seed=3, difficulty=difficulty):
            gold = parse("$" + p["answer"] + "$")
            assert gold, p
            assert verify(gold, parse("\\boxed{" + p["answer"] + "}")), p


def test_math_verify_rejects_a_wrong_answer():
    from math_verify import parse, verify

    for p in generate_problems(2 * len(KINDS), seed=4, difficulty=4):
        wrong = [n + 1 for n in answer_numbers(p["kind"], p["answer"])]
        text = ", ".join(latex_number(n) for n in wrong)
        if p["kind"] == "system":
            text = f"({text})"
        assert not verify(parse("$" + p["answer"] + "$"), parse("\\boxed{" + text + "}")), (p, text)


# --- determinism and knobs ------------------------------------------------------------------------------


def test_same_seed_same_problems_and_prefix_stability():
    first = generate_problems(40, seed=7, difficulty=3)
    assert first == generate_problems(40, seed=7, difficulty=3)
    assert generate_problems(25, seed=7, difficulty=3) == first[:25]
    assert generate_problems(40, seed=8, difficulty=3) != first


def test_generator_does_not_touch_the_global_rng():
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_problems(20, seed=1)
    assert random.random() == expected


def test_difficulty_changes_the_problems():
    easy = generate_problems(40, seed=2, difficulty=1)
    hard = generate_problems(40, seed=2, difficulty=5)
    assert [p["kind"] for p in easy] == [p["kind"] for p in hard]
    assert all(e["problem"] != h["problem"] for e, h in zip(easy, hard))

    def biggest(problems):
        return max(int(n) for p in problems for n in re.findall(r"\d+", p["problem"]))

    assert biggest(hard) > biggest(easy)
    for d in DIFFICULTIES:
        for p in sample("arithmetic", d):
            assert all(1 <= int(n) <= (9, 20, 50, 100, 999)[d - 1] for n in re.findall(r"\d+", p["params"]["expression"]))


def test_kinds_cycle_and_filter():
    problems = generate_problems(2 * len(KINDS), seed=0)
    assert [p["kind"] for p in problems] == list(KINDS) * 2
    only = generate_problems(6, seed=0, kinds=["linear", "modular"])
    assert [p["kind"] for p in only] == ["linear", "modular"] * 3
    assert [p["kind"] for p in generate_problems(2, kinds="system")] == ["system", "system"]
    assert generate_problems(0) == []


def test_problems_are_distinct():
    for difficulty in (1, 2):
        problems = generate_problems(300, seed=9, difficulty=difficulty)
        assert len({p["problem"] for p in problems}) == 300


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n": -1}, "n=-1"),
        ({"n": 3, "difficulty": 0}, "difficulty=0"),
        ({"n": 3, "difficulty": 6}, "difficulty=6"),
        ({"n": 3, "kinds": ["calculus"]}, "calculus"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        generate_problems(**kwargs)
    assert fragment in str(info.value) and info.value.hint


def test_latex_helpers():
    assert [latex_number(Fraction(n, d)) for n, d in [(6, 8), (-1, 2), (4, 2), (0, 5)]] == ["\\frac{3}{4}", "-\\frac{1}{2}", "2", "0"]
    assert [latex_decimal(Fraction(n, d)) for n, d in [(3, 8), (-1, 20), (905625, 1000), (7, 1)]] == ["0.375", "-0.05", "905.625", "7"]


def test_written_file_loads_as_prompts(tmp_path):
    path = tmp_path / "sub" / "problems.jsonl"
    assert write_problems_jsonl(path, 24, seed=1, difficulty=2) == 24
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == json.loads(json.dumps(generate_problems(24, seed=1, difficulty=2)))
    assert [p.name for p in path.parent.iterdir()] == ["problems.jsonl"]  # no temporary file left behind
    loaded = load_prompts(PromptSource(str(path)))
    assert loaded.format == "problem_answer" and loaded.prompts.num_rows == 24
    assert json.loads(loaded.prompts["metadata"][0].as_py())["kind"] == "arithmetic"
