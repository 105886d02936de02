"""Checks of what a run's rollout settings need from this machine, made before any engine or server starts.

- `rollout.weight_transfer=nccl | ipc` uses vLLM's NCCL / CUDA-IPC engines: they need a CUDA GPU here.
- `rollout.tensor_parallel_size` > 1 splits each process's in-process engine over that many GPUs: the processes
  on this machine times it must fit the visible GPUs. On CPU it must be 1 (each colocated engine already has
  its own cores; vLLM-CPU's tensor parallelism runs in worker processes, which the in-process engine does not
  start).
"""

from __future__ import annotations

import os
from typing import Any

from dypo_data.errors import ConfigError

ENGINE_BACKENDS = ("nccl", "ipc")


def require_cuda(choice: str, *, option: str = "rollout.weight_transfer") -> None:
    """ConfigError unless this process sees a CUDA GPU, when `choice` is one of vLLM's nccl or ipc engines."""
    import torch

    if choice in ENGINE_BACKENDS and not torch.cuda.is_available():
        raise ConfigError(f"{option}={choice} needs a CUDA GPU, and this machine has none",
                          f"use {option}=shared_path (weights written once and reloaded by every server)")


def check_tensor_parallel(tp: int, *, local_processes: int, gpus: int) -> None:
    """ConfigError unless `local_processes` engines of `tp` GPUs each fit `gpus` GPUs (tp must be 1 without GPUs)."""
    if tp == 1:
        return
    if gpus == 0:
        raise ConfigError(f"rollout.tensor_parallel_size={tp} needs GPUs, and this machine has none",
                          "use rollout.tensor_parallel_size=1 on CPU (run more processes instead)")
    if local_processes * tp > gpus:
        raise ConfigError(f"rollout.tensor_parallel_size={tp} x {local_processes} processes on this machine needs "
                          f"{local_processes * tp} GPUs, and {gpus} are visible",
                          f"use rollout.tensor_parallel_size={max(1, gpus // local_processes)} or fewer processes")


def check_rollout_devices(rollout: Any) -> None:
    """The checks above for a run's `rollout` config (RolloutConfig), on this machine."""
    import torch

    if rollout.backend == "server":
        require_cuda(rollout.weight_transfer)
    else:
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
        check_tensor_parallel(rollout.tensor_parallel_size, local_processes=local,
                              gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
