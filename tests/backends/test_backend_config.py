"""Configs, seeds and the registry: no engine needed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig, make_backend, sample_seed
from dypo_data.backends.base import template_hash
from dypo_data.errors import BackendError, ConfigError


def test_every_config_field_has_help():
    for cls in (SamplingConfig, ModelSpec):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n": 0}, "n=0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"top_p": 0}, "top_p=0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"stop": ("",)}, "stop="),
        ({"seed": -3}, "seed=-3"),
    ],
)
def test_sampling_config_rejects(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SamplingConfig(**kwargs)


def test_sampling_settings_leave_out_n_and_are_json():
    a = SamplingConfig(n=1, temperature=0.6, stop=["</answer>"])
    b = SamplingConfig(n=8, temperature=0.6, stop=("</answer>",), logprobs=True)
    assert a.settings() == b.settings()
    assert "n" not in a.settings()
    assert json.loads(json.dumps(a.settings())) == a.settings()
    assert a.stop == ("</answer>",)
    assert SamplingConfig(temperature=0.7).settings() != a.settings()


def test_model_spec_validation_and_settings(tiny_model_dir):
    with pytest.raises(ConfigError, match="logprobs_mode"):
        ModelSpec(name="m", path="p", logprobs_mode="weird")
    with pytest.raises(ConfigError, match="dtype"):
        ModelSpec(name="m", path="p", dtype="int3")
    with pytest.raises(ConfigError, match="kv_cache_gib"):
        ModelSpec(name="m", path="p", kv_cache_gib=0)
    spec = ModelSpec(name="tiny", path=str(tiny_model_dir))
    settings = spec.settings()
    assert settings["dtype"] == "auto" and settings["logprobs_mode"] == "raw"
    assert settings["chat_template"] is not None  # hash of the template saved with the model
    override = ModelSpec(name="tiny", path=str(tiny_model_dir), chat_template="{{ messages[0]['content'] }}")
    assert template_hash(override) != settings["chat_template"]
    assert ModelSpec(name="served", path="served-name").settings()["chat_template"] is None


def test_request_validation():
    with pytest.raises(ConfigError, match="n=0"):
        GenerationRequest(key="a", messages=[{"role": "user", "content": "x"}], n=0)
    with pytest.raises(ConfigError, match="sample_offset"):
        GenerationRequest(key="a", messages=[{"role": "user", "content": "x"}], n=1, sample_offset=-1)
    with pytest.raises(ConfigError, match="no messages"):
        GenerationRequest(key="a", messages=[], n=1)


def test_sample_seeds_are_stable_and_distinct():
    seeds = [sample_seed(0, "prompt-a", i) for i in range(64)]
    assert seeds == [sample_seed(0, "prompt-a", i) for i in range(64)]
    assert len(set(seeds)) == 64
    assert sample_seed(0, "prompt-b", 0) != seeds[0]
    assert sample_seed(1, "prompt-a", 0) != seeds[0]
    assert all(0 <= s < 2**31 for s in seeds)
    assert 0 <= sample_seed(None, "prompt-a", 0) < 2**31


def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        make_backend("sglang", ModelSpec(name="m", path="p"))
    assert "openai" in str(info.value) and "transformers" in str(info.value) and "vllm" in str(info.value)


def test_wrong_backend_option_is_a_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="unexpected keyword"):
        make_backend("openai", ModelSpec(name="m", path="p"), base_url="http://x")


def test_model_string_is_resolved(tmp_path):
    with pytest.raises(BackendError, match=str(tmp_path / "missing")):
        make_backend("vllm", str(tmp_path / "missing"))


def test_import_is_light():
    code = (
        "import sys, dypo_data.backends, dypo_data.models, dypo_data.backends.vllm_engine, "
        "dypo_data.backends.openai_server, dypo_data.backends.hf, dypo_data.backends.server_process; "
        "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_engine_arguments_on_cpu(tiny_model_dir, monkeypatch):
    from dypo_data.backends.cpu import CpuProfile, plan_cpu_engine
    from dypo_data.backends.vllm_engine import engine_kwargs, set_cpu_kv_cache

    spec = ModelSpec(name="m", path=str(tiny_model_dir), logprobs_mode="processed", max_num_seqs=4, max_model_len=512)
    avx2 = CpuProfile(isa="avx2", model_name="test", cores=(0, 1))
    cpu = engine_kwargs(spec, cpu=plan_cpu_engine(avx2, dtype="auto", context_tokens=512, environ={}))
    assert cpu["enable_chunked_prefill"] is False  # per-sample seeds crash with chunked prefill on CPU
    assert cpu["max_num_batched_tokens"] == 2048  # bounded: not the model's whole context
    assert cpu["dtype"] == "float32"  # bf16 would be emulated on AVX2
    assert cpu["logprobs_mode"] == "processed_logprobs" and cpu["max_num_seqs"] == 4
    gpu = engine_kwargs(spec, cpu=None)
    assert "enable_chunked_prefill" not in gpu and "max_num_batched_tokens" not in gpu and gpu["dtype"] == "auto"
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "9")
    set_cpu_kv_cache(1.5)
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"  # whole GiB, rounded up


def test_server_command_on_cpu(tiny_model_dir):
    from dypo_data.backends.server_process import server_command

    cmd = server_command(ModelSpec(name="teacher", path=str(tiny_model_dir)), port=8123, cpu=True)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--no-enable-chunked-prefill" in cmd and "--enforce-eager" in cmd
    assert cmd[cmd.index("--served-model-name") + 1] == "teacher" and cmd[cmd.index("--port") + 1] == "8123"
