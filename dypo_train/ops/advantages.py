"""Group-normalised advantages (GRPO): each rollout's reward against the other rollouts of its prompt."""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, valid: Tensor, *, eps: float = 1e-6, scale_by_std: bool = True) -> Tensor:
    """A = (R - mean R) / (std R + eps) over the valid samples of each group.

    - std is the unbiased (n - 1) estimate, as torch.std, TRL and verl use.
    - Invalid samples get 0 and do not enter the group statistics.
    - A group whose valid rewards are all equal (one valid sample included) gets exactly 0: no
      division of rounding noise by `eps`.
    - `scale_by_std=False` gives R - mean R (Dr. GRPO).

    Shapes:
        rewards: (B, G) float (invalid entries may hold anything, NaN included)
        valid:   (B, G) bool
        returns: (B, G), rewards' dtype (float32 for non-float rewards)
    """
    if rewards.shape != valid.shape or rewards.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)} and valid {tuple(valid.shape)} must both be (B, G)")
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    valid = valid.bool()
    if rewards.shape[1] == 0:
        return torch.zeros(rewards.shape, dtype=dtype, device=rewards.device)
    r = rewards.to(dtype).masked_fill(~valid, 0.0)  # (B, G)
    n = valid.sum(dim=1, keepdim=True).to(dtype)  # (B, 1) valid samples per group
    mean = r.sum(dim=1, keepdim=True) / n.clamp(min=1.0)  # (B, 1)
    centred = (r - mean).masked_fill(~valid, 0.0)  # (B, G)
    adv = centred
    if scale_by_std:
        var = centred.square().sum(dim=1, keepdim=True) / (n - 1.0).clamp(min=1.0)  # (B, 1) unbiased
        adv = centred / (var.sqrt() + eps)
    hi = r.masked_fill(~valid, float("-inf")).amax(dim=1, keepdim=True)  # (B, 1)
    lo = r.masked_fill(~valid, float("inf")).amin(dim=1, keepdim=True)  # (B, 1)
    flat = (hi == lo) | (n < 2)  # (B, 1) no spread: advantage exactly 0
    return torch.where(flat | ~valid, torch.zeros_like(adv), adv)
