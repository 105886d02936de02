"""`dypo-data import`: load prompts, and the teacher traces published with them, into a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import build_prompt_source, field_help, out_console, reporting
from dypo_data.prompts import PromptSource

_P = PromptSource


def import_(
    prompts: Annotated[Path, typer.Argument(help="Prompt file: JSONL, Parquet or a saved HF dataset.")],
    store: Annotated[Path, typer.Option(help="Store directory (created if missing).")],
    prompt_format: Annotated[str, typer.Option("--format", help="auto, problem_answer, question_answer, verl, openr1.")] = "auto",
    column: Annotated[Optional[list[str]], typer.Option(help="Map a prompt field to an input column, FIELD=COLUMN (repeatable; nested: reward_model.ground_truth).")] = None,
    instruction: Annotated[Optional[str], typer.Option(help="Text appended to each problem (default asks for a \\boxed{} answer; '' for none).")] = None,
    source: Annotated[Optional[str], typer.Option(help="Source name of these prompts (default: data_source or the file name).")] = None,
    teacher_name: Annotated[Optional[str], typer.Option(help="Model name recorded for imported teacher traces.")] = None,
    teacher_names: Annotated[Optional[str], typer.Option(help="Comma-separated model names by position for rows with several teachers' traces (DYPO's two-teacher target).")] = None,
    solution_teacher: Annotated[str, typer.Option(help=field_help(_P, "solution_teacher"))] = _P.solution_teacher,
    no_traces: Annotated[bool, typer.Option("--no-traces", help="Load the prompts only, not their traces or solutions.")] = False,
    skip_missing_answer: Annotated[bool, typer.Option(help="Skip rows with no gold answer instead of failing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import a prompt set; LUFFY/DYPO `target` traces, OpenR1 `generations` and a `solution` column come in as teacher traces.

    Examples:

      dypo-data import openr1.parquet --store st --format verl

      dypo-data import problems.jsonl --store st --column solution=worked --solution-teacher reference
    """
    with reporting():
        from dypo_data.jobs.ingest import run_import

        src = build_prompt_source(
            prompts, fmt=prompt_format, columns=column, instruction=instruction, source=source,
            teacher_name=teacher_name, teacher_names=tuple(n.strip() for n in (teacher_names or "").split(",") if n.strip()),
            solution_teacher=solution_teacher,
            import_traces=not no_traces, on_missing_answer="skip" if skip_missing_answer else "error",
        )
        stats, _ = run_import(str(store), src)
        summary = {"run_id": stats.run_id, **dict(stats.counts)}
        if as_json:
            print(json.dumps(summary))
        else:
            out_console.print("import: " + ", ".join(f"{k}={v}" for k, v in summary.items()), highlight=False)
