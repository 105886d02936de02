"""What this CPU runs fast, and the vLLM-CPU settings that follow from it.

Machines that look alike (2 cores, 24 GiB) differ underneath. Where the CPU has native bf16
(AVX512-BF16 or AMX) vLLM runs a bf16 model at full speed; where it has AVX2 only, bf16 is
emulated and the same model runs several times slower than in float32. Measured with SmolLM2-135M
on a 2-core AMD EPYC (AVX2 only), 8 prompts x 4 samples x 64 tokens: 13 tokens/s in bf16, 53 in
float32, 74 in float32 with OpenMP on both cores instead of vLLM's default of one.

`detect_cpu()` reads the CPU (or the `DYPO_CPU_ISA` override, so the AVX2 choices can be exercised
on any machine) and `plan_cpu_engine()` turns it into settings, each with its reason:

- dtype: `auto` stays the model's own dtype where bf16 is native and becomes float32 where it is
  emulated. An explicit dtype is always kept.
- OpenMP binding: vLLM's `auto` binding keeps one core for its scheduler, which on a machine with
  few cores halves the cores that compute; there the engine's threads are bound to every core this
  process may use. A `VLLM_CPU_OMP_THREADS_BIND` of the user's own is kept.
- step size: chunked prefill is off on CPU (per-sample seeds crash with it), so one engine step
  prefills whole prompts up to `max_num_batched_tokens`. The plan bounds it at `STEP_TOKENS`
  (or the context length, if longer) on every CPU, so no single step runs for minutes.
- step timeout: vLLM kills the engine when one step outlives `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS`
  (300 s by default). On CPU the plan raises it to `STEP_TIMEOUT_S`: a slow or oversubscribed
  CPU makes a job slower, not dead. A value of the user's own is kept.

Only the step bound and the timeout apply to every CPU; they do not depend on what is detected.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dypo_data.errors import ConfigError

log = logging.getLogger(__name__)  # the CLIs show its INFO lines: what was chosen for this CPU

ISA_ENV = "DYPO_CPU_ISA"
# From least to most capable. "avx512_bf16" and "amx" have native bf16 arithmetic.
ISA_LEVELS = ("other", "avx2", "avx512", "avx512_bf16", "amx")
NATIVE_BF16 = frozenset({"avx512_bf16", "amx"})
STEP_TOKENS = 2048  # prompt tokens one CPU engine step may prefill (more only if one prompt needs it)
STEP_TIMEOUT_S = 3600  # seconds one CPU engine step may take before vLLM declares the engine dead
FEW_CORES = 8  # up to this many usable cores, vLLM's reserved scheduler core costs too much compute
_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
_TIMEOUT_ENV = "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"
_ENGINE_TITLE = "VLLM::"  # vLLM titles its engine processes VLLM::EngineCore, VLLM::Worker, ...


@dataclass(frozen=True)
class CpuProfile:
    """The CPU this process runs on, as far as choosing engine settings goes."""

    isa: str  # one of ISA_LEVELS: the best vector extension present
    model_name: str  # lscpu's "Model name" (/proc/cpuinfo's model name)
    cores: tuple[int, ...]  # logical CPUs this process may run on (its affinity mask)
    source: str = "detected"  # "detected" or the override that set `isa`

    @property
    def native_bf16(self) -> bool:
        return self.isa in NATIVE_BF16

    def describe(self) -> str:
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        forced = f", forced by {self.source}" if self.source != "detected" else ""
        return f"{self.model_name} ({self.isa}, {bf16}{forced}; {len(self.cores)} cores)"


@dataclass(frozen=True)
class CpuEnginePlan:
    """vLLM settings for one engine on this CPU, and why (see the module docstring)."""

    profile: CpuProfile
    dtype: str
    step_tokens: int
    omp_bind: str | None  # value for VLLM_CPU_OMP_THREADS_BIND; None: leave vLLM's (or the user's)
    step_timeout_s: int | None  # value for VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS; None: the user's
    reasons: tuple[str, ...] = field(default=())

    def environment(self) -> dict[str, str]:
        """Environment variables to set before the engine starts."""
        env = {}
        if self.omp_bind is not None:
            env[_BIND_ENV] = self.omp_bind
        if self.step_timeout_s is not None:
            env[_TIMEOUT_ENV] = str(self.step_timeout_s)
        return env

    def describe(self) -> str:
        """One line: what was chosen and why."""
        return f"cpu {self.profile.describe()}: " + "; ".join(self.reasons)


def cpu_flags(cpuinfo: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo text."""
    name, flags = "", frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if name and flags:
            break
    return name, flags


def isa_level(flags: frozenset[str]) -> str:
    """The best ISA_LEVELS entry the flags show."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def detect_cpu(environ: Mapping[str, str] | None = None, cpuinfo_path: str = "/proc/cpuinfo") -> CpuProfile:
    """This machine's CPU; `DYPO_CPU_ISA=avx2|avx512|avx512_bf16|amx` overrides the detected ISA."""
    environ = os.environ if environ is None else environ
    try:
        name, flags = cpu_flags(Path(cpuinfo_path).read_text())
    except OSError:  # not Linux: no flags to read, so assume nothing native
        name, flags = platform.processor(), frozenset()
    cores = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else tuple(range(os.cpu_count() or 1))
    forced = environ.get(ISA_ENV, "").strip().lower()
    if forced:
        if forced not in ISA_LEVELS[1:]:
            raise ConfigError(f"{ISA_ENV}={forced!r} is not a CPU level dypo knows",
                              f"use one of {', '.join(ISA_LEVELS[1:])}, or unset it to detect the CPU")
        return CpuProfile(isa=forced, model_name=name or "unknown CPU", cores=cores, source=f"{ISA_ENV}={forced}")
    return CpuProfile(isa=isa_level(flags), model_name=name or "unknown CPU", cores=cores)


def cpu_list(cores: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2,5", the list syntax of VLLM_CPU_OMP_THREADS_BIND."""
    parts, start = [], None
    for i, c in enumerate(cores):
        if start is None:
            start = c
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            parts.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(parts)


def plan_cpu_engine(
    profile: CpuProfile, *, dtype: str, context_tokens: int, environ: Mapping[str, str] | None = None,
) -> CpuEnginePlan:
    """Settings for one vLLM engine on `profile` asked to run `dtype` with `context_tokens` of context."""
    environ = os.environ if environ is None else environ
    reasons = []
    chosen = "float32" if dtype == "auto" and not profile.native_bf16 else dtype
    if chosen == "auto":
        reasons.append("the model's dtype (bf16 is native here)")
    elif chosen in ("float32", "float") and not profile.native_bf16:
        reasons.append("float32 (bf16 would be emulated here: measured ~4x slower)")
    elif chosen in ("bfloat16",) and not profile.native_bf16:
        reasons.append("bfloat16 as asked (emulated here: expect ~4x slower than float32)")
    else:
        reasons.append(f"{chosen} as asked")
    step_tokens = max(STEP_TOKENS, context_tokens)
    reasons.append(f"steps of at most {step_tokens} prompt tokens")
    bind = None
    if environ.get(_BIND_ENV):
        reasons.append(f"OpenMP binding {_BIND_ENV}={environ[_BIND_ENV]} (yours)")
    elif len(profile.cores) <= FEW_CORES:
        bind = cpu_list(profile.cores)
        reasons.append(f"OpenMP on cores {bind} (vLLM would keep one of {len(profile.cores)} for its scheduler)")
    timeout = None
    if environ.get(_TIMEOUT_ENV):
        reasons.append(f"step timeout {environ[_TIMEOUT_ENV]} s (yours)")
    else:
        timeout = STEP_TIMEOUT_S
        reasons.append(f"step timeout {timeout} s (vLLM's 300 s kills slow CPUs)")
    return CpuEnginePlan(profile=profile, dtype=chosen, step_tokens=step_tokens, omp_bind=bind,
                         step_timeout_s=timeout, reasons=tuple(reasons))


def running_engines(proc: str = "/proc") -> list[int]:
    """Pids of vLLM engine processes on this machine that this process did not start (by process title)."""
    root = Path(proc)
    if not root.is_dir():
        return []
    ours = os.getpid()
    found = []
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:  # the process ended, or is not ours to read
            continue
        if title.startswith(_ENGINE_TITLE) and ours not in _ancestors(root, int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _ancestors(root: Path, pid: int, depth: int = 4) -> set[int]:
    """Parent, grandparent, ... of `pid`, `depth` levels up (vLLM's worker is a grandchild)."""
    found = set()
    for _ in range(depth):
        try:
            status = (root / str(pid) / "status").read_text()
        except OSError:
            break
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
        if ppid <= 1:
            break
        found.add(ppid)
        pid = ppid
    return found


def announce(line: str) -> None:
    """Log a line about the chosen CPU settings (the CLIs show these without --verbose)."""
    log.info("%s", line)
