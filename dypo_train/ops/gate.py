"""The gate: which objective each prompt trains, and with what coefficient, by tier.

Each gate is a function registered under a name with `@register_gate(name)` (a decorator
registry, as verl's advantage estimators and policy losses). `route(gate, ...)` looks it up and
returns one weight per prompt for each term; the loop multiplies them into the `weights` of the
SFT, RL (policy) and GAL losses, so a weight of 0 closes that term for that prompt.

- "dypo" (the method): hard with a teacher -> gamma SFT; mid -> alpha RL + (1 - alpha) GAL;
  easy, unscored and hard without a teacher -> nothing.
- "none" (ablation, no grading): every prompt -> gamma SFT (if it has a teacher) + alpha RL +
  (1 - alpha) GAL.
- "sft" (baseline, SFT only): every prompt with a teacher -> gamma SFT.
- "rl" (baseline, GRPO + GAL): every scored prompt -> alpha RL + (1 - alpha) GAL (easy and hard
  groups have zero advantages and no pairs anyway); alpha = 1 is plain GRPO.
- "static" (baseline, static mix): every prompt -> sft_coef SFT (if it has a teacher) +
  (1 - sft_coef) RL.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from dypo_train.ops.tiers import HARD, MID, UNSCORED


class Route(NamedTuple):
    """Per-prompt coefficients of each term, each (B,) float32; 0 = that term is off for the prompt."""

    sft: Tensor
    rl: Tensor
    gal: Tensor


GateFn = Callable[..., Route]  # (tiers (B,), has_teacher (B,), *, gamma, alpha, sft_coef) -> Route
_GATES: dict[str, GateFn] = {}


def register_gate(name: str) -> Callable[[GateFn], GateFn]:
    """Register a gate function under `name` (decorator)."""

    def decorate(fn: GateFn) -> GateFn:
        if name in _GATES and _GATES[name] is not fn:
            raise ValueError(f"gate {name!r} is already registered (by {_GATES[name].__qualname__})")
        _GATES[name] = fn
        return fn

    return decorate


def gate_names() -> tuple[str, ...]:
    """The registered gate names, sorted (for config validation and help text)."""
    return tuple(sorted(_GATES))


def get_gate(name: str) -> GateFn:
    """The gate function registered under `name`; ValueError listing the valid names otherwise."""
    if name not in _GATES:
        raise ValueError(f"unknown gate {name!r}; valid: {', '.join(gate_names())}")
    return _GATES[name]


def route(gate: str, tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    """Per-prompt weights of the SFT, RL and GAL terms under the named gate.

    Shapes:
        tiers:       (B,) long tier codes (ops.tiers)
        has_teacher: (B,) bool, True when the prompt has a verified teacher trace
        returns:     Route(sft (B,), rl (B,), gal (B,)) float32
    """
    if tiers.dim() != 1 or has_teacher.shape != tiers.shape:
        raise ValueError(
            f"tiers and has_teacher must both be (B,); got {tuple(tiers.shape)}, {tuple(has_teacher.shape)}"
        )
    return get_gate(gate)(tiers, has_teacher.bool(), gamma=gamma, alpha=alpha, sft_coef=sft_coef)


def _w(on: Tensor, coef: float) -> Tensor:
    """coef where `on`, else 0. (B,) float32"""
    return on.to(torch.float32) * coef


@register_gate("dypo")
def _dypo(tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    mid = tiers == MID
    return Route(sft=_w((tiers == HARD) & has_teacher, gamma), rl=_w(mid, alpha), gal=_w(mid, 1.0 - alpha))


@register_gate("none")
def _none(tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    every = torch.ones_like(has_teacher)
    return Route(sft=_w(has_teacher, gamma), rl=_w(every, alpha), gal=_w(every, 1.0 - alpha))


@register_gate("sft")
def _sft(tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    off = torch.zeros_like(has_teacher)
    return Route(sft=_w(has_teacher, gamma), rl=_w(off, 0.0), gal=_w(off, 0.0))


@register_gate("rl")
def _rl(tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    scored = tiers != UNSCORED
    return Route(sft=_w(torch.zeros_like(has_teacher), 0.0), rl=_w(scored, alpha), gal=_w(scored, 1.0 - alpha))


@register_gate("static")
def _static(tiers: Tensor, has_teacher: Tensor, *, gamma: float, alpha: float, sft_coef: float) -> Route:
    every = torch.ones_like(has_teacher)
    off = torch.zeros_like(has_teacher)
    return Route(sft=_w(has_teacher, sft_coef), rl=_w(every, 1.0 - sft_coef), gal=_w(off, 0.0))
