"""Data-parallel online rollouts: every process samples its share of a step's prompts with its own engine.

    accelerate launch --multi_gpu --num_processes 2 -m dypo_train.cli run --mode online ...

Each of the N processes (ranks) draws the step's prompts in the same seeded order, samples, grades and
stores the prompts `units[rank::N]` (`local_share`) with its own in-process engine, then the ranks
exchange their groups (`exchange`, one all-gather of token ids, logprobs and rewards) so that every rank
plans the whole step, as the offline trainer does: the same tiers, routes and whole-step denominators
everywhere, each rank training its share. Each rank writes its own traces and verdicts shards (a shard
per rank and step, no row twice); train_samples and train_metrics come from rank 0 alone, as offline.

Sample i of prompt p is seeded with `sample_seed(seed, p, i)`, so which rank samples a prompt changes
nothing: one process and N processes draw the same rollouts.

CPU: the in-process engine runs on the threads of its process (vLLM's VLLM_CPU_OMP_THREADS_BIND only
binds the workers of its multiprocess executor), and N engines left on the same cores starve each other.
`bind_to_cores` gives each local rank its own slice of the allowed cores (`rank_cores`) before its
engine starts: the affinity of every thread of the process, torch's thread count, and
VLLM_CPU_OMP_THREADS_BIND for any worker process vLLM starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_SUMMED = ("rollout/tokens",)  # counts added over ranks; every other timing is the slowest rank's
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def local_share(units: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The units (prompts) rank `rank` of `world_size` samples: dealt round-robin, in order."""
    return list(units[rank::world_size])


def merge_shares(shares: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of `local_share` over every rank: shares[r] = local_share(units, r, len(shares)) -> units."""
    world = len(shares)
    total = sum(len(s) for s in shares)
    return [shares[i % world][i // world] for i in range(total)]


def merge_timings(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """One step's data-phase metrics over ranks: counts summed, times (and staleness) the largest, and the
    rollout throughput of the whole step (all ranks' tokens over the slowest rank's generation time)."""
    keys = {k for t in per_rank for k in t}
    out = {k: (sum if k in _SUMMED else max)(t[k] for t in per_rank if k in t) for k in keys}
    if "rollout/tokens" in out and "time/generate" in out:
        out["perf/rollout_tokens_per_s"] = out["rollout/tokens"] / max(out["time/generate"], 1e-9)
    return out


def exchange(item: T, accelerator: Any) -> list[T]:
    """Every rank's `item` (picklable), in rank order; [item] on one process. A collective: every rank calls it,
    from the thread that runs the training step's collectives."""
    if accelerator.num_processes == 1:
        return [item]
    import torch.distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, item)
    return out


def rank_cores(local_rank: int, local_world_size: int, cpus: Sequence[int]) -> list[int]:
    """The cores of local rank `local_rank`: `cpus` cut into `local_world_size` contiguous slices, the first
    ones one larger when they do not divide evenly; every rank gets at least one (shared when too few)."""
    cpus = sorted(cpus)
    if local_world_size > len(cpus):
        return [cpus[local_rank % len(cpus)]]
    base, extra = divmod(len(cpus), local_world_size)
    start = local_rank * base + min(local_rank, extra)
    return cpus[start:start + base + (1 if local_rank < extra else 0)]


def bind_to_cores(cores: Sequence[int]) -> None:
    """Pin every thread of this process (and those it starts) to `cores`, with one torch thread per core."""
    import torch

    for task in Path("/proc/self/task").iterdir():  # os.sched_setaffinity(0) would pin only the calling thread
        try:
            os.sched_setaffinity(int(task.name), cores)
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            continue
    os.sched_setaffinity(0, cores)
    torch._C.set_num_threads(len(cores))  # the public setter is a no-op once an in-process engine lives
    os.environ[BIND_ENV] = ",".join(str(c) for c in cores)


def bind_local_rank(accelerator: Any) -> list[int] | None:
    """On CPU with several processes on this machine: bind this one to its own cores (`rank_cores`); returns
    them (None when nothing was bound: one process, or an accelerator device)."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or accelerator.num_processes)
    if local_world <= 1 or accelerator.device.type != "cpu" or not hasattr(os, "sched_setaffinity"):
        return None
    cores = rank_cores(accelerator.local_process_index, local_world, sorted(os.sched_getaffinity(0)))
    bind_to_cores(cores)
    log.info("rank %d: rollouts and training on cores %s", accelerator.process_index, cores)
    return cores
