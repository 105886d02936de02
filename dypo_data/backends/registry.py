"""Backend registry: `make_backend(kind, model, **opts)`.

Each backend registers a factory under its kind. The factories import their backend module only when
called, so looking up names stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dypo_data.backends.base import Backend, ModelSpec
from dypo_data.errors import ConfigError

BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(kind: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    def decorator(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        BACKENDS[kind] = factory
        return factory

    return decorator


@register_backend("vllm")
def _vllm(model: ModelSpec, **opts: Any) -> Backend:
    from dypo_data.backends.vllm_engine import VLLMBackend

    return VLLMBackend(model, **opts)


@register_backend("openai")
def _openai(model: ModelSpec, **opts: Any) -> Backend:
    from dypo_data.backends.openai_server import OpenAIBackend

    return OpenAIBackend(model, **opts)


@register_backend("transformers")
def _transformers(model: ModelSpec, **opts: Any) -> Backend:
    from dypo_data.backends.hf import TransformersBackend

    return TransformersBackend(model, **opts)


def make_backend(kind: str, model: ModelSpec | str, **opts: Any) -> Backend:
    """Create the backend `kind` for `model`.

    `model` is a ModelSpec, or a model spec string for `dypo_data.models.resolve_model` ("smollm2",
    "tiny:1", a directory); for the openai backend a string is the served model name.
    Options go to the backend's constructor (e.g. `base_urls=[...]` for openai, `batch_size` for
    transformers).
    """
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r}", f"use one of: {', '.join(sorted(BACKENDS))}")
    if isinstance(model, str):
        model = model_spec(model, served=kind == "openai")
    try:
        return BACKENDS[kind](model, **opts)
    except TypeError as exc:  # a wrong option name: say which options exist
        if "__init__() got an unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"backend {kind!r}: {exc}", "see the backend's constructor for its options") from exc


def resolve_spec(kind: str, model: ModelSpec) -> ModelSpec:
    """`model` as backend `kind` will run it (the vLLM CPU build resolves dtype `auto`; see cpu.py)."""
    if kind != "vllm":
        return model
    from dypo_data.backends.vllm_engine import resolve_spec as resolve_vllm

    return resolve_vllm(model)


def fit_context(kind: str, model: ModelSpec, messages: list[list[dict]], max_tokens: int) -> ModelSpec:
    """`model` with a context sized to these prompts where backend `kind` needs it (vLLM on CPU)."""
    if kind != "vllm":
        return model
    from dypo_data.backends.vllm_engine import fit_context as fit_vllm

    return fit_vllm(model, messages, max_tokens)


def model_spec(spec: str, *, served: bool = False, **fields: Any) -> ModelSpec:
    """A ModelSpec from a model spec string; `served`: the string names a model on a server."""
    if served:
        return ModelSpec(name=spec, path=spec, **fields)
    from dypo_data.models import resolve_model

    ref = resolve_model(spec)
    return ModelSpec(name=ref.name, path=str(ref.path), **fields)
