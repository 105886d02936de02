"""Online data: each step samples k rollouts per prompt from the weights being trained.

A step's data phase: draw the step's prompts from the store (same seeded order as offline), sample
k rollouts each with the in-process engine (`time/generate`), store them and their verdicts
(role policy, policy_version = the number of updates behind the weights that sampled them;
`time/verify`), and hand the groups to the trainer. After the update the new weights go into the
running engine (`time/weight_sync`). With several processes (`accelerate launch`), each samples, grades
and stores its share of the step's prompts with its own engine and the shares are exchanged before
planning (`dypo_train.online.distributed`).

With `rollout.max_staleness` N >= 1 (`rollout.overlap`: N = 1, one-step-stale, as the fastest RL
trainers do) the next N steps' rollouts are sampled in a background thread while this step trains,
with the weights from before this step's update; the engine is idle again before the weights are
pushed. The rollouts of step s are then sampled by policy version s - N at the oldest, which the
store records (`rollout/staleness` = s - version; `loss.rollout_correction` reweighs them).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dypo_data.backends.vllm_engine import model_max_len
from dypo_data.grading import VerifierConfig, VerifierPool
from dypo_train.config import TrainConfig
from dypo_train.online.distributed import bind_local_rank, exchange, local_share, merge_shares, merge_timings
from dypo_train.online.engine import RolloutEngine, rollout_sampling, rollout_seed
from dypo_train.online.rollouts import record_rows, rollout_rows
from dypo_train.stream.reader import StoreStream, total_steps
from dypo_train.stream.types import PromptGroup, Rollout

log = logging.getLogger(__name__)

Produced = tuple[list[PromptGroup], dict[str, float]]


class OnlineSource:
    """Samples, verifies and stores each step's rollout groups; see the module docstring."""

    def __init__(self, cfg: TrainConfig, setup: Any, *, policy_name: str, verifier_workers: int = 1,
                 min_context: int = 0) -> None:
        """`min_context`: tokens the engine must also hold besides a rollout (held-out evaluation's longest
        prompt plus eval.max_tokens)."""
        self.cfg, self.setup, self.policy_name = cfg, setup, policy_name
        d = cfg.data
        self.stream = StoreStream(d.store, unit_kind="prompt", teachers=d.teachers, max_teachers=d.max_teachers, seed=d.seed,
                                  prompt_split=d.prompt_split)
        self.batch = cfg.run.prompts_per_step
        self.run_id = ""  # set by the trainer (`bind`) before the first step
        self.acc = setup.accelerator
        self.cores = bind_local_rank(self.acc)  # several processes on CPU: each engine on its own cores
        self.engine = start_sampler(cfg, setup.model_path, name=policy_name,
                                    context=max(d.max_prompt_tokens + cfg.rollout.max_tokens, min_context))
        self.pool = VerifierPool(VerifierConfig(workers=verifier_workers))
        self.executor = None
        self.caller_threads = None
        self.staleness = cfg.rollout.staleness
        if self.staleness:  # rollouts and training run at once: each gets its share of the cores
            import torch

            self.caller_threads = torch.get_num_threads()
            rollout_threads, train_threads = split_threads(self.caller_threads)
            self.executor = _rollout_thread(rollout_threads)
            torch._C.set_num_threads(train_threads)
        self.pending: deque[tuple[int, Future]] = deque()  # (step, its rollouts), in step order
        self.version = 0  # optimizer updates applied to the engine's weights

    def bind(self, run_id: str, start_step: int) -> None:
        """The run's id (rollouts are stored under it) and the step a resumed run starts at."""
        self.run_id = run_id
        self.version = start_step
        if start_step > 0 or self.cfg.rollout.backend == "server":  # the engine started from the original weights; a
            # server may hold anything: every server gets the trainer's weights before the first step
            self.engine.load_weights(self.acc.unwrap_model(self.setup.model).state_dict(), version=start_step)

    def total_steps(self) -> int:
        return total_steps(self.stream.steps_per_epoch(self.batch), max_steps=self.cfg.run.max_steps, epochs=self.cfg.run.epochs)

    # -- data phase ----------------------------------------------------------------------------------

    def produce(self, step: int, version: int) -> Produced:
        """Sample, verify and store this process's share of the rollouts of `step` with the engine's weights
        (`version`); returns its groups, in step order, and its timings."""
        r = self.cfg.rollout
        units = local_share(self.stream.units_for_step(step, self.batch), self.acc.process_index, self.acc.num_processes)
        staleness = {"rollout/staleness": float(step - version)}
        if not units:  # more processes than prompts at this step
            return [], {"rollout/tokens": 0.0, **staleness}
        groups = self.stream.read(units)
        seed = rollout_seed(self.cfg.run.seed, step)
        started = time.perf_counter()
        samples = self.engine.generate([(g.prompt_id, g.messages) for g in groups], k=r.k, temperature=r.temperature,
                                       top_p=r.top_p, max_tokens=r.max_tokens, seed=seed)
        generated = time.perf_counter()
        sampling = rollout_sampling(k=r.k, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, seed=seed)
        ids = [g.prompt_id for g in groups]
        rows = rollout_rows(ids, samples, run_id=self.run_id, step=version, model=self.engine.spec, sampling=sampling,
                            gen_seconds=generated - started)
        rewards = record_rows(self.cfg.data.store, rows, {g.prompt_id: g.answer for g in groups}, pool=self.pool,
                              run_id=self.run_id, step=version)
        verified = time.perf_counter()
        out = [_with_rollouts(g, rows_b, samples_b, rewards_b) for g, rows_b, samples_b, rewards_b in zip(groups, rows, samples, rewards)]
        n_tokens = sum(len(s.completion_token_ids) for group in samples for s in group)
        return out, {"time/generate": generated - started, "time/verify": verified - generated,
                     "rollout/tokens": float(n_tokens), **staleness}

    def groups(self, step: int) -> Produced:
        """The whole step's groups (every process's share, exchanged) and the data phase's metrics over processes."""
        if self.executor is None:
            return self._whole_step(*self.produce(step, self.version))
        if not self.pending or self.pending[0][0] != step:  # first step (or a resumed run): nothing prefetched
            self._drain()
            self.pending.append((step, self.executor.submit(self.produce, step, self.version)))
        waited = time.perf_counter()
        groups, timings = self.pending.popleft()[1].result()
        timings["time/wait_rollouts"] = time.perf_counter() - waited
        total = self.total_steps()
        ahead = self.pending[-1][0] if self.pending else step
        while ahead < min(step + self.staleness, total - 1):  # sample ahead with these weights while this step trains
            ahead += 1
            self.pending.append((ahead, self.executor.submit(self.produce, ahead, self.version)))
        return self._whole_step(groups, timings)

    def _whole_step(self, groups: list[PromptGroup], timings: dict[str, float]) -> Produced:
        """Every process's share in step order (one all-gather, on the training thread), timings merged."""
        shares = exchange((groups, timings), self.acc)
        return merge_shares([g for g, _ in shares]), merge_timings([t for _, t in shares])

    def _drain(self) -> None:
        """Wait for every queued rollout job (the engine must be idle before its weights change)."""
        for _, future in self.pending:
            future.result()

    # -- weight sync ---------------------------------------------------------------------------------

    def after_update(self, step: int) -> dict[str, float]:
        waited = time.perf_counter()
        self._drain()  # the engine must be idle before its weights change
        wait = time.perf_counter() - waited
        model = self.setup.accelerator.unwrap_model(self.setup.model)
        seconds = self.engine.load_weights(model.state_dict(), version=step + 1)
        self.version = step + 1
        out = {"time/weight_sync": seconds}
        if self.executor is not None:
            out["time/wait_engine"] = wait
        return out

    def close(self) -> None:
        try:
            for _, future in self.pending:
                future.cancel()
                try:
                    future.result()
                except Exception:  # noqa: BLE001 - the run is ending; the first error was already raised
                    pass
            if self.executor is not None:
                self.executor.shutdown(wait=True)
        finally:
            self.pool.close()
            self.engine.close()
            self.stream.close()
            if self.caller_threads is not None:
                import torch

                torch._C.set_num_threads(self.caller_threads)


def start_sampler(cfg: TrainConfig, model_path: Any, *, name: str, context: int) -> Any:
    """What samples the rollouts (`rollout.backend`): an in-process engine, or the server fleet at rollout.base_urls."""
    if cfg.rollout.backend == "engine":
        return start_rollout_engine(cfg, model_path, name=name, context=context)
    from dypo_data.backends import ModelSpec
    from dypo_train.online.fleet import ServerFleet

    r = cfg.rollout
    weight_dir = r.weight_dir or str(Path(cfg.run.output_dir) / cfg.run.name / "weights")
    spec = ModelSpec(name=name, path=str(model_path), dtype=r.dtype)
    return ServerFleet(spec, r.base_urls, weight_dir=weight_dir, seed=cfg.run.seed, timeout_s=r.server_timeout_s,
                       weight_transfer=r.weight_transfer, bucket_bytes=r.weight_bucket_bytes, nccl_address=r.nccl_address,
                       nccl_port=r.nccl_port)


def start_rollout_engine(cfg: TrainConfig, model_path: Any, *, name: str, context: int) -> RolloutEngine:
    """An in-process engine of the policy at `model_path` with the run's rollout settings (`rollout.*`) and a
    context of `context` tokens (at most the model's own)."""
    longest = model_max_len(str(model_path))
    return RolloutEngine(
        str(model_path), dtype=cfg.rollout.dtype, kv_cache_gib=cfg.rollout.kv_cache_gib,
        max_model_len=min(context, longest) if longest else context, seed=cfg.run.seed,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, name=name,
        tensor_parallel_size=cfg.rollout.tensor_parallel_size, bucket_bytes=cfg.rollout.weight_bucket_bytes,
    )


def split_threads(total: int) -> tuple[int, int]:
    """(rollout, training) torch threads when both run at once: the cores are shared, not oversubscribed."""
    rollout = max(1, total // 2)
    return rollout, max(1, total - rollout)


def _rollout_thread(threads: int) -> ThreadPoolExecutor:
    """The background thread of `rollout.overlap`, running torch with `threads` threads.

    A new thread starts with OpenMP's default count, not a `set_num_threads` value, and vLLM's CPU
    attention sizes its scheduler metadata with the raw OpenMP count but runs its kernel with
    torch's: when they differ the engine dies ("thread_num == thread_num (2 vs. 1)"), so the
    thread sets both at its start.
    """
    import torch

    # torch._C: the public setter is a warning-only no-op while the in-process engine lives
    return ThreadPoolExecutor(1, thread_name_prefix="rollouts", initializer=torch._C.set_num_threads, initargs=(threads,))


def _with_rollouts(group: PromptGroup, rows: list[dict], samples: list, rewards: list) -> PromptGroup:
    rollouts = [
        Rollout(trace_id=row["trace_id"], sample_idx=row["sample_idx"], prompt_token_ids=list(s.prompt_token_ids),
                completion_token_ids=list(s.completion_token_ids), logprobs=list(s.logprobs), reward=reward)
        for row, s, reward in zip(rows, samples, rewards)
    ]
    return PromptGroup(group.prompt_id, group.messages, group.answer, rows[0]["group_id"] if rows else None, rollouts,
                       group.teachers)
