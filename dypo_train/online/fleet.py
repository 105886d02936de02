"""ServerFleet: policy rollouts from running vLLM servers whose weights follow the trainer (`rollout.backend=server`).

    fleet = ServerFleet(spec, ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"], weight_dir="runs/x/weights")
    fleet.load_weights(model.state_dict(), version=0)          # every server now holds the trainer's weights
    groups = fleet.generate(prompts, k=8, temperature=1.0, top_p=1.0, max_tokens=512, seed=rollout_seed(seed, step))
    fleet.load_weights(model.state_dict(), version=1)           # after the update
    fleet.close()

The same calls as `RolloutEngine`, so `OnlineSource` drives either. Requests go through dypo_data's
OpenAI-compatible fleet client (`OpenAIBackend`: each call to the least busy live server, retries with
backoff elsewhere, timeouts), one call per sample with the per-sample seed, so the rollouts are those
the in-process engine would draw. Weights go through the transport `weight_transfer` names: `SharedPathTransport`
(weight_transfer.py, the default) or vLLM's own nccl / ipc engines (`EngineTransport`, vllm_transfer.py); the
fleet calls the same four methods of either.

The policy version is checked around every generation: before it, a live server reporting another
version than the last push (it was down at the push, or restarted with its original weights) gets the
current weights again; after it, every server must still report that version, or the step's samples
might come from other weights and the step fails (resume it). A server that dies mid-step loses its
calls to the others; with none left the step fails with a one-line error, the last checkpoint intact.

Start the servers with `dypo-train serve-rollouts` (VLLM_SERVER_DEV_MODE=1, fp32, eager, the policy's name
as the served model name, `--logprobs-mode raw_logprobs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from dypo_data.backends import GenerationRequest, ModelSpec
from dypo_data.errors import BackendError, ConfigError
from dypo_train.online.engine import RolloutSample, check_state_dict, checkpoint_shapes, rollout_sampling
from dypo_train.online.weight_transfer import SharedPathTransport

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "auto": "float32"}


class ServerFleet:
    """Rollouts from vLLM servers, weights pushed after each update; see the module docstring."""

    def __init__(self, spec: ModelSpec, base_urls: Sequence[str], *, weight_dir: str | os.PathLike, seed: int = 0,
                 timeout_s: float = 600.0, max_retries: int = 4, cooldown_s: float = 2.0,
                 weight_transfer: str = "shared_path", bucket_bytes: int = 1 << 30, nccl_address: str = "",
                 nccl_port: int = 0) -> None:
        """`weight_transfer`, `bucket_bytes`, `nccl_address`, `nccl_port`: rollout.weight_transfer and its settings."""
        import torch

        from dypo_data.backends.openai_server import OpenAIBackend

        self.spec, self.seed = spec, seed
        self.dtype = getattr(torch, _DTYPES[spec.dtype])
        # first: building a transport contacts no server, and nccl / ipc without CUDA are refused there
        self.transport = make_transport(weight_transfer, base_urls, weight_dir=weight_dir, dtype=self.dtype,
                                        timeout_s=timeout_s, bucket_bytes=bucket_bytes, nccl_address=nccl_address,
                                        nccl_port=nccl_port)
        self.client = OpenAIBackend(spec, base_urls=list(base_urls), timeout_s=timeout_s, max_retries=max_retries,
                                    cooldown_s=cooldown_s)
        if self.client.served_model != spec.name:
            raise ConfigError(f"the servers at {', '.join(base_urls)} serve model {self.client.served_model!r}, not the policy "
                              f"{spec.name!r}", "start them on the policy with --served-model-name set to model.name "
                              "(dypo-train serve-rollouts does)")
        self.weight_shapes = checkpoint_shapes(spec.path)
        self.version: int | None = None  # the policy version every server should hold
        self.start_seconds = 0.0

    # -- rollouts -------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[tuple[str, list[dict]]], *, k: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[RolloutSample]]:
        """k samples for each (prompt_id, chat messages), in the order given: (B, G) samples, from servers that hold
        policy version `self.version` (checked before and after)."""
        self.resync()
        sampling = rollout_sampling(k=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                    seed=self.seed if seed is None else seed)
        requests = [GenerationRequest(key=pid, messages=list(messages), n=k) for pid, messages in prompts]
        results = {r.key: r for r in self.client.generate(requests, sampling)}
        self.check_versions()
        return [[_sample(results[r.key], c) for c in results[r.key].completions] for r in requests]

    # -- weights --------------------------------------------------------------------------------

    def load_weights(self, state_dict: Mapping[str, Any], *, version: int) -> float:
        """Send `state_dict` as policy version `version` to every live server; returns the seconds."""
        import time

        started = time.perf_counter()
        if self.weight_shapes is not None:
            check_state_dict(state_dict, self.weight_shapes)
        missed = self.transport.push(state_dict, version)
        self.version = version
        if len(missed) == len(self.transport.urls):
            raise self._none_left()
        return time.perf_counter() - started

    def resync(self) -> None:
        """Push the current version again to every live server that reports another one (missed a push, restarted)."""
        if self.version is None:
            return
        live = self.transport.versions()
        if not live:
            raise self._none_left()
        behind = [url for url, v in live.items() if v != str(self.version)]
        if behind:
            log.warning("servers %s hold another policy version than %d; pushing it again", behind, self.version)
            self.transport.repush(behind, self.version)

    def check_versions(self) -> None:
        """BackendError unless every live server still reports `self.version` (none changed during the generation)."""
        if self.version is None:
            return
        wrong = {url: v for url, v in self.transport.versions().items() if v != str(self.version)}
        if wrong:
            raise BackendError(f"servers changed policy version while sampling (expected {self.version}): {wrong}",
                               "a server restarted mid-step; resume the run with --resume (the last checkpoint is intact)")

    def _none_left(self) -> BackendError:
        return BackendError(f"no rollout server answers at {', '.join(self.transport.urls)}",
                            "start them again (dypo-train serve-rollouts), then continue with dypo-train run --resume RUN_DIR")

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            self.client.close()


def make_transport(choice: str, base_urls: Sequence[str], *, weight_dir: str | os.PathLike, dtype: Any, timeout_s: float,
                   bucket_bytes: int, nccl_address: str = "", nccl_port: int = 0) -> Any:
    """The transport of rollout.weight_transfer=`choice`: push / repush / versions / close, whichever it is."""
    if choice == "shared_path":
        return SharedPathTransport(weight_dir, base_urls, dtype=dtype, timeout_s=timeout_s)
    from dypo_train.online.vllm_transfer import EngineTransport

    return EngineTransport(base_urls, backend=choice, dtype=dtype, bucket_bytes=bucket_bytes, nccl_address=nccl_address,
                           nccl_port=nccl_port, timeout_s=timeout_s)


def _sample(result: Any, completion: Any) -> RolloutSample:
    if completion.token_ids is None or completion.logprobs is None or result.prompt_token_ids is None:
        raise BackendError("a rollout server returned no token ids or logprobs",
                           "serve the policy with vLLM (dypo-train serve-rollouts), which returns them")
    return RolloutSample(prompt_token_ids=list(result.prompt_token_ids), completion_token_ids=list(completion.token_ids),
                         logprobs=list(completion.logprobs), text=completion.text, finish_reason=completion.finish_reason)
