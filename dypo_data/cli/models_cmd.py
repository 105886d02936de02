"""`dypo-data models`: prepare the built-in models and print where they are."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dypo_data.cli.common import reporting


def models(
    spec: Annotated[list[str], typer.Argument(help="smollm2 (the embedded SmolLM2-135M-Instruct), tiny or tiny:SEED, or a path.")],
    cache_dir: Annotated[Optional[str], typer.Option(help="Cache directory (default $DYPO_CACHE or ~/.cache/dypo).")] = None,
) -> None:
    """Build or convert models once and print NAME PATH for each (usable as --teacher/--policy).

    Example: dypo-data models smollm2 tiny:1
    """
    with reporting():
        from dypo_data.models import resolve_model

        for s in spec:
            ref = resolve_model(s, cache_dir=cache_dir)
            print(f"{ref.name}\t{ref.path}")  # tab-separated, for scripts
