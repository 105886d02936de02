"""Off-policy correction of rollouts sampled by another policy than the trainer's pi_old.

Overlapped rollouts (a few steps stale), lagging servers and a bf16 engine all make the sampler
pi_sampler differ from pi_old, the policy the clipped ratio pi_theta / pi_old is taken against. The
policy gradient is then reweighted per token by a truncated importance weight (verl's TIS, TRL's
`vllm_importance_sampling_correction`), detached, multiplying the clipped surrogate of each token:

- `"none"`:    w = 1 (the metrics are still computed);
- `"tis"`:     w_t = min(pi_old(y_t) / pi_sampler(y_t), cap), one weight per token (TRL "token_truncate",
               verl token-level TIS);
- `"seq_tis"`: w_i = min(prod_t pi_old(y_t) / pi_sampler(y_t), cap) = min(exp(sum_t (old - sampler)), cap)
               over row i's counted tokens, the same on every token of the row (TRL "sequence_truncate",
               verl sequence-level IS).

Metrics (means over counted tokens; the loop sums `*_sum` over the step and divides):

- `mismatch_kl`: k1 estimate of KL(pi_sampler || pi_old) = E_{y ~ sampler}[log pi_sampler(y) - log pi_old(y)],
  per token (verl's `mismatch_kl`); 0 when the sampler is pi_old;
- `is_weight`: the weight actually applied (after truncation);
- `truncated_frac`: share of counted tokens whose untruncated weight exceeded the cap.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dypo_train.ops.losses import LOG_RATIO_CLAMP

CORRECTIONS = ("none", "tis", "seq_tis")


def _token_log_weights(log_ratio: Tensor, counted: Tensor) -> Tensor:
    return log_ratio  # (N, T)


def _sequence_log_weights(log_ratio: Tensor, counted: Tensor) -> Tensor:
    return log_ratio.masked_fill(~counted, 0.0).sum(1, keepdim=True).expand_as(log_ratio)  # (N, T) row sums


_LEVELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"tis": _token_log_weights, "seq_tis": _sequence_log_weights}


def rollout_is_weights(
    old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    mask: Tensor,
    *,
    mode: str = "tis",
    cap: float = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated importance weights pi_old / pi_sampler for the policy loss, and mismatch metrics.

    Rows with nothing counted (mask all 0) get weight 1 and add nothing to the metrics. Weights at
    positions that are not counted are 1 and never read. Log-ratios are clamped to +-LOG_RATIO_CLAMP
    before `exp`. Everything returned is detached: the weight scales the gradient, it carries none.

    Shapes:
        old_logprobs:     (N, T) log pi_old of each sampled token (the trainer's, before the update)
        sampler_logprobs: (N, T) log pi_sampler of each sampled token (stored with the rollout)
        mask:             (N, T) 1 = token counts
        returns:          weights (N, T), {"mismatch_kl": (), "is_weight": (), "truncated_frac": (), "tokens": ()}
    """
    if old_logprobs.dim() != 2 or sampler_logprobs.shape != old_logprobs.shape or mask.shape != old_logprobs.shape:
        raise ValueError(f"expected old_logprobs, sampler_logprobs and mask all (N, T); got {tuple(old_logprobs.shape)}, "
                         f"{tuple(sampler_logprobs.shape)}, {tuple(mask.shape)}")
    if mode not in CORRECTIONS:
        raise ValueError(f"unknown rollout correction {mode!r}; valid: {', '.join(CORRECTIONS)}")
    if not cap >= 1.0:
        raise ValueError(f"cap={cap} must be >= 1 (a cap below 1 shrinks every on-policy token)")
    counted = mask.bool()  # (N, T)
    log_ratio = (old_logprobs.detach() - sampler_logprobs.detach()).masked_fill(~counted, 0.0)  # (N, T) log pi_old / pi_s
    if mode == "none":
        raw = log_ratio.new_zeros(log_ratio.shape)  # (N, T) log 1
    else:
        raw = _LEVELS[mode](log_ratio, counted).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (N, T) log weight
    weights = raw.exp().clamp(max=cap).masked_fill(~counted, 1.0)  # (N, T)
    n = counted.sum().to(log_ratio.dtype)
    mean = lambda x: x.masked_fill(~counted, 0.0).sum() / n.clamp(min=1.0)  # noqa: E731 - over counted tokens
    metrics = {
        "mismatch_kl": mean(-log_ratio),  # E_sampler[log pi_s - log pi_old]
        "is_weight": mean(weights),
        "truncated_frac": mean((raw > torch.log(torch.tensor(cap, dtype=raw.dtype))).to(raw.dtype)),
        "tokens": n,
    }
    return weights, metrics
