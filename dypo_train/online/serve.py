"""Start the vLLM servers a `rollout.backend=server` run samples from (`dypo-train serve-rollouts`).

Each server is `python -m vllm.entrypoints.openai.api_server` (dypo_data's `LocalServer`: the module entry
point, eager, a KV cache size, chunked prefill off for seeded requests on CPU) on the policy's directory,
serving it under the policy's name, in float32 with raw logprobs (so sampling logprobs match the trainer's),
with VLLM_SERVER_DEV_MODE=1 for the weight routes. On CPU each server is bound to its own slice of the
cores (VLLM_CPU_OMP_THREADS_BIND: the server's workers are separate processes, which vLLM binds).

`weight_transfer` is the run's rollout.weight_transfer: shared_path needs nothing more; nccl and ipc start the
servers with vLLM's `--weight-transfer-config '{"backend": ...}'` (ipc also with VLLM_ALLOW_INSECURE_SERIALIZATION=1:
its CUDA IPC handles travel pickled over HTTP) and need CUDA, which is checked before any server starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dypo_data.backends import ModelSpec
from dypo_data.backends.server_process import LocalServer
from dypo_data.errors import ConfigError
from dypo_train.online.devices import ENGINE_BACKENDS, require_cuda
from dypo_train.online.distributed import BIND_ENV, rank_cores

DEV_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
TRANSFERS = ("shared_path", *ENGINE_BACKENDS)


def rollout_server_spec(model_dir: str | os.PathLike, *, name: str, dtype: str = "float32", kv_cache_gib: float = 1.0,
                        max_model_len: int | None = None, tensor_parallel_size: int = 1) -> ModelSpec:
    """The model spec of a rollout server: the policy under `name`, eager, raw logprobs."""
    return ModelSpec(name=name, path=str(Path(model_dir).expanduser()), dtype=dtype, kv_cache_gib=kv_cache_gib,
                     max_model_len=max_model_len, enforce_eager=True, logprobs_mode="raw",
                     tensor_parallel_size=tensor_parallel_size)


def transfer_args(weight_transfer: str) -> list[str]:
    """The server's command-line arguments for rollout.weight_transfer=`weight_transfer` (vLLM's WeightTransferConfig)."""
    if weight_transfer not in ENGINE_BACKENDS:
        return []
    return ["--weight-transfer-config", json.dumps({"backend": weight_transfer})]


def server_env(index: int, count: int, *, cpu: bool, weight_transfer: str = "shared_path") -> dict[str, str]:
    """Environment of server `index` of `count`: dev routes on; ipc handles accepted pickled; on CPU its own cores."""
    env = dict(DEV_ENV)
    if weight_transfer == "ipc":
        env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    if cpu and hasattr(os, "sched_getaffinity"):
        cores = rank_cores(index, count, sorted(os.sched_getaffinity(0)))
        env[BIND_ENV] = ",".join(str(c) for c in cores)
    return env


def start_rollout_servers(spec: ModelSpec, *, count: int, host: str = "127.0.0.1", port: int = 8001,
                          log_dir: str | os.PathLike | None = None, startup_timeout_s: float = 300.0,
                          weight_transfer: str = "shared_path") -> list[LocalServer]:
    """`count` servers on ports port, port + 1, ...; every one ready (or all stopped and the error raised)."""
    from dypo_data.backends.vllm_engine import vllm_is_cpu_build

    if weight_transfer not in TRANSFERS:
        raise ConfigError(f"--weight-transfer={weight_transfer!r} is not one of {', '.join(TRANSFERS)}",
                          "use the run's rollout.weight_transfer (shared_path unless the trainer has CUDA)")
    require_cuda(weight_transfer, option="--weight-transfer")
    cpu = vllm_is_cpu_build()
    servers: list[LocalServer] = []
    try:
        for i in range(count):
            log_path = Path(log_dir) / f"rollout-server-{port + i}.log" if log_dir else None
            servers.append(LocalServer(spec, host=host, port=port + i, log_path=log_path, startup_timeout_s=startup_timeout_s,
                                       env=server_env(i, count, cpu=cpu, weight_transfer=weight_transfer),
                                       extra_args=transfer_args(weight_transfer)).start())
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
