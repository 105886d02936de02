"""From a step's prompt groups to the rows the step trains on: grading, routing, advantages.

Every process plans the whole global batch (the same data and the same seeded choices on each), so
the denominators of the losses (tokens, rows, pairs of the whole step) are known everywhere without
communication; each process then trains its share of the prompts (`shard_prompts`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from dypo_train import ops
from dypo_train.config import LossConfig
from dypo_train.stream.tokens import TokenizedSequence, render_target, tokenize_rollout
from dypo_train.stream.types import PromptGroup

SFT, RL, OFFPOLICY = "sft", "rl", "offpolicy"


@dataclass(frozen=True)
class Row:
    """One sequence of the step: an SFT target, an on-policy rollout or LUFFY's off-policy teacher trace."""

    prompt_pos: int  # index of its prompt in the step's batch; rows of a prompt share a group for GAL
    kind: str  # sft | rl | offpolicy
    seq: TokenizedSequence
    sft_weight: float = 0.0
    rl_weight: float = 0.0
    gal_weight: float = 0.0
    advantage: float = 0.0
    reward: float = 0.0


@dataclass
class PromptRecord:
    """What happened to one prompt at this step (a train_samples row)."""

    prompt_id: str
    group_id: str | None
    tier: str
    route: str
    teacher_trace_id: str | None = None
    n_rollouts: int = 0
    n_correct: int = 0


@dataclass
class StepPlan:
    rows: list[Row]
    records: list[PromptRecord]
    counts: dict[str, float] = field(default_factory=dict)  # tiers, routes, rewards: whole-batch metrics
    sft_buffer: list[Row] = field(default_factory=list)  # hard prompts set aside for a separate SFT update


def teacher_choice(teachers: list, *, seed: int, step: int, prompt_id: str):
    """A verified teacher trace drawn uniformly, the same on every process and after a resume."""
    return random.Random(f"{seed}:{step}:{prompt_id}").choice(teachers) if teachers else None


def _rewards(groups: list[PromptGroup], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = torch.zeros(len(groups), k)  # (B, G)
    valid = torch.zeros(len(groups), k, dtype=torch.bool)  # (B, G)
    for b, g in enumerate(groups):
        for i, r in enumerate(g.rollouts[:k]):
            if r.reward is not None:
                rewards[b, i], valid[b, i] = r.reward, True
    return rewards, valid


def plan_step(groups: list[PromptGroup], *, step: int, gate: str, loss: LossConfig, tokenizer: Any,
              max_completion_tokens: int, seed: int, buffer_sft: bool = False, max_prompt_tokens: int | None = None) -> StepPlan:
    """Grade, route and lay out the rows of one optimizer step (see the module docstring).

    A prompt longer than `max_prompt_tokens` is graded and counted but not trained (route skip:too_long).
    """
    k = max((len(g.rollouts) for g in groups), default=0)
    teachers = [teacher_choice(g.teachers, seed=seed, step=step, prompt_id=g.prompt_id) for g in groups]
    rollouts = [[tokenize_rollout(tokenizer, g.messages, r.prompt_token_ids, r.completion_token_ids, r.logprobs, None,
                                  max_completion_tokens=max_completion_tokens) for r in g.rollouts[:k]] for g in groups]
    rewards, valid = _rewards(groups, k) if k else (torch.zeros(len(groups), 0), torch.zeros(len(groups), 0, dtype=torch.bool))
    offpolicy = torch.zeros(len(groups), dtype=torch.bool)
    if loss.offpolicy_teacher and k >= 2:  # LUFFY: the last slot of a group holds a verified teacher trace
        for b, t in enumerate(teachers):
            if t is not None and groups[b].rollouts:
                rewards[b, k - 1], valid[b, k - 1], offpolicy[b] = loss.success, True, True
    tiers = ops.group_tiers(rewards, valid, success=loss.success) if k else torch.full((len(groups),), ops.UNSCORED)
    advantages = ops.group_advantages(rewards, valid) if k else rewards
    has_teacher = torch.tensor([t is not None for t in teachers], dtype=torch.bool)
    route = ops.route(gate, tiers, has_teacher, gamma=loss.gamma, alpha=loss.alpha, sft_coef=loss.sft_coef)
    targets = [  # rendered only where a teacher trace will be trained on
        render_target(tokenizer, g.messages, t.completion, max_completion_tokens=max_completion_tokens)
        if t is not None and (route.sft[b] > 0 or offpolicy[b]) else None
        for b, (g, t) in enumerate(zip(groups, teachers))
    ]
    gal = route.gal
    if loss.gal_mode == "additive":
        gal = torch.where(route.rl > 0, torch.full_like(route.rl, loss.gal_coef), torch.zeros_like(route.rl))
    rows: list[Row] = []
    records: list[PromptRecord] = []
    buffered: list[Row] = []
    for b, g in enumerate(groups):
        tier = ops.TIER_NAMES[int(tiers[b])]
        rec = PromptRecord(g.prompt_id, g.group_id, tier, "skip", n_rollouts=len(g.rollouts),
                           n_correct=sum(1 for r in g.rollouts if r.reward is not None and r.reward >= loss.success))
        parts = []
        if max_prompt_tokens is not None and _prompt_length(targets[b], rollouts[b]) > max_prompt_tokens:
            rec.route = "skip:too_long"
            records.append(rec)
            continue
        if route.sft[b] > 0 and targets[b] is not None:
            row = Row(b, SFT, targets[b], sft_weight=float(route.sft[b]))
            (buffered if buffer_sft else rows).append(row)
            rec.teacher_trace_id = teachers[b].trace_id
            parts.append("sft")
        signal = tier == "mid"  # easy, hard and unscored groups carry no advantage signal
        if (route.rl[b] > 0 or gal[b] > 0) and signal:
            for i in range(k):
                if not valid[b, i]:
                    continue
                is_off = bool(offpolicy[b]) and i == k - 1
                seq = targets[b] if is_off else rollouts[b][i]
                rows.append(Row(b, OFFPOLICY if is_off else RL, seq, rl_weight=float(route.rl[b]), gal_weight=float(gal[b]),
                                advantage=float(advantages[b, i]), reward=float(rewards[b, i])))
            parts.append("rl")
        rec.route = "+".join(parts) if parts else _skip_reason(tier, gate, teachers[b] is not None)
        records.append(rec)
    counts = _counts(records, rewards, valid, offpolicy, len(groups))
    return StepPlan(rows, records, counts, buffered)


def _prompt_length(target: TokenizedSequence | None, rollouts: list[TokenizedSequence]) -> int:
    lengths = [len(s.prompt_ids) for s in ([target] if target else []) + rollouts]
    return max(lengths, default=0)


def _skip_reason(tier: str, gate: str, has_teacher: bool) -> str:
    if tier == "unscored":
        return "skip:unscored"
    if tier == "easy" and gate != "sft":
        return "skip:easy"
    if not has_teacher and gate != "rl":
        return "skip:no_teacher"  # counted: a hard prompt is never trained on an unverified trace
    return "skip:no_signal"


def _counts(records: list[PromptRecord], rewards: torch.Tensor, valid: torch.Tensor, offpolicy: torch.Tensor, n: int) -> dict[str, float]:
    on_policy = valid.clone()
    if offpolicy.any():
        on_policy[offpolicy, -1] = False
    graded = on_policy.sum()
    out = {f"tier/{t}": float(sum(r.tier == t for r in records)) for t in ops.TIER_NAMES}
    out["route/sft"] = float(sum("sft" in r.route for r in records))
    out["route/rl"] = float(sum("rl" in r.route for r in records))
    out["route/skipped"] = float(sum(r.route.startswith("skip") for r in records))
    out["route/too_long"] = float(sum(r.route == "skip:too_long" for r in records))
    out["route/hard_without_teacher"] = float(sum(r.route == "skip:no_teacher" and r.tier == "hard" for r in records))
    out["tier/offline_ratio"] = out["route/sft"] / max(n, 1)
    out["reward/mean"] = float((rewards * on_policy).sum() / graded) if graded > 0 else float("nan")
    out["reward/graded"] = float(graded)
    return out


def shard_prompts(rows: list[Row], *, rank: int, world_size: int) -> list[Row]:
    """This process's rows: the trained prompts dealt round-robin, whole prompts (and so whole groups) together."""
    positions = sorted({r.prompt_pos for r in rows})
    mine = set(positions[rank::world_size])
    return [r for r in rows if r.prompt_pos in mine]


def micro_batches(rows: list[Row], size: int) -> list[list[Row]]:
    """Consecutive prompts packed into micro-batches of at most `size` rows; a prompt is never split."""
    by_prompt: dict[int, list[Row]] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt_pos, []).append(r)
    batches: list[list[Row]] = []
    current: list[Row] = []
    for prompt_rows in by_prompt.values():
        if current and len(current) + len(prompt_rows) > size:
            batches.append(current)
            current = []
        current = current + prompt_rows
    if current:
        batches.append(current)
    return batches
