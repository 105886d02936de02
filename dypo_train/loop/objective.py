"""One micro-batch: pad rows into tensors, run the policy (and reference), and sum the loss terms.

Tensors are laid out so every completion starts at the same column: prompts left-padded to P,
completions right-padded to T. The logits of the last T + 1 positions are all the loss needs
(`logits_to_keep`), so the prompt's vocabulary projection is never computed.

Denominators (`Denominators`) are those of the whole step over all micro-batches and processes,
so summing micro-batch gradients (and DDP's mean over processes, undone by `world_size`) gives
exactly the gradient of the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dypo_train import ops
from dypo_train.config import LossConfig
from dypo_train.loop.plan import OFFPOLICY, RL, SFT, Row


@dataclass(frozen=True)
class Batch:
    """A micro-batch as tensors. N rows, P prompt columns, T completion columns."""

    input_ids: Tensor  # (N, P + T)
    attention_mask: Tensor  # (N, P + T)
    position_ids: Tensor  # (N, P + T)
    completion_ids: Tensor  # (N, T)
    mask: Tensor  # (N, T) 1 = completion token
    old_logprobs: Tensor  # (N, T) sampling logprobs (0 where unknown)
    has_old: Tensor  # (N,) bool: sampling logprobs were stored
    kind: list[str]  # (N,) sft | rl | offpolicy
    sft_weight: Tensor  # (N,)
    rl_weight: Tensor  # (N,)
    gal_weight: Tensor  # (N,)
    advantages: Tensor  # (N,)
    rewards: Tensor  # (N,)
    group_index: Tensor  # (N,) long: the prompt's position in the step

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(rows: list[Row], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Rows -> a padded Batch (see the module docstring for the layout)."""
    p = max(len(r.seq.prompt_ids) for r in rows)
    t = max(max(len(r.seq.completion_ids) for r in rows), 1)
    n = len(rows)
    ids = np.full((n, p + t), pad_id, dtype=np.int64)  # filled in NumPy: a list into a slice, no tensor per row
    mask = np.zeros((n, p + t), dtype=np.int64)
    old_np = np.zeros((n, t), dtype=np.float32)
    for i, r in enumerate(rows):
        prompt, completion = r.seq.prompt_ids, r.seq.completion_ids
        ids[i, p - len(prompt):p] = prompt
        ids[i, p:p + len(completion)] = completion
        mask[i, p - len(prompt):p + len(completion)] = 1
        if r.seq.old_logprobs is not None:
            old_np[i, :len(completion)] = r.seq.old_logprobs
    input_ids, attention, old = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(old_np)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (N, P + T): left padding shifts positions
    completion_ids = input_ids[:, p:]  # (N, T)
    mask = attention[:, p:].float()  # (N, T)
    f = lambda name: torch.tensor([getattr(r, name) for r in rows], dtype=torch.float32)  # noqa: E731
    return Batch(
        input_ids.to(device), attention.to(device), positions.to(device), completion_ids.to(device), mask.to(device),
        old.to(device), torch.tensor([r.seq.old_logprobs is not None for r in rows], device=device), [r.kind for r in rows],
        f("sft_weight").to(device), f("rl_weight").to(device), f("gal_weight").to(device), f("advantage").to(device),
        f("reward").to(device), torch.tensor([r.prompt_pos for r in rows], dtype=torch.long, device=device),
    )


def completion_logits(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Logits predicting each completion token. Shapes: returns (N, T, V)."""
    t = batch.completion_ids.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=t + 1, use_cache=False)
    return out.logits[:, :-1]  # (N, T, V): position P - 1 + j predicts completion token j


@dataclass(frozen=True)
class Denominators:
    """Whole-step normalisers of each term, and the prompt-share scales of the terms."""

    sft: float
    rl: float
    gal: float
    sft_scale: float
    rl_scale: float


def _den(rows: list[Row], weight: str, norm: str, max_tokens: int) -> float:
    counted = [r for r in rows if getattr(r, weight) > 0]
    if norm == "token_mean":
        return float(sum(len(r.seq.completion_ids) for r in counted))
    if norm == "seq_mean":
        return float(len(counted))
    return float(len(counted) * max_tokens)


def step_denominators(rows: list[Row], loss: LossConfig, *, max_completion_tokens: int) -> Denominators:
    """The denominators of a whole step (every process computes the same from the full plan)."""
    sft_rows = [r for r in rows if r.kind == SFT]
    rl_rows = [r for r in rows if r.kind != SFT]
    pairs = 0
    by_prompt: dict[int, list[float]] = {}
    for r in rl_rows:
        if r.gal_weight > 0:
            by_prompt.setdefault(r.prompt_pos, []).append(r.reward)
    for rewards in by_prompt.values():
        pairs += sum(1 for a in rewards for b in rewards if a > b)
    sft_prompts = {r.prompt_pos for r in sft_rows}
    rl_prompts = {r.prompt_pos for r in rl_rows}
    trained = len(sft_prompts | rl_prompts)
    if loss.term_weighting == "prompt_share" and trained:
        sft_scale, rl_scale = len(sft_prompts) / trained, len(rl_prompts) / trained
    else:
        sft_scale = rl_scale = 1.0
    return Denominators(
        sft=_den(sft_rows, "sft_weight", loss.norm, max_completion_tokens),
        rl=_den(rl_rows, "rl_weight", loss.norm, max_completion_tokens),
        gal=float(pairs),
        sft_scale=sft_scale,
        rl_scale=rl_scale,
    )


def _rows_of(batch: Batch, kinds: tuple[str, ...]) -> Tensor:
    return torch.tensor([k in kinds for k in batch.kind], dtype=torch.bool, device=batch.mask.device)


def micro_batch_loss(logprobs: Tensor, batch: Batch, den: Denominators, loss: LossConfig, *,
                     ref_logprobs: Tensor | None, old_mode: str) -> tuple[Tensor, dict[str, Tensor]]:
    """The step loss's share from this micro-batch, and metric sums (detached) to add up over the step.

    Shapes: logprobs, ref_logprobs (N, T); returns a scalar and scalars.
    """
    zero = logprobs.sum() * 0.0  # keeps the graph when a term is empty
    total = zero
    sums: dict[str, Tensor] = {}
    sft = _rows_of(batch, (SFT,))
    if sft.any() and den.sft > 0:
        w = batch.sft_weight * sft
        part, m = ops.sft_loss(logprobs, batch.mask, w, norm=loss.norm, denominator=den.sft)
        total = total + den.sft_scale * part
        sums["loss/sft"] = (den.sft_scale * part).detach()
        sums["sft/nll_sum"] = m["nll"] * m["tokens"]
        sums["sft/tokens"] = m["tokens"]
    on = _rows_of(batch, (RL,))
    if on.any() and den.rl > 0:
        if old_mode == "behaviour":
            old = torch.where(batch.has_old.unsqueeze(1), batch.old_logprobs, logprobs.detach())
        else:
            old = logprobs.detach()  # one update per batch: pi_old is the pre-update policy, ratio 1 at the start
        is_weights = _rollout_correction(logprobs.detach(), batch, on, loss, sums)  # the trainer's pi_old, both modes
        part, m = ops.policy_loss(
            logprobs, old, batch.advantages, batch.mask, batch.rl_weight * on,
            ref_logprobs=ref_logprobs if loss.beta_kl > 0 else None, clip_eps=loss.clip_eps,
            clip_eps_high=loss.clip_eps_high or None, beta_kl=loss.beta_kl,
            ratio_level="sequence" if loss.rl_loss == "gspo" else "token", norm=loss.norm, denominator=den.rl,
            is_weights=is_weights,
        )
        total = total + den.rl_scale * part
        tokens = (batch.mask * on.unsqueeze(1)).sum()
        sums["loss/rl"] = (den.rl_scale * part).detach()
        sums["rl/clip_sum"] = m["clip_frac"] * tokens
        sums["rl/kl_sum"] = m["kl"] * tokens
        sums["rl/tokens"] = tokens
    off = _rows_of(batch, (OFFPOLICY,))
    if off.any() and den.rl > 0:
        part, _ = ops.offpolicy_shaped_loss(logprobs, batch.advantages, batch.mask, batch.rl_weight * off,
                                            shaping=loss.offpolicy_shaping, norm=loss.norm, denominator=den.rl)
        total = total + den.rl_scale * part
        sums["loss/offpolicy"] = (den.rl_scale * part).detach()
    gal_rows = _rows_of(batch, (RL, OFFPOLICY))
    if gal_rows.any() and den.gal > 0 and bool((batch.gal_weight * gal_rows).gt(0).any()):
        part, m = ops.gal_loss(logprobs, batch.mask, batch.rewards, batch.group_index, batch.gal_weight * gal_rows,
                               ref_logprobs=ref_logprobs if loss.gal_reference else None, beta=loss.beta_gal,
                               denominator=den.gal)
        total = total + den.rl_scale * part
        sums["loss/gal"] = (den.rl_scale * part).detach()
        sums["gal/pair_acc_sum"] = m["pair_acc"] * m["pairs"]
        sums["gal/margin_sum"] = m["margin"] * m["pairs"]
        sums["gal/pairs"] = m["pairs"].to(torch.float32)
    return total, sums


def _rollout_correction(old: Tensor, batch: Batch, on: Tensor, loss: LossConfig, sums: dict[str, Tensor]) -> Tensor | None:
    """`loss.rollout_correction`'s weights pi_old / pi_sampler (`old`: the trainer's logprobs before the update) on the RL rows with stored sampling logprobs (None when
    off), and the mismatch metrics' sums over those rows (whatever the mode, so a run shows how far off its sampler is).

    Shapes: old (N, T), on (N,) bool; returns (N, T) or None."""
    rows = on & batch.has_old  # (N,) RL rows whose sampler is known
    if not bool(rows.any()):
        return None
    mask = batch.mask * rows.unsqueeze(1)  # (N, T)
    weights, m = ops.rollout_is_weights(old, batch.old_logprobs, mask, mode=loss.rollout_correction,
                                        cap=loss.rollout_is_cap)
    sums["rollout/mismatch_kl_sum"] = m["mismatch_kl"] * m["tokens"]
    sums["rollout/is_weight_sum"] = m["is_weight"] * m["tokens"]
    sums["rollout/truncated_sum"] = m["truncated_frac"] * m["tokens"]
    sums["rollout/tokens"] = m["tokens"]
    return weights if loss.rollout_correction != "none" else None
