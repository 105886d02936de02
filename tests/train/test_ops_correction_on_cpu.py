"""dypo_train.ops.correction: truncated importance weights pi_old / pi_sampler (TIS) and their metrics.

- hand values on tiny tensors, the arithmetic in the comments;
- the formulas as TRL (`vllm_importance_sampling_mode` token_truncate / sequence_truncate, ratio
  exp(old - sampling) clipped from above at the cap) and verl (mismatch_kl = mean over response tokens
  of rollout_log_prob - old_log_prob) write them, worked as plain Python loops over random inputs;
- the weight scales the policy loss's per-token surrogate and its gradient, not the KL term.
"""

from __future__ import annotations

import math

import pytest
import torch

from dypo_train.ops import policy_loss, rollout_is_weights

NAN = float("nan")


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


OLD = t([[-1.0, -2.0, NAN], [-0.5, NAN, NAN]])  # NaN = padding, never read
SAMPLER = t([[-1.5, -1.0, NAN], [-0.5, NAN, NAN]])
MASK = t([[1, 1, 0], [1, 0, 0]]).bool()  # log ratios old - sampler: [0.5, -1.0], [0.0]


def test_token_tis_by_hand():
    w, m = rollout_is_weights(OLD, SAMPLER, MASK, mode="tis", cap=2.0)
    torch.testing.assert_close(w, t([[math.exp(0.5), math.exp(-1.0), 1.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(m["is_weight"], t((math.exp(0.5) + math.exp(-1.0) + 1.0) / 3))
    torch.testing.assert_close(m["mismatch_kl"], t((-0.5 + 1.0 + 0.0) / 3))  # mean of sampler - old
    torch.testing.assert_close(m["truncated_frac"], t(0.0))
    torch.testing.assert_close(m["tokens"], t(3.0))
    w, m = rollout_is_weights(OLD, SAMPLER, MASK, mode="tis", cap=1.5)  # e^0.5 = 1.65 > 1.5: truncated
    torch.testing.assert_close(w[0, :2], t([1.5, math.exp(-1.0)]))
    torch.testing.assert_close(m["truncated_frac"], t(1 / 3))


def test_sequence_tis_by_hand():
    w, m = rollout_is_weights(OLD, SAMPLER, MASK, mode="seq_tis", cap=2.0)
    row0 = math.exp(0.5 - 1.0)  # prod_t of the token ratios = exp(-0.5) on both tokens
    torch.testing.assert_close(w, t([[row0, row0, 1.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(m["is_weight"], t((2 * row0 + 1.0) / 3))
    old, sampler = t([[-1.0, -1.0]]), t([[-1.5, -1.2]])  # sum 0.7, exp(0.7) = 2.01 > 2: capped on the whole row
    w, m = rollout_is_weights(old, sampler, torch.ones(1, 2, dtype=torch.bool), mode="seq_tis", cap=2.0)
    torch.testing.assert_close(w, t([[2.0, 2.0]]))
    torch.testing.assert_close(m["truncated_frac"], t(1.0))


def test_none_weighs_nothing_but_still_measures():
    w, m = rollout_is_weights(OLD, SAMPLER, MASK, mode="none")
    assert torch.equal(w, torch.ones_like(w))
    torch.testing.assert_close(m["mismatch_kl"], t(0.5 / 3))
    torch.testing.assert_close(m["is_weight"], t(1.0))


@pytest.mark.parametrize("mode", ["tis", "seq_tis"])
def test_on_policy_weights_are_one(mode):
    old = torch.randn(3, 5, dtype=torch.float64)
    w, m = rollout_is_weights(old, old.clone(), torch.ones(3, 5), mode=mode)
    assert torch.equal(w, torch.ones_like(w))
    assert float(m["mismatch_kl"]) == 0.0 and float(m["truncated_frac"]) == 0.0


def test_empty_and_bad_inputs():
    w, m = rollout_is_weights(torch.zeros(2, 3), torch.full((2, 3), -5.0), torch.zeros(2, 3), mode="tis")
    assert torch.equal(w, torch.ones(2, 3)) and float(m["tokens"]) == 0 and float(m["is_weight"]) == 0
    with pytest.raises(ValueError, match="valid: none, tis, seq_tis"):
        rollout_is_weights(OLD, SAMPLER, MASK, mode="mask")
    with pytest.raises(ValueError, match="cap"):
        rollout_is_weights(OLD, SAMPLER, MASK, cap=0.5)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        rollout_is_weights(OLD, SAMPLER[:1], MASK)


def trl_weights(old, sampler, mask, mode, cap):
    """TRL's rule, token by token in plain Python: token_truncate min(exp(old - s), C); sequence_truncate
    min(exp(sum over the row's tokens of old - s), C) on every token of the row."""
    out = []
    for o_row, s_row, m_row in zip(old.tolist(), sampler.tolist(), mask.tolist()):
        diffs = [o - s for o, s, m in zip(o_row, s_row, m_row) if m]
        seq = min(math.exp(sum(diffs)), cap)
        out.append([(min(math.exp(o - s), cap) if mode == "tis" else seq) if m else 1.0
                    for o, s, m in zip(o_row, s_row, m_row)])
    return torch.tensor(out, dtype=torch.float64)


def verl_mismatch_kl(old, sampler, mask):
    """verl's mismatch_kl: the mean over response tokens of rollout_log_prob - old_log_prob."""
    pairs = [(s - o) for o_row, s_row, m_row in zip(old.tolist(), sampler.tolist(), mask.tolist())
             for o, s, m in zip(o_row, s_row, m_row) if m]
    return sum(pairs) / len(pairs)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["tis", "seq_tis"])
def test_against_trl_and_verl_formulas(seed, mode):
    g = torch.Generator().manual_seed(seed)
    n, tt = 4, 6
    old = -torch.rand(n, tt, generator=g, dtype=torch.float64) * 3
    sampler = old + torch.randn(n, tt, generator=g, dtype=torch.float64) * 0.3
    mask = torch.rand(n, tt, generator=g) > 0.3
    mask[0] = True
    cap = 1.2
    w, m = rollout_is_weights(old, sampler, mask, mode=mode, cap=cap)
    torch.testing.assert_close(w, trl_weights(old, sampler, mask, mode, cap))
    torch.testing.assert_close(m["mismatch_kl"], t(verl_mismatch_kl(old, sampler, mask)))
    ref = trl_weights(old, sampler, mask, mode, cap)
    torch.testing.assert_close(m["is_weight"], ref[mask].mean())


def test_weights_scale_the_surrogate_and_its_gradient_not_the_kl():
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    old = lp.detach() + torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.1
    ref = lp.detach() - 0.2
    adv, mask, weights = t([1.0, -0.5, 2.0]), torch.ones(3, 4), torch.ones(3, dtype=torch.float64)
    is_w = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5
    base = dict(ref_logprobs=ref, clip_eps=0.2, norm="sum", denominator=1.0)
    plain, _ = policy_loss(lp, old, adv, mask, weights, **base)
    (g_plain,) = torch.autograd.grad(plain, lp)
    weighted, _ = policy_loss(lp, old, adv, mask, weights, is_weights=is_w, **base)
    (g_weighted,) = torch.autograd.grad(weighted, lp)
    # per token: surrogate_t -> w_t * surrogate_t, so the gradient of each token scales by w_t
    torch.testing.assert_close(g_weighted, g_plain * is_w)
    with_kl, _ = policy_loss(lp, old, adv, mask, weights, is_weights=is_w, beta_kl=0.5, **base)
    kl = (torch.exp(ref - lp) - (ref - lp) - 1).sum()  # k3, unweighted
    torch.testing.assert_close(with_kl, weighted + 0.5 * kl)
