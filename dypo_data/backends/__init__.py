"""Generation backends: one interface (`Backend`), three implementations, one registry.

- "vllm": vLLM's offline engine in this process tree (default; fastest).
- "openai": OpenAI-compatible servers (vLLM or others), several URLs, retries, bounded concurrency.
- "transformers": batched `model.generate` (reference and fallback, no vLLM needed).

    with make_backend("vllm", ModelSpec(name="smollm2", path=DIR)) as backend:
        for result in backend.generate(requests, SamplingConfig(n=8, temperature=0.6)):
            ...  # results arrive as requests finish

Importing this package does not import vLLM, torch or transformers.
"""

from dypo_data.backends.base import (
    LOGPROBS_MODES,
    Backend,
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    SamplingConfig,
    sample_seed,
)
from dypo_data.backends.registry import BACKENDS, fit_context, make_backend, model_spec, register_backend, resolve_spec

__all__ = [
    "BACKENDS",
    "LOGPROBS_MODES",
    "Backend",
    "Completion",
    "GenerationRequest",
    "GenerationResult",
    "ModelSpec",
    "SamplingConfig",
    "fit_context",
    "make_backend",
    "model_spec",
    "register_backend",
    "resolve_spec",
    "sample_seed",
]
