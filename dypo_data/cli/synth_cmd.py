"""`dypo-data synth`: a procedural set of verifiable math problems, each with a worked solution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import out_console, reporting


def synth(
    out: Annotated[Path, typer.Option(help="JSONL file to write (problem, answer, solution, kind, difficulty, params).")],
    n: Annotated[int, typer.Option("-n", help="Number of problems.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same problems.")] = 0,
    difficulty: Annotated[int, typer.Option(help="1 (one-step, small numbers) to 5 (many steps, large numbers).")] = 2,
    kind: Annotated[Optional[list[str]], typer.Option(help="Problem kind (repeatable): fraction, linear, ...; default: every kind but `operation` (one + - x).")] = None,
    style: Annotated[str, typer.Option(help="How solutions are written: worked (every kind: one step per line) or "
                                            "compact (arithmetic, operation: one chain of equalities). Problems and answers do not change.")] = "worked",
) -> None:
    """Write a deterministic set of math problems with LaTeX gold answers and worked solutions.

    Each row's `solution` works the problem step by step and ends in \\boxed{answer}; `dypo-data import`
    and `generate --prompts` store it as a teacher trace (model `reference`, see --solution-teacher).

    Solutions in another style (`--style compact`) train a second teacher that writes differently.

    Example: dypo-data synth --out problems.jsonl -n 128 --difficulty 3
    """
    with reporting():
        from dypo_data.prompts.synthetic import write_problems_jsonl

        count = write_problems_jsonl(out, n=n, seed=seed, kinds=kind, difficulty=difficulty, style=style)
        out_console.print(f"wrote {count} problems to {out}", highlight=False)
