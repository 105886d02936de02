"""Fixtures of the backend tests: one fp32 vLLM engine on the tiny model, shared by this package."""

from __future__ import annotations

import pytest

from dypo_data.backends import ModelSpec, make_backend


@pytest.fixture(scope="package")
def tiny_spec(tiny_model_dir):
    return ModelSpec(name="tiny", path=str(tiny_model_dir), dtype="float32", kv_cache_gib=1)


@pytest.fixture(scope="package")
def tiny_vllm(tiny_spec):
    with make_backend("vllm", tiny_spec) as backend:
        yield backend
