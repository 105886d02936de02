"""`dypo-data sql` and `dypo-data stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import arrow_to_rich, out_console, reporting


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the views prompts, traces, verdicts, latest_verdicts, scored_traces, groups, teacher_pool, train_metrics, train_samples, eval_results.")],
    store: Annotated[Path, typer.Option(help="Store directory.")],
    out: Annotated[Optional[Path], typer.Option(help="Also write the result to a .csv (lists as JSON text), .json/.jsonl or .parquet file, outside the store.")] = None,
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 50,
    max_width: Annotated[int, typer.Option(help="Characters per printed cell.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON lines instead of a table.")] = False,
) -> None:
    """Run one read-only DuckDB query (a SELECT) over the store and print the result.

    Writes (CREATE, COPY, ATTACH, SET, ...) and files outside the store are refused.

    Examples:

      dypo-data sql --store st "SELECT model, avg(reward) FROM scored_traces GROUP BY model"

      dypo-data sql --store st "SELECT tier, count(*) FROM groups GROUP BY tier" --out tiers.csv
    """
    with reporting():
        from dypo_data.jobs.inspect import check_result_path, run_sql, write_result

        if out is not None:
            check_result_path(out)  # before the query runs
        table = run_sql(str(store), query)
        if out is not None:
            write_result(table, out)
        if as_json:
            for row in table.slice(0, max_rows).to_pylist():
                print(json.dumps(row, default=str, ensure_ascii=False))
        else:
            out_console.print(arrow_to_rich(table, max_rows=max_rows, max_width=max_width))


def stats(
    store: Annotated[Path, typer.Option(help="Store directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise the store: traces and accuracy per model, per source, and group tiers per policy."""
    with reporting():
        from dypo_data.jobs.inspect import collect_stats

        s = collect_stats(str(store))
        if as_json:
            print(json.dumps({
                "models": s.models.to_pylist(), "sources": s.sources.to_pylist(), "tiers": s.tiers.to_pylist(),
                "verdict_status": s.statuses, "hard_prompts": s.hard_prompts,
                "hard_prompts_with_teacher_trace": s.hard_with_teacher,
            }, default=str))
            return
        out_console.print(arrow_to_rich(s.models, title="Traces per model"))
        out_console.print(arrow_to_rich(s.sources, title="Accuracy per prompt source"))
        out_console.print(arrow_to_rich(s.tiers, title="Policy groups per tier (easy: skipped, mid: GRPO+GAL, hard: SFT)"))
        status = ", ".join(f"{k}={v}" for k, v in s.statuses.items()) or "none"
        out_console.print(f"verdicts by status: {status}", highlight=False)
        out_console.print(
            f"hard prompts: {s.hard_prompts}, with a verified teacher trace: {s.hard_with_teacher}", highlight=False
        )
