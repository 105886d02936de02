"""The per-token losses of DYPO and its baselines: SFT, clipped policy gradient (GRPO / GSPO), GAL, LUFFY.

Every loss takes per-token log-probabilities of the policy being trained and returns
`(loss, metrics)`; metrics are detached tensors (no `.item()`: the loop decides when to sync).

Weights and normalisation (the `norm` / `denominator` arguments, common to all token losses):

- `weights` (N,): one weight per row. A row of weight 0 is removed: it adds nothing to the loss,
  gets exactly zero gradient and is not counted in any default denominator or metric. A *counted*
  token is a token with mask 1 in a row of weight > 0.
- `norm="token_mean"`: sum over tokens of weight * loss / denominator; default denominator = number
  of counted tokens.
- `norm="seq_mean"`: per-row mean over its mask tokens, then sum over rows of weight * that /
  denominator; default denominator = number of rows of weight > 0 (a row with no mask token
  counts, and adds 0).
- `norm="sum"`: sum over tokens of weight * loss / denominator; default denominator = T (pass a
  constant such as the maximum completion length, as Dr. GRPO does, so padding does not matter).
- `denominator`: when None it is computed from this call's inputs as above. For gradient
  accumulation and data parallelism the loop passes the GLOBAL value instead (the sum of
  `loss_denominator(...)` over every micro-batch of the optimizer step and over every rank, or the
  constant for "sum"); then the sum of the micro-batch losses equals the loss of the whole batch,
  and the gradients too. A float or a 0-d tensor; values below 1 are raised to 1, so a batch with
  nothing counted gives loss 0 (still attached to the graph), never NaN.

Values at positions that are not counted (mask 0, or a row of weight 0) are never read: they may
hold anything, NaN included, and get exactly zero gradient. Log-ratios are clamped to
+-LOG_RATIO_CLAMP before `exp` (as verl does); that only matters for a policy drifted absurdly far.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_RATIO_CLAMP = 20.0  # |log ratio| cap before exp (ratios and the k3 KL)


class _Norm(NamedTuple):
    numerator: Callable[[Tensor, Tensor, Tensor], Tensor]  # (per_token (N,T) 0 where not counted, mask, w (N,))
    denominator: Callable[[Tensor, Tensor], Tensor]  # (counted (N,T) bool, w (N,)) -> 0-d default denominator


_NORMS: dict[str, _Norm] = {
    "token_mean": _Norm(
        numerator=lambda x, m, w: (x * w.unsqueeze(1)).sum(),
        denominator=lambda counted, w: counted.sum().to(w.dtype),
    ),
    "seq_mean": _Norm(
        numerator=lambda x, m, w: (w * x.sum(1) / m.sum(1).clamp(min=1).to(x.dtype)).sum(),
        denominator=lambda counted, w: (w > 0).sum().to(w.dtype),
    ),
    "sum": _Norm(
        numerator=lambda x, m, w: (x * w.unsqueeze(1)).sum(),
        denominator=lambda counted, w: torch.tensor(float(counted.shape[1]), dtype=w.dtype, device=w.device),
    ),
}


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def _masks(logprobs: Tensor, mask: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mask as bool (N,T), counted tokens (N,T) bool, weights (N,) in logprobs' dtype); checks shapes."""
    if logprobs.dim() != 2 or mask.shape != logprobs.shape or weights.shape != logprobs.shape[:1]:
        raise ValueError(
            f"expected logprobs (N, T), mask (N, T), weights (N,); got {tuple(logprobs.shape)}, "
            f"{tuple(mask.shape)}, {tuple(weights.shape)}"
        )
    m = mask.bool()
    w = weights.detach().to(logprobs.dtype)
    return m, m & (w > 0).unsqueeze(1), w


def _like(name: str, x: Tensor, shape: torch.Size, counted: Tensor) -> Tensor:
    """A detached (N, T) companion of logprobs with zeros where not counted."""
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x.detach().to(counted.device).masked_fill(~counted, 0.0)


def _rows(name: str, x: Tensor, n: int) -> Tensor:
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(x.shape)}")
    return x.detach()


def _masked_mean(x: Tensor, counted: Tensor) -> Tensor:
    """Detached mean of x over the counted positions (0 when none)."""
    x = x.detach().masked_fill(~counted, 0.0)
    return x.sum() / counted.sum().clamp(min=1).to(x.dtype)


def _reduce(per_token: Tensor, m: Tensor, counted: Tensor, w: Tensor, *, norm: str, denominator) -> Tensor:
    """Weighted sum of the per-token loss under `norm`, divided by the (given or default) denominator."""
    spec = _lookup(_NORMS, "norm", norm)
    x = per_token.masked_fill(~counted, 0.0)  # (N, T) exact zeros where not counted: no NaN * 0
    num = spec.numerator(x, m, w)
    den = spec.denominator(counted, w) if denominator is None else torch.as_tensor(denominator, device=x.device)
    return num / den.detach().to(x.dtype).clamp(min=1.0)


def loss_denominator(mask: Tensor, weights: Tensor, *, norm: str = "token_mean") -> Tensor:
    """The default denominator of a token loss for this micro-batch (see the module docstring).

    Sum it over micro-batches and ranks (all-reduce) to get the global `denominator`. For "sum" it
    is T; pass a constant instead.

    Shapes:
        mask:    (N, T)
        weights: (N,)
        returns: () float
    """
    if mask.dim() != 2 or weights.shape != mask.shape[:1]:
        raise ValueError(f"expected mask (N, T) and weights (N,); got {tuple(mask.shape)}, {tuple(weights.shape)}")
    w = weights.detach().float()
    return _lookup(_NORMS, "norm", norm).denominator(mask.bool() & (w > 0).unsqueeze(1), w)


def sft_loss(
    logprobs: Tensor,
    mask: Tensor,
    weights: Tensor,
    *,
    norm: str = "token_mean",
    denominator: float | Tensor | None = None,
):
    """Negative log-likelihood of target tokens (teacher traces).

    Shapes:
        logprobs: (N, T) log pi_theta of each target token
        mask:     (N, T) 1 = token counts
        weights:  (N,)
        returns:  loss (), {"nll": () mean nll per counted token, "tokens": () counted tokens}
    """
    m, counted, w = _masks(logprobs, mask, weights)
    nll = -logprobs.masked_fill(~counted, 0.0)  # (N, T)
    loss = _reduce(nll, m, counted, w, norm=norm, denominator=denominator)
    return loss, {"nll": _masked_mean(nll, counted), "tokens": counted.sum().to(nll.dtype)}


def _token_ratio(lp: Tensor, old: Tensor, m: Tensor) -> Tensor:
    """PPO / GRPO: r_t = pi_theta(y_t) / pi_old(y_t). (N, T)"""
    return (lp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()


def _sequence_ratio(lp: Tensor, old: Tensor, m: Tensor) -> Tensor:
    """GSPO-token: value s_i = exp(mean_t(lp - old)) on every token of row i, gradient s_i * grad lp_t. (N, T)"""
    n = m.sum(1).clamp(min=1).to(lp.dtype)  # (N,) tokens per row
    log_s = ((lp - old).sum(1) / n).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (N,) lp, old: 0 if not counted
    return (log_s.detach().unsqueeze(1) + lp - lp.detach()).exp()  # (N, T) = sg[s_i] * pi / sg[pi]


_RATIOS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {"token": _token_ratio, "sequence": _sequence_ratio}


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 estimator of KL(pi_theta || pi_ref) per token: exp(ref - lp) - (ref - lp) - 1 >= 0.

    Shapes: logprobs, ref_logprobs (N, T) -> (N, T)
    """
    d = (ref_logprobs.detach() - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return d.exp() - d - 1.0


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    weights: Tensor,
    *,
    ref_logprobs: Tensor | None = None,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    beta_kl: float = 0.0,
    ratio_level: str = "token",
    norm: str = "token_mean",
    denominator: float | Tensor | None = None,
    is_weights: Tensor | None = None,
):
    """Clipped surrogate -min(r A, clip(r, 1 - clip_eps, 1 + clip_eps_high) A) per token, + beta_kl * k3 KL.

    `ratio_level="token"`: r = pi_theta / pi_old per token (PPO, GRPO, DAPO with clip_eps_high).
    `ratio_level="sequence"`: GSPO, r = s_i = exp(mean over row i's mask tokens of (lp - old)),
    clipped on s_i, in the GSPO-token form sg[s_i] * pi / sg[pi], whose gradient per token is
    s_i * grad lp (so with norm="seq_mean" each row gives s_i * A_i * mean_t grad lp, GSPO's).
    The KL term (only when `ref_logprobs` is given) is per token at both levels; its metric is
    reported whenever `ref_logprobs` is given, added to the loss only when beta_kl != 0.
    clip_frac is the share of counted tokens where the clipped branch is the larger loss.
    `is_weights` (off-policy correction, `ops.rollout_is_weights`): detached per-token factors of the
    clipped surrogate (not of the KL term), as TRL and verl apply their truncated importance weights.

    Shapes:
        logprobs, old_logprobs, ref_logprobs: (N, T)
        advantages: (N,) one per row (group-normalised upstream)
        mask:       (N, T) 1 = token counts
        weights:    (N,)
        is_weights: (N, T) or None (all 1)
        returns:    loss (), {"clip_frac": (), "kl": (), "ratio_mean": ()}
    """
    m, counted, w = _masks(logprobs, mask, weights)
    lp = logprobs.masked_fill(~counted, 0.0)  # (N, T)
    old = _like("old_logprobs", old_logprobs, logprobs.shape, counted)  # (N, T)
    adv = _rows("advantages", advantages, len(w)).to(lp.dtype).unsqueeze(1)  # (N, 1)
    ratio = _lookup(_RATIOS, "ratio_level", ratio_level)(lp, old, m)  # (N, T)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    unclipped = -ratio * adv  # (N, T)
    clipped = -ratio.clamp(1.0 - clip_eps, 1.0 + high) * adv  # (N, T)
    per_token = torch.maximum(unclipped, clipped)  # (N, T) = -min(r A, clip(r) A)
    if is_weights is not None:
        per_token = per_token * _like("is_weights", is_weights, logprobs.shape, counted).to(lp.dtype)  # (N, T)
    kl = torch.zeros_like(lp)
    if ref_logprobs is not None:
        kl = k3_kl(lp, _like("ref_logprobs", ref_logprobs, logprobs.shape, counted))  # (N, T)
        if beta_kl != 0.0:
            per_token = per_token + beta_kl * kl
    loss = _reduce(per_token, m, counted, w, norm=norm, denominator=denominator)
    metrics = {
        "clip_frac": _masked_mean((clipped > unclipped).to(lp.dtype), counted),
        "kl": _masked_mean(kl, counted),
        "ratio_mean": _masked_mean(ratio, counted),
    }
    return loss, metrics


def gal_pairs(rewards: Tensor, group_index: Tensor, weights: Tensor) -> Tensor:
    """The GAL pairs: [s, f] is True when s and f share a group, rewards[s] > rewards[f] and both weights > 0.

    Ties give no pair; NaN rewards give none either. Sum it over micro-batches and ranks for a
    global GAL `denominator` (groups must not be split across micro-batches).

    Shapes:
        rewards, group_index, weights: (N,)
        returns: (N, N) bool, rows = the better sample s, columns = the worse f
    """
    n = rewards.shape[0]
    if rewards.dim() != 1 or group_index.shape != (n,) or weights.shape != (n,):
        raise ValueError(
            f"rewards, group_index and weights must all be (N,); got {tuple(rewards.shape)}, "
            f"{tuple(group_index.shape)}, {tuple(weights.shape)}"
        )
    live = weights.detach() > 0  # (N,)
    same = group_index.unsqueeze(1) == group_index.unsqueeze(0)  # (N, N)
    better = rewards.unsqueeze(1) > rewards.unsqueeze(0)  # (N, N) r_s > r_f
    return same & better & live.unsqueeze(1) & live.unsqueeze(0)


def gal_loss(
    logprobs: Tensor,
    mask: Tensor,
    rewards: Tensor,
    group_index: Tensor,
    weights: Tensor,
    *,
    ref_logprobs: Tensor | None = None,
    beta: float = 1.0,
    denominator: float | Tensor | None = None,
):
    """Group Alignment Loss: sum over pairs of w_s * -log sigmoid(beta * (d_s - d_f)) / denominator.

    d_i = sum over row i's mask tokens of (lp - ref); without `ref_logprobs`, the raw sequence
    log-probability (the public DYPO code's variant, no reference model). Pairs are `gal_pairs`;
    the pair weight is weights[s] (rows of one group share one weight). Default denominator: the
    number of pairs. Metrics: "pairs" (count), "pair_acc" (share of pairs with d_s > d_f),
    "margin" (mean d_s - d_f), all 0 without pairs.

    Shapes:
        logprobs, ref_logprobs: (N, T)
        mask:        (N, T) 1 = token counts
        rewards:     (N,) any real rewards (binary or not)
        group_index: (N,) long, the prompt (group) of each row
        weights:     (N,)
        returns:     loss (), {"pairs": (), "pair_acc": (), "margin": ()}
    """
    _, counted, w = _masks(logprobs, mask, weights)
    lp = logprobs.masked_fill(~counted, 0.0)  # (N, T)
    if ref_logprobs is not None:
        lp = lp - _like("ref_logprobs", ref_logprobs, logprobs.shape, counted)
    d = lp.sum(1)  # (N,) sequence log-ratio (or log-probability)
    pairs = gal_pairs(rewards.detach().to(d.device), group_index.to(d.device), w)  # (N, N)
    diff = d.unsqueeze(1) - d.unsqueeze(0)  # (N, N) d_s - d_f
    per_pair = -F.logsigmoid(beta * diff) * w.unsqueeze(1)  # (N, N) weighted by weights[s]
    num = torch.where(pairs, per_pair, torch.zeros_like(per_pair)).sum()
    n_pairs = pairs.sum().to(d.dtype)
    den = n_pairs if denominator is None else torch.as_tensor(denominator, device=d.device).to(d.dtype)
    loss = num / den.detach().clamp(min=1.0)
    diff = diff.detach()
    metrics = {
        "pairs": n_pairs.detach(),
        "pair_acc": (pairs & (diff > 0)).sum().to(d.dtype) / n_pairs.clamp(min=1.0),
        "margin": torch.where(pairs, diff, torch.zeros_like(diff)).sum() / n_pairs.clamp(min=1.0),
    }
    return loss, metrics


def offpolicy_shaped_loss(
    logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    weights: Tensor,
    *,
    shaping: float = 0.1,
    norm: str = "token_mean",
    denominator: float | Tensor | None = None,
):
    """LUFFY's off-policy term for teacher tokens: -A * f(p) per token, p = exp(lp), f(p) = p / (p + shaping), no clip.

    Shapes:
        logprobs:   (N, T) log pi_theta of the teacher's tokens
        advantages: (N,)
        mask:       (N, T) 1 = token counts
        weights:    (N,)
        returns:    loss (), {"prob_mean": () mean p, "shaped_mean": () mean f(p)} over counted tokens
    """
    m, counted, w = _masks(logprobs, mask, weights)
    p = logprobs.masked_fill(~counted, 0.0).exp()  # (N, T)
    f = p / (p + shaping)  # (N, T)
    adv = _rows("advantages", advantages, len(w)).to(p.dtype).unsqueeze(1)  # (N, 1)
    loss = _reduce(-adv * f, m, counted, w, norm=norm, denominator=denominator)
    return loss, {"prob_mean": _masked_mean(p, counted), "shaped_mean": _masked_mean(f, counted)}
