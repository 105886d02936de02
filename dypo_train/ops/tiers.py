"""Grading tiers of prompts from their rollout groups (DESIGN.md, "The method, exactly").

A prompt's tier depends only on the rewards of its valid (verified) rollouts:

| code | name     | condition                                         |
|------|----------|---------------------------------------------------|
| 0    | easy     | every valid reward equal and >= `success`         |
| 1    | mid      | valid rewards not all equal                       |
| 2    | hard     | every valid reward equal and < `success`          |
| 3    | unscored | no valid rollout (nothing could be verified)      |
"""

from __future__ import annotations

import torch
from torch import Tensor

EASY = 0
MID = 1
HARD = 2
UNSCORED = 3
TIER_NAMES = ("easy", "mid", "hard", "unscored")  # TIER_NAMES[code]


def group_tiers(rewards: Tensor, valid: Tensor, *, success: float = 1.0) -> Tensor:
    """Tier code of each prompt (EASY, MID, HARD or UNSCORED).

    Rewards need not be binary: a group is MID as soon as two valid rewards differ, and a group of
    equal rewards is EASY when that reward reaches `success`, HARD otherwise. Invalid entries are
    ignored whatever their value (NaN included).

    Shapes:
        rewards: (B, G) float
        valid:   (B, G) bool, True where the rollout was verified
        returns: (B,) long
    """
    if rewards.shape != valid.shape or rewards.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)} and valid {tuple(valid.shape)} must both be (B, G)")
    valid = valid.bool()
    if rewards.shape[1] == 0:  # no samples at all: nothing is scored
        return torch.full(rewards.shape[:1], UNSCORED, dtype=torch.long, device=rewards.device)
    r = rewards.float()
    hi = r.masked_fill(~valid, float("-inf")).amax(dim=1)  # (B,)
    lo = r.masked_fill(~valid, float("inf")).amin(dim=1)  # (B,)
    scored = valid.any(dim=1)  # (B,)
    all_equal = hi == lo  # (B,), only meaningful where scored
    tiers = torch.full(hi.shape, HARD, dtype=torch.long, device=rewards.device)
    tiers = torch.where(all_equal & (lo >= success), torch.full_like(tiers, EASY), tiers)
    tiers = torch.where(~all_equal, torch.full_like(tiers, MID), tiers)
    return torch.where(scored, tiers, torch.full_like(tiers, UNSCORED))
