"""`dypo-data compact`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import field_help, out_console, reporting, setup_logging
from dypo_data.jobs.compact import CompactConfig

_C = CompactConfig


def compact(
    store: Annotated[Path, typer.Option(help=field_help(_C, "store"))],
    table: Annotated[Optional[list[str]], typer.Option(help=field_help(_C, "tables") + " Repeat for several.")] = None,
    target_mib: Annotated[float, typer.Option(help=field_help(_C, "target_mib"))] = _C.target_mib,
    row_group_rows: Annotated[int, typer.Option(help=field_help(_C, "row_group_rows"))] = _C.row_group_rows,
    memory_limit: Annotated[str, typer.Option(help=field_help(_C, "memory_limit"))] = _C.memory_limit,
    wait: Annotated[bool, typer.Option("--wait", help=field_help(_C, "wait"))] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """Merge each table's small shards into large files sorted by the table's key, dropping exact duplicate rows.

    Safe to kill at any moment (a rerun finishes or undoes the interrupted merge) and to run beside
    readers and writers: they see the old shards or the merged files, never both or neither.

    Examples:

      dypo-data compact --store st

      dypo-data compact --store st --table traces --target-mib 512
    """
    setup_logging(verbose)
    with reporting():
        from dypo_data.jobs.compact import run_compact

        def report(result, seconds: float) -> None:
            if not (quiet or as_json):
                out_console.print(
                    f"{result.table}: {result.shards_merged:,} shards ({result.bytes_in / 2**20:,.1f} MiB, {result.rows_in:,} rows) "
                    f"-> {result.parts_written} files ({result.bytes_out / 2**20:,.1f} MiB, {result.rows_out:,} rows) in {seconds:.1f} s "
                    f"({result.rows_in / max(seconds, 1e-9):,.0f} rows/s)"
                    + (f"; {result.replaced_kept} merged shards stay until no reader is open" if result.replaced_kept else ""),
                    highlight=False)

        cfg = CompactConfig(store=str(store), tables=tuple(table) if table else _C.tables, target_mib=target_mib,
                            row_group_rows=row_group_rows, memory_limit=memory_limit, wait=wait)
        stats = run_compact(cfg, report)
        summary = {"run_id": stats.run_id, **dict(stats.counts), **stats.timings}
        if as_json:
            print(json.dumps(summary))
        elif not quiet and not stats.counts.get("shards_merged"):
            out_console.print("compact: nothing to merge (no table has two shards under half the target size)", highlight=False)
