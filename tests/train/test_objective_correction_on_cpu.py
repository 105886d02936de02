"""loss.rollout_correction inside the trainer's micro-batch loss: the RL term of rows with stored sampling
logprobs is reweighed by pi_old / pi_sampler (pi_old: the trainer's logprobs before the update), rows
without them are left alone, and the mismatch metrics are summed whatever the mode."""

from __future__ import annotations

import math

import pytest
import torch

from dypo_train.config import LossConfig
from dypo_train.loop.objective import collate, micro_batch_loss, step_denominators
from dypo_train.loop.plan import RL, Row
from dypo_train.stream.tokens import TokenizedSequence

LP = [[-1.0, -2.0], [-0.5, -0.7]]  # the trainer's logprobs of each completion token (N=2, T=2)


def rows(sampler: list[list[float] | None]) -> list[Row]:
    return [Row(0, RL, TokenizedSequence([1, 2], [3, 4], s), rl_weight=1.0, advantage=a, reward=r)
            for s, a, r in zip(sampler, (1.0, -1.0), (1.0, 0.0))]


def loss_of(mode: str, sampler, cap: float = 2.0):
    cfg = LossConfig(rollout_correction=mode, rollout_is_cap=cap, alpha=1.0, norm="sum")
    rs = rows(sampler)
    batch = collate(rs, pad_id=0)
    den = step_denominators(rs, cfg, max_completion_tokens=1)
    lp = torch.tensor(LP, dtype=torch.float32)
    loss, sums = micro_batch_loss(lp, batch, den, cfg, ref_logprobs=None, old_mode="recompute")
    return float(loss), {k: float(v) for k, v in sums.items()}


def test_tis_by_hand():
    # ratio 1 (recompute), so the surrogate per token is -A; row 0: A = 1, row 1: A = -1; norm sum: / (2 rows x 1)
    sampler = [[-1.5, -1.0], [-0.5, -0.7]]  # row 0's log weights 0.5, -1.0; row 1 on-policy
    none, sums = loss_of("none", sampler)
    assert none == pytest.approx(-1 - 1 + 1 + 1)  # 0
    assert sums["rollout/tokens"] == 4
    assert sums["rollout/mismatch_kl_sum"] == pytest.approx(-0.5 + 1.0)
    assert sums["rollout/is_weight_sum"] == pytest.approx(4.0)
    tis, sums = loss_of("tis", sampler)
    assert tis == pytest.approx((-(math.exp(0.5) + math.exp(-1.0)) + 2.0) / 2, abs=1e-6)
    assert sums["rollout/is_weight_sum"] == pytest.approx(math.exp(0.5) + math.exp(-1.0) + 2.0, abs=1e-6)
    seq, _ = loss_of("seq_tis", sampler)
    assert seq == pytest.approx((-2 * math.exp(-0.5) + 2.0) / 2, abs=1e-6)
    capped, sums = loss_of("tis", sampler, cap=1.2)
    assert capped == pytest.approx((-(1.2 + math.exp(-1.0)) + 2.0) / 2, abs=1e-6)
    assert sums["rollout/truncated_sum"] == pytest.approx(1.0)


def test_rows_without_sampling_logprobs_are_not_reweighed():
    plain, sums = loss_of("tis", [None, None])
    assert plain == pytest.approx(0.0) and "rollout/tokens" not in sums
    mixed, sums = loss_of("tis", [[-1.5, -1.0], None])
    assert mixed == pytest.approx((-(math.exp(0.5) + math.exp(-1.0)) + 2.0) / 2, abs=1e-6)
    assert sums["rollout/tokens"] == 2
