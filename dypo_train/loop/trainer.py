"""The training loop: one optimizer step per batch of prompts, read top to bottom in `Trainer.train`.

Phases of a step (each timed and logged under `time/`):

1. data      the step's prompt groups: read from the store (offline) or sampled, verified and
             stored by the in-process engine (online: `time/generate`, `time/verify`);
2. plan      grade each group, route prompts by the gate, compute advantages (same on every process);
3. train     this process's share of prompts in micro-batches of whole groups; gradients add up over
             micro-batches (DDP syncs on the last only); losses use whole-step denominators;
4. update    non-finite loss -> stop before the optimizer touches the weights; clip, step, schedule;
5. sync      online: push the new weights into the engine (`time/weight_sync`);
6. log       console, trackers, store tables; checkpoint every `run.checkpoint_every` steps.

Launch: `dypo-train run ...` on one process, `accelerate launch --multi_gpu --num_processes N -m
dypo_train.cli run ...` (CPU gloo or GPUs) or with a shipped accelerate config for FSDP/ZeRO-3.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from dypo_data.errors import DypoError
from dypo_train import ops
from dypo_train.config import TrainConfig
from dypo_train.loop.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from dypo_train.loop.metrics import StoreMetrics, console_line, eval_lines
from dypo_train.loop.objective import Denominators, collate, completion_logits, micro_batch_loss, step_denominators
from dypo_train.loop.plan import RL, SFT, Row, StepPlan, micro_batches, plan_step, shard_prompts
from dypo_train.loop.setup import TrainSetup
from dypo_train.stream.tokens import TokenizedSequence
from dypo_train.stream.types import PromptGroup

log = logging.getLogger(__name__)


class TrainingError(DypoError):
    """Training cannot go on (a non-finite loss, ...); the last checkpoint is intact."""


class Reporter(Protocol):
    """Shows a run's progress (the CLI's progress bar); the library default logs one line per logged step."""

    def start(self, total: int, initial: int) -> None: ...
    def step(self, step: int, line: str | None) -> None: ...
    def close(self) -> None: ...


class LogReporter:
    def start(self, total: int, initial: int) -> None:
        log.info("training steps %d..%d", initial + 1, total)

    def step(self, step: int, line: str | None) -> None:
        if line:
            log.info(line)

    def close(self) -> None:
        pass


class GroupSource(Protocol):
    """Where a step's prompt groups come from (offline store reader or online sampler)."""

    def total_steps(self) -> int: ...
    def groups(self, step: int) -> tuple[list[PromptGroup], dict[str, float]]: ...
    def after_update(self, step: int) -> dict[str, float]: ...
    def close(self) -> None: ...


@dataclass
class StepResult:
    metrics: dict[str, float]
    plan: StepPlan


@dataclass
class Trainer:
    """Runs `cfg` on prepared components; see the module docstring."""

    cfg: TrainConfig
    setup: TrainSetup
    source: GroupSource
    run_dir: Path
    run_id: str
    start_step: int = 0
    sft_buffer: list[Row] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    evaluator: Any = None  # dypo_train.eval.PeriodicEval: held-out evaluation every eval.every steps

    @property
    def acc(self) -> Any:
        return self.setup.accelerator

    # -- the loop --------------------------------------------------------------------------------

    def train(self, *, reporter: Reporter | None = None) -> list[dict[str, float]]:
        plan_ahead = getattr(self.source, "plan_ahead", None)  # sources that read ahead also plan ahead
        if plan_ahead is not None:
            plan_ahead(self.plan)
        total = self.source.total_steps()
        store_metrics = StoreMetrics(Path(self.cfg.data.store), self.run_id) if self.acc.is_main_process else None
        reporter = reporter if reporter is not None and self.acc.is_main_process else (LogReporter() if self.acc.is_main_process else None)
        if reporter is not None:
            reporter.start(total, self.start_step)
        try:
            self._train_steps(total, store_metrics, reporter)
        except BaseException:
            if store_metrics is not None:  # keep the steps that led up to the failure queryable
                with suppress(Exception):  # never hide the failure behind a failed write
                    store_metrics.flush()
            raise
        finally:
            if reporter is not None:
                reporter.close()
        if self.start_step < total:  # a finished run resumed trains nothing and leaves its last checkpoint as it is
            self.checkpoint(total, store_metrics)
        return self.history

    def _train_steps(self, total: int, store_metrics: StoreMetrics | None, reporter: Reporter | None) -> None:
        for step in range(self.start_step, total):
            started = time.perf_counter()
            groups, timings = self.source.groups(step)  # 1. data
            result = self.train_step(step, groups)  # 2-4. plan, train, update
            timings.update(self.source.after_update(step))  # 5. sync
            timings["time/step"] = time.perf_counter() - started
            done = step + 1
            if self.evaluator is not None and self.evaluator.due(done, total):  # held-out eval (own time/eval)
                timings.update(self.evaluator.evaluate(done, self.acc.unwrap_model(self.setup.model)))
            metrics = {**result.metrics, **timings}
            self.history.append(metrics)
            self._log(done, total, metrics, result, store_metrics, reporter)  # 6. log
            if self.cfg.run.checkpoint_every and done % self.cfg.run.checkpoint_every == 0 and done < total:
                self.checkpoint(done, store_metrics)

    def _log(self, step: int, total: int, metrics: dict[str, float], result: StepResult, store_metrics: StoreMetrics | None,
             reporter: Reporter | None) -> None:
        self.acc.log(metrics, step=step)
        if store_metrics is not None:
            store_metrics.add(step, metrics, result.plan.records)
        if reporter is not None:
            evaluated = eval_lines(metrics)
            due = step % self.cfg.run.log_every == 0 or step == total or bool(evaluated)
            reporter.step(step, "\n".join([console_line(step, total, metrics), *evaluated]) if due else None)

    def checkpoint(self, step: int, store_metrics: StoreMetrics | None) -> Path:
        state = {
            "step": step,
            "run_id": self.run_id,
            "sft_buffer": [_row_state(r) for r in self.sft_buffer],
        }
        if store_metrics is not None:  # before the checkpoint: a kill in between retrains (and rewrites) these steps
            store_metrics.flush()
        return save_checkpoint(self.acc, self.setup.model, self.setup.tokenizer, self.run_dir, step, state,
                               keep=self.cfg.run.keep_checkpoints)

    def restore(self) -> int:
        """Load the run's latest checkpoint; returns the step to continue from (0 when none)."""
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is None:
            return 0
        self.acc.load_state(str(checkpoint / "state"))
        state = load_trainer_state(checkpoint)
        self.sft_buffer = [_row_from_state(r) for r in state["sft_buffer"]]
        self.start_step = int(state["step"])
        self.run_id = state["run_id"]
        return self.start_step

    # -- one step ----------------------------------------------------------------------------------

    def gate_at(self, step: int) -> str:
        return "sft" if step < self.cfg.run.sft_steps else self.cfg.loss.gate

    def plan(self, step: int, groups: list[PromptGroup]) -> StepPlan:
        """Phase 2 of step `step`: a pure function of the groups, the step and the config (a source may run it
        ahead, in its reader thread, while the previous step trains: `plan_ahead`)."""
        cfg = self.cfg
        return plan_step(groups, step=step, gate=self.gate_at(step), loss=cfg.loss, tokenizer=self.setup.tokenizer,
                         max_completion_tokens=cfg.data.max_completion_tokens, seed=cfg.data.seed,
                         buffer_sft=cfg.optim.sft_buffer > 0, max_prompt_tokens=cfg.data.max_prompt_tokens)

    def train_step(self, step: int, groups: list[PromptGroup]) -> StepResult:
        cfg = self.cfg
        buffer_sft = cfg.optim.sft_buffer > 0
        ahead = getattr(self.source, "planned", None)  # a plan the source made of exactly these groups, if any
        plan = ahead(step, groups) if ahead is not None else None
        if plan is None:
            plan = self.plan(step, groups)
        metrics = dict(plan.counts)
        started = time.perf_counter()
        sums, tokens = self._update(plan.rows, self.setup.optimizer, self.setup.scheduler, metrics)
        if buffer_sft:
            self.sft_buffer.extend(plan.sft_buffer)
            metrics["sft_buffer/size"] = float(len(self.sft_buffer))
            if len(self.sft_buffer) >= cfg.optim.sft_buffer:
                rows = [Row(i, SFT, r.seq, sft_weight=r.sft_weight) for i, r in enumerate(self.sft_buffer)]
                sft_sums, sft_tokens = self._update(rows, self.setup.sft_optimizer, None, metrics, prefix="sft_update/")
                sums.update({f"sft_update/{k}": v for k, v in sft_sums.items()})
                tokens += sft_tokens
                self.sft_buffer = []
        seconds = time.perf_counter() - started
        metrics.update(_summarise(sums))
        everywhere, slowest = self._over_ranks(float(tokens), seconds)
        metrics["time/train"] = slowest
        metrics["perf/rank_tokens"] = float(tokens)
        metrics["perf/tokens"] = everywhere
        metrics["perf/tokens_per_s"] = everywhere / slowest if slowest > 0 else 0.0
        metrics["lr"] = float(self.setup.scheduler.get_last_lr()[0])
        return StepResult(metrics, plan)

    def _update(self, rows: list[Row], optimizer: Any, scheduler: Any, metrics: dict[str, float], *, prefix: str = "") -> tuple[dict[str, float], int]:
        """Forward/backward every micro-batch of `rows` (this process's share), then one optimizer step."""
        cfg, acc = self.cfg, self.acc
        if not rows:  # nothing to learn from at this step (e.g. every group easy): no update anywhere
            metrics[f"{prefix}grad/norm"] = 0.0
            metrics[f"{prefix}update/skipped"] = 1.0
            return {}, 0
        den = step_denominators(rows, cfg.loss, max_completion_tokens=cfg.data.max_completion_tokens)
        mine = shard_prompts(rows, rank=acc.process_index, world_size=acc.num_processes)
        batches = micro_batches(mine, cfg.run.micro_batch_size) or [[_null_row(rows[0])]]
        sums: dict[str, torch.Tensor] = {}
        tokens = 0
        for i, micro in enumerate(batches):
            last = i == len(batches) - 1
            with acc.no_sync(self.setup.model) if not last else nullcontext():
                part, part_sums, n = self._micro_step(micro, den)
            tokens += n
            for key, value in part_sums.items():
                sums[key] = sums.get(key, 0.0) + value
        total = self._reduce(sums)
        loss = sum(v for k, v in total.items() if k.startswith("loss/"))
        if not math.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            raise TrainingError(f"non-finite loss {loss} at this step; the weights were not updated",
                                "lower optim.lr or check the data (the last checkpoint is intact; resume from it)")
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf")
        norm = acc.clip_grad_norm_(self.setup.model.parameters(), max_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        metrics[f"{prefix}grad/norm"] = float(norm)
        metrics[f"{prefix}loss/total"] = loss
        return total, tokens

    def _micro_step(self, rows: list[Row], den: Denominators) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        cfg, acc, model = self.cfg, self.acc, self.setup.model
        batch = collate(rows, self.setup.pad_id, acc.device)
        logits = completion_logits(model, batch)  # (N, T, V)
        rl_rows = torch.tensor([r.kind == RL and r.rl_weight + r.gal_weight > 0 for r in rows], device=batch.mask.device)
        if rl_rows.any():  # entropy of the rollout tokens, from the same pass over the logits
            logprobs, entropy = ops.token_logprobs_and_entropy(logits, batch.completion_ids)  # (N, T), (N, T)
        else:
            logprobs, entropy = ops.token_logprobs(logits, batch.completion_ids), None  # (N, T)
        ref = self._ref_logprobs(batch, rows)
        loss, sums = micro_batch_loss(logprobs, batch, den, cfg.loss, ref_logprobs=ref, old_mode=cfg.data.old_logprobs)
        if entropy is not None:
            m = batch.mask * rl_rows.unsqueeze(1)
            sums["policy/entropy_sum"] = (entropy * m).sum()
            sums["policy/tokens"] = m.sum()
            sums["policy/length_sum"] = m.sum()
            sums["policy/rows"] = rl_rows.sum().float()
        acc.backward(loss * acc.num_processes)  # DDP averages over processes; the denominators are global
        return loss, sums, batch.num_tokens

    def _ref_logprobs(self, batch: Any, rows: list[Row]) -> torch.Tensor | None:
        loss = self.cfg.loss
        needs = (loss.beta_kl > 0 and any(r.kind == RL for r in rows)) or (
            loss.gal_reference and any(r.gal_weight > 0 for r in rows))
        if not needs or self.setup.reference is None:
            return None
        with torch.no_grad(), self.acc.autocast():
            logits = completion_logits(self.setup.reference, batch)
            return ops.token_logprobs(logits, batch.completion_ids)

    def _over_ranks(self, tokens: float, seconds: float) -> tuple[float, float]:
        """(tokens trained by every process, the slowest process's seconds) of this step."""
        if self.acc.num_processes == 1:
            return tokens, seconds
        import torch.distributed as dist

        total = torch.tensor([tokens], dtype=torch.float64, device=self.acc.device)
        slowest = torch.tensor([seconds], dtype=torch.float64, device=self.acc.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        return float(total), float(slowest)

    def _reduce(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Sum metric tensors over processes. A process holds only the keys its rows produced (one may have no SFT
        row), so every process reduces all of _METRIC_KEYS plus a presence flag each; a key absent everywhere stays absent."""
        multi = self.acc.num_processes > 1
        keys = list(_METRIC_KEYS) if multi else sorted(sums)
        assert not multi or set(sums) <= set(keys), sorted(set(sums) - set(keys))
        if not keys:
            return {}
        dev = self.acc.device
        stacked = torch.stack([torch.as_tensor(sums.get(k, 0.0), dtype=torch.float32, device=dev).detach().reshape(()) for k in keys])
        present = torch.tensor([float(k in sums) for k in keys], device=dev)
        if multi:
            stacked, present = self.acc.reduce(torch.cat([stacked, present]), reduction="sum").split(len(keys))
        return {k: v for k, v, p in zip(keys, stacked.tolist(), present.tolist()) if p > 0}


_METRIC_KEYS = ("loss/sft", "loss/rl", "loss/gal", "loss/offpolicy", "sft/nll_sum", "sft/tokens", "rl/clip_sum", "rl/kl_sum",
                "rl/tokens", "gal/pair_acc_sum", "gal/margin_sum", "gal/pairs", "policy/entropy_sum", "policy/tokens",
                "policy/length_sum", "policy/rows", "rollout/mismatch_kl_sum", "rollout/is_weight_sum", "rollout/truncated_sum",
                "rollout/tokens")


def _null_row(template: Row) -> Row:
    """A zero-weight row: a process with no prompts at this step still joins DDP's gradient sync."""
    return Row(template.prompt_pos, SFT, template.seq)


def _summarise(sums: dict[str, float]) -> dict[str, float]:
    """Sums over the step -> the logged means."""
    out = {k: v for k, v in sums.items() if k.startswith("loss/") or k.startswith("sft_update/loss/")}

    def ratio(num: str, den: str, name: str) -> None:
        if den in sums and sums[den] > 0:
            out[name] = sums.get(num, 0.0) / sums[den]

    ratio("sft/nll_sum", "sft/tokens", "sft/nll")
    ratio("rl/clip_sum", "rl/tokens", "rl/clip_frac")
    ratio("rl/kl_sum", "rl/tokens", "rl/kl")
    ratio("gal/pair_acc_sum", "gal/pairs", "gal/pair_acc")
    ratio("gal/margin_sum", "gal/pairs", "gal/margin")
    ratio("policy/entropy_sum", "policy/tokens", "policy/entropy")
    ratio("policy/length_sum", "policy/rows", "policy/response_length")
    ratio("rollout/mismatch_kl_sum", "rollout/tokens", "rollout/mismatch_kl")
    ratio("rollout/is_weight_sum", "rollout/tokens", "rollout/is_weight_mean")
    ratio("rollout/truncated_sum", "rollout/tokens", "rollout/truncated_frac")
    return out


def _row_state(row: Row) -> dict[str, Any]:
    return {"prompt_ids": row.seq.prompt_ids, "completion_ids": row.seq.completion_ids, "sft_weight": row.sft_weight}


def _row_from_state(state: dict[str, Any]) -> Row:
    return Row(0, SFT, TokenizedSequence(list(state["prompt_ids"]), list(state["completion_ids"])), sft_weight=float(state["sft_weight"]))
