"""What the CPU runs fast, and the vLLM settings chosen from it (cpu.py): no engine needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dypo_data.backends import ModelSpec
from dypo_data.backends.cpu import (
    STEP_TIMEOUT_S,
    STEP_TOKENS,
    CpuProfile,
    cpu_flags,
    cpu_list,
    detect_cpu,
    isa_level,
    plan_cpu_engine,
    running_engines,
)
from dypo_data.errors import ConfigError

# /proc/cpuinfo heads of two machines of this project's kind (flags shortened to what matters).
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse avx avx2 avx512f avx512dq avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
ICELAKE = "model name\t: Intel Xeon Ice Lake\nflags\t\t: avx avx2 avx512f avx512bw avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


@pytest.mark.parametrize(
    ("text", "name", "isa"),
    [(EPYC_AVX2, "AMD EPYC", "avx2"), (XEON_AMX, "Intel(R) Xeon(R) Platinum 8481C", "amx"),
     (ICELAKE, "Intel Xeon Ice Lake", "avx512"), (ARM, "", "other")],
)
def test_cpu_flags_and_isa_level(text, name, isa):
    model, flags = cpu_flags(text)
    assert model == name
    assert isa_level(flags) == isa


def test_isa_levels_with_native_bf16():
    assert isa_level(frozenset({"avx2", "avx512f", "avx512_bf16"})) == "avx512_bf16"
    assert CpuProfile("avx512_bf16", "x", (0,)).native_bf16 and CpuProfile("amx", "x", (0,)).native_bf16
    assert not CpuProfile("avx512", "x", (0,)).native_bf16 and not CpuProfile("avx2", "x", (0,)).native_bf16


def test_detect_reads_the_file_and_the_override_wins(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(XEON_AMX)
    real = detect_cpu(environ={}, cpuinfo_path=str(info))
    assert real.isa == "amx" and real.native_bf16 and real.source == "detected"
    assert set(real.cores) <= set(range(os.cpu_count() or 1)) and real.cores
    forced = detect_cpu(environ={"DYPO_CPU_ISA": "AVX2"}, cpuinfo_path=str(info))
    assert forced.isa == "avx2" and not forced.native_bf16
    assert "DYPO_CPU_ISA=avx2" in forced.describe() and "no native bf16" in forced.describe()
    missing = detect_cpu(environ={}, cpuinfo_path=str(tmp_path / "absent"))
    assert missing.isa == "other"  # nothing known: nothing assumed native


def test_bad_override_names_the_variable_and_the_choices():
    with pytest.raises(ConfigError, match="DYPO_CPU_ISA='avx9'") as info:
        detect_cpu(environ={"DYPO_CPU_ISA": "avx9"})
    assert "avx2" in info.value.hint and "amx" in info.value.hint


def test_this_machine_is_detected():
    profile = detect_cpu(environ={})
    assert profile.isa in ("other", "avx2", "avx512", "avx512_bf16", "amx")
    assert profile.describe()


@pytest.mark.parametrize(("cores", "text"), [((0,), "0"), ((0, 1), "0-1"), ((0, 1, 2, 5, 7, 8), "0-2,5,7-8")])
def test_cpu_list(cores, text):
    assert cpu_list(cores) == text


AVX2 = CpuProfile("avx2", "AMD EPYC", (0, 1))
AMX = CpuProfile("amx", "Xeon", (0, 1))


def test_auto_dtype_follows_native_bf16_and_explicit_dtypes_are_kept():
    assert plan_cpu_engine(AVX2, dtype="auto", context_tokens=512, environ={}).dtype == "float32"
    assert plan_cpu_engine(AMX, dtype="auto", context_tokens=512, environ={}).dtype == "auto"
    slow = plan_cpu_engine(AVX2, dtype="bfloat16", context_tokens=512, environ={})
    assert slow.dtype == "bfloat16" and "emulated" in slow.describe()
    assert plan_cpu_engine(AMX, dtype="float32", context_tokens=512, environ={}).dtype == "float32"


def test_step_bound_and_timeout_do_not_depend_on_the_cpu():
    for profile in (AVX2, AMX, CpuProfile("other", "?", tuple(range(64)))):
        short = plan_cpu_engine(profile, dtype="auto", context_tokens=512, environ={})
        assert short.step_tokens == STEP_TOKENS
        assert short.environment()["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == str(STEP_TIMEOUT_S)
        long = plan_cpu_engine(profile, dtype="auto", context_tokens=8192, environ={})
        assert long.step_tokens == 8192  # a whole context must fit one step (chunked prefill is off)


def test_threads_bind_every_core_of_a_small_machine_only():
    small = plan_cpu_engine(AVX2, dtype="auto", context_tokens=512, environ={})
    assert small.environment()["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    big = plan_cpu_engine(CpuProfile("amx", "Xeon", tuple(range(32))), dtype="auto", context_tokens=512, environ={})
    assert "VLLM_CPU_OMP_THREADS_BIND" not in big.environment()  # vLLM's own binding is fine there


def test_the_users_own_settings_are_kept():
    env = {"VLLM_CPU_OMP_THREADS_BIND": "1", "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "900"}
    plan = plan_cpu_engine(AVX2, dtype="auto", context_tokens=512, environ=env)
    assert plan.environment() == {}
    assert "(yours)" in plan.describe()


def test_the_plan_is_one_line_with_its_reasons():
    line = plan_cpu_engine(AVX2, dtype="auto", context_tokens=512, environ={}).describe()
    assert "\n" not in line
    for fragment in ("AMD EPYC", "avx2", "float32", "2048", "cores 0-1", "3600"):
        assert fragment in line


def _fake_process(proc: Path, pid: int, title: str, ppid: int) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(title.encode() + b"\0--flag\0")
    (proc / str(pid) / "status").write_text(f"Name:\tpython\nPPid:\t{ppid}\n")


def test_running_engines_are_found_by_title_and_ours_are_left_out(tmp_path):
    ours = os.getpid()
    _fake_process(tmp_path, ours, "python", 1)
    _fake_process(tmp_path, 900001, "VLLM::EngineCore", 1)  # someone else's
    _fake_process(tmp_path, 900002, "VLLM::Worker_TP0", 900001)
    _fake_process(tmp_path, 900003, "VLLM::EngineCore", ours)  # our own child
    _fake_process(tmp_path, 900004, "VLLM::Worker", 900003)  # and grandchild
    _fake_process(tmp_path, 900005, "python train.py", 1)
    (tmp_path / "self").mkdir()
    assert running_engines(proc=str(tmp_path)) == [900001, 900002]
    assert running_engines(proc=str(tmp_path / "absent")) == []


def test_resolve_spec_records_the_dtype_the_engine_runs(tiny_model_dir, monkeypatch):
    from dypo_data.backends import resolve_spec
    from dypo_data.backends.vllm_engine import vllm_is_cpu_build

    spec = ModelSpec(name="m", path=str(tiny_model_dir))
    assert resolve_spec("openai", spec) is spec
    if not vllm_is_cpu_build():
        assert resolve_spec("vllm", spec) is spec
        return
    monkeypatch.setenv("DYPO_CPU_ISA", "avx2")
    assert resolve_spec("vllm", spec).dtype == "float32"
    monkeypatch.setenv("DYPO_CPU_ISA", "amx")
    assert resolve_spec("vllm", spec).dtype == "auto"
    assert resolve_spec("vllm", ModelSpec(name="m", path=str(tiny_model_dir), dtype="bfloat16")).dtype == "bfloat16"


def test_fit_context_sizes_the_engine_to_the_prompts(tiny_model_dir):
    from dypo_data.backends import fit_context
    from dypo_data.backends.vllm_engine import model_max_len, vllm_is_cpu_build

    spec = ModelSpec(name="m", path=str(tiny_model_dir))
    messages = [[{"role": "user", "content": "x" * n}] for n in (10, 300, 40)]
    assert fit_context("openai", spec, messages, 100) is spec
    fitted = fit_context("vllm", spec, messages, 100)
    if not vllm_is_cpu_build():
        assert fitted is spec
        return
    assert fitted.max_model_len % 256 == 0 and 400 < fitted.max_model_len <= 768  # 300+ prompt chars + 100
    assert fit_context("vllm", spec, messages, 10**6).max_model_len == model_max_len(tiny_model_dir)  # capped
    fixed = ModelSpec(name="m", path=str(tiny_model_dir), max_model_len=1000)
    assert fit_context("vllm", fixed, messages, 100) is fixed
    assert fit_context("vllm", spec, [], 100) is spec
