"""`dypo-data models`: prepare the built-in models and print where they are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dypo_data.cli.common import reporting
from dypo_data.models.tiny import TinyModelConfig

_TINY = TinyModelConfig()


def models(
    spec: Annotated[list[str], typer.Argument(help="smollm2 (the embedded SmolLM2-135M-Instruct), tiny or tiny:SEED, or a path.")],
    cache_dir: Annotated[Optional[str], typer.Option(help="Cache directory (default $DYPO_CACHE or ~/.cache/dypo).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Build one tiny model into this directory instead of the cache.")] = None,
    layers: Annotated[int, typer.Option(help="Tiny models: transformer blocks.")] = _TINY.num_layers,
    hidden: Annotated[int, typer.Option(help="Tiny models: width (hidden / heads must be 32, 64, 80, ... for vLLM on CPU).")] = _TINY.hidden_size,
    heads: Annotated[int, typer.Option(help="Tiny models: attention heads (and key/value heads).")] = _TINY.num_heads,
    mlp: Annotated[int, typer.Option(help="Tiny models: width of the MLP.")] = _TINY.intermediate_size,
) -> None:
    """Build or convert models once and print NAME PATH for each (usable as --teacher/--policy).

    Tiny models take an architecture (`--layers/--hidden/--heads/--mlp`); one with another architecture
    than the default is cached under a name that carries it, or built into `--out`.

    Examples: dypo-data models smollm2 tiny:1
              dypo-data models tiny:3 --layers 4 --hidden 128 --mlp 384 --out models/teacher-init
    """
    with reporting():
        from dypo_data.models import resolve_model

        arch = TinyModelConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=heads,
                               intermediate_size=mlp)
        if out is not None and len(spec) != 1:
            raise typer.BadParameter(f"--out {out} takes one model, got {len(spec)}: {' '.join(spec)}")
        for s in spec:
            ref = resolve_model(s, cache_dir=cache_dir, tiny=arch, out=out)
            print(f"{ref.name}\t{ref.path}")  # tab-separated, for scripts
