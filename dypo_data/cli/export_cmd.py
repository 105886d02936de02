"""`dypo-data export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dypo_data.cli.common import field_help, out_console, reporting
from dypo_data.jobs.export import ExportConfig

_E = ExportConfig


def export(
    store: Annotated[Path, typer.Option(help=field_help(_E, "store"))],
    out: Annotated[Path, typer.Option(help=field_help(_E, "out"))],
    kind: Annotated[str, typer.Option(help=field_help(_E, "kind"))] = "sft",
    max_pairs_per_group: Annotated[int, typer.Option(help=field_help(_E, "max_pairs_per_group"))] = 4,
    overwrite: Annotated[bool, typer.Option(help=field_help(_E, "overwrite"))] = False,
) -> None:
    """Write the verified teacher pool (TRL SFT `messages`) or preference pairs (TRL DPO) as a HF dataset.

    Examples:

      dypo-data export --store st --kind sft --out sft_ds

      dypo-data export --store st --kind pairs --out dpo_ds
    """
    with reporting():
        from dypo_data.jobs.export import run_export

        n = run_export(ExportConfig(store=str(store), out=str(out), kind=kind,
                                    max_pairs_per_group=max_pairs_per_group, overwrite=overwrite))
        out_console.print(f"wrote {n} {kind} records to {out}", highlight=False)
