"""Pure tensor maths of the trainer: tiers, advantages, log-probs, SFT / GRPO / GSPO / GAL / LUFFY losses,
off-policy correction, gate.

torch and the standard library only: no configs, no I/O, no logging, no `.item()`. Every loss returns
`(loss, metrics)` with detached metrics; the `norm` / `denominator` rules are in `ops.losses`.
"""

from dypo_train.ops.advantages import group_advantages
from dypo_train.ops.correction import CORRECTIONS, rollout_is_weights
from dypo_train.ops.gate import Route, gate_names, get_gate, register_gate, route
from dypo_train.ops.logits import token_entropy, token_logprobs, token_logprobs_and_entropy
from dypo_train.ops.losses import (
    gal_loss,
    gal_pairs,
    k3_kl,
    loss_denominator,
    offpolicy_shaped_loss,
    policy_loss,
    sft_loss,
)
from dypo_train.ops.tiers import EASY, HARD, MID, TIER_NAMES, UNSCORED, group_tiers

__all__ = [
    "CORRECTIONS",
    "EASY",
    "HARD",
    "MID",
    "TIER_NAMES",
    "UNSCORED",
    "Route",
    "gal_loss",
    "gal_pairs",
    "gate_names",
    "get_gate",
    "group_advantages",
    "group_tiers",
    "k3_kl",
    "loss_denominator",
    "offpolicy_shaped_loss",
    "policy_loss",
    "register_gate",
    "rollout_is_weights",
    "route",
    "sft_loss",
    "token_entropy",
    "token_logprobs",
    "token_logprobs_and_entropy",
]
