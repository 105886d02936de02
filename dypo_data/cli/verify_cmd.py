"""`dypo-data verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import field_help, out_console, reporting, setup_logging, show_progress
from dypo_data.grading import VerifierConfig
from dypo_data.jobs.verify import VerifyConfig

_V = VerifierConfig
_C = VerifyConfig


def verify(
    store: Annotated[Path, typer.Option(help="Store directory to verify.")],
    workers: Annotated[int, typer.Option(help=field_help(_V, "workers"))] = _V.workers,
    timeout: Annotated[float, typer.Option(help=field_help(_V, "timeout_s"))] = _V.timeout_s,
    float_rounding: Annotated[int, typer.Option(help=field_help(_V, "float_rounding"))] = _V.float_rounding,
    strict: Annotated[bool, typer.Option("--strict/--lenient", help=field_help(_V, "strict"))] = _V.strict,
    answer_position: Annotated[str, typer.Option(help=field_help(_V, "answer_position"))] = _V.answer_position,
    limit: Annotated[Optional[int], typer.Option(help=field_help(_C, "limit"))] = None,
    flush_every: Annotated[int, typer.Option(help=field_help(_C, "flush_every"))] = _C.flush_every,
    flush_seconds: Annotated[float, typer.Option(help=field_help(_C, "flush_seconds"))] = _C.flush_seconds,
    wait: Annotated[bool, typer.Option("--wait", help=field_help(_C, "wait"))] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """Grade every trace that has no verdict under these verifier settings (math-verify in a process pool).

    Re-running with other settings adds new verdicts; traces are never rewritten.

    Example: dypo-data verify --store st --workers 2 --timeout 5
    """
    setup_logging(verbose)
    with reporting():
        from dypo_data.jobs.verify import run_verify

        verifier = VerifierConfig(workers=workers, timeout_s=timeout, float_rounding=float_rounding, strict=strict,
                                  answer_position=answer_position)
        stats = run_verify(VerifyConfig(store=str(store), verifier=verifier, limit=limit, flush_every=flush_every,
                                        flush_seconds=flush_seconds, wait=wait, progress=show_progress(quiet, as_json)))
        summary = {"run_id": stats.run_id, **dict(stats.counts), **stats.timings}
        if as_json:
            print(json.dumps(summary))
        elif not quiet:
            out_console.print("verify: " + ", ".join(f"{k}={v}" for k, v in summary.items()), highlight=False)
