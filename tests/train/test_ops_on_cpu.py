"""dypo_train.ops: tiers, advantages, log-probs / entropy and the gate (the losses: test_ops_losses_on_cpu.py).

Hand-computed values on tiny tensors (the arithmetic is in the comments), naive Python loops
against the vectorised code over random shapes and seeds, and the edge cases of STYLE.md.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from dypo_train import ops
from dypo_train.ops import (
    EASY,
    HARD,
    MID,
    TIER_NAMES,
    UNSCORED,
    Route,
    gal_loss,
    gate_names,
    get_gate,
    group_advantages,
    group_tiers,
    policy_loss,
    register_gate,
    route,
    sft_loss,
    token_entropy,
    token_logprobs,
)

NAN = float("nan")
SEEDS = range(4)


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- tiers


def test_tier_codes_and_names():
    assert (EASY, MID, HARD, UNSCORED) == (0, 1, 2, 3)
    assert TIER_NAMES == ("easy", "mid", "hard", "unscored")


def test_group_tiers_by_hand():
    rewards = t([
        [1.0, 1.0, 1.0],  # all correct -> easy
        [0.0, 1.0, 0.0],  # one success -> mid
        [0.0, 0.0, 0.0],  # all wrong -> hard
        [1.0, 0.0, 1.0],  # nothing valid -> unscored
        [1.0, 0.0, NAN],  # the only different reward is invalid -> easy
        [0.5, 0.5, 0.5],  # non-binary, all equal below success -> hard
        [2.0, 2.0, 2.0],  # all equal above success -> easy
        [0.2, 0.7, 0.7],  # non-binary, not all equal -> mid
    ])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    valid[3] = False
    valid[4, 1:] = False
    expected = [EASY, MID, HARD, UNSCORED, EASY, HARD, EASY, MID]
    assert group_tiers(rewards, valid).tolist() == expected
    assert group_tiers(rewards, valid).dtype == torch.long
    # a lower success threshold turns the all-0.5 group easy
    assert group_tiers(rewards[5:6], valid[5:6], success=0.5).tolist() == [EASY]


def test_group_tiers_g1_and_empty():
    assert group_tiers(t([[1.0], [0.0]]), torch.tensor([[True], [True]])).tolist() == [EASY, HARD]
    assert group_tiers(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.bool)).shape == (0,)
    assert group_tiers(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool)).tolist() == [UNSCORED] * 2


def tiers_loop(rewards, valid, success):
    out = []
    for row, ok in zip(rewards.tolist(), valid.tolist()):
        vals = [r for r, v in zip(row, ok) if v]
        if not vals:
            out.append(UNSCORED)
        elif len(set(vals)) > 1:
            out.append(MID)
        else:
            out.append(EASY if vals[0] >= success else HARD)
    return out


def random_groups(seed, *, binary=True):
    g = torch.Generator().manual_seed(seed)
    b, k = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 7, (1,), generator=g))
    if binary:
        rewards = torch.randint(0, 2, (b, k), generator=g).double()
    else:
        rewards = torch.randint(0, 4, (b, k), generator=g).double() / 2  # ties are likely
    valid = torch.rand(b, k, generator=g) > 0.2
    return rewards.masked_fill(~valid, NAN), valid


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_group_tiers_matches_loop(seed, binary):
    rewards, valid = random_groups(seed, binary=binary)
    assert group_tiers(rewards, valid).tolist() == tiers_loop(rewards, valid, 1.0)


# ---------------------------------------------------------------- advantages


def test_group_advantages_by_hand():
    rewards = t([
        [1.0, 0.0, 0.0, 1.0],  # mean .5, unbiased var = 4 * .25 / 3 = 1/3, std .57735 -> +-.5/.57735 = +-.866025
        [1.0, 0.0, 0.0, NAN],  # one success among 3 valid: mean 1/3, var = (4/9 + 1/9 + 1/9) / 2 = 1/3
        [1.0, NAN, 0.0, 0.0],  # invalid in the middle: same group statistics as above
        [0.2, 0.5, 0.8, NAN],  # non-binary: mean .5, var = (.09 + 0 + .09) / 2 = .09, std .3 -> -1, 0, 1
        [1.0, 1.0, 1.0, 1.0],  # all equal -> exactly 0
        [0.0, NAN, NAN, NAN],  # one valid sample -> 0
        [NAN, NAN, NAN, NAN],  # none valid -> 0
    ])
    valid = ~rewards.isnan()
    adv = group_advantages(rewards, valid, eps=1e-6)
    s = math.sqrt(1 / 3)
    expected = t([
        [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s],
        [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 0.0],
        [(2 / 3) / s, 0.0, (-1 / 3) / s, (-1 / 3) / s],
        [-1.0, 0.0, 1.0, 0.0],
        [0.0] * 4,
        [0.0] * 4,
        [0.0] * 4,
    ])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)
    assert (adv[4:] == 0).all()  # exact zeros, not 0 / eps rounding noise


def test_group_advantages_without_std_scaling():
    # Dr. GRPO: R - mean; [1, 0, 0] -> mean 1/3 -> [2/3, -1/3, -1/3]
    adv = group_advantages(t([[1.0, 0.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool), scale_by_std=False)
    torch.testing.assert_close(adv, t([[2 / 3, -1 / 3, -1 / 3]]))


def test_group_advantages_equal_non_integer_rewards_are_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floating point; the group still gets exact zeros
    rewards = torch.full((1, 3), 0.1, dtype=torch.float32)
    assert (group_advantages(rewards, torch.ones(1, 3, dtype=torch.bool)) == 0).all()


def test_group_advantages_g1_and_empty():
    assert (group_advantages(t([[1.0], [0.0]]), torch.ones(2, 1, dtype=torch.bool)) == 0).all()
    assert group_advantages(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool)).shape == (0, 3)
    assert group_advantages(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool)).shape == (2, 0)


def advantages_loop(rewards, valid, eps, scale_by_std):
    out = []
    for row, ok in zip(rewards.tolist(), valid.tolist()):
        vals = [r for r, v in zip(row, ok) if v]
        if len(vals) < 2 or len(set(vals)) == 1:
            out.append([0.0] * len(row))
            continue
        mean, std = statistics.mean(vals), statistics.stdev(vals)  # stdev: n - 1, as torch.std
        scale = std + eps if scale_by_std else 1.0
        out.append([(r - mean) / scale if v else 0.0 for r, v in zip(row, ok)])
    return t(out).reshape(rewards.shape)


@pytest.mark.parametrize("scale_by_std", [True, False])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_group_advantages_matches_loop(seed, binary, scale_by_std):
    rewards, valid = random_groups(seed, binary=binary)
    adv = group_advantages(rewards, valid, eps=1e-6, scale_by_std=scale_by_std)
    torch.testing.assert_close(adv, advantages_loop(rewards, valid, 1e-6, scale_by_std))
    assert adv.isfinite().all()


def test_group_advantages_match_torch_std():
    rewards = torch.rand(5, 8, dtype=torch.float64)
    expected = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(group_advantages(rewards, torch.ones(5, 8, dtype=torch.bool)), expected)


# ---------------------------------------------------------------- log-probs and entropy


def reference_logprobs(logits, targets):
    return logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 1024])
def test_token_logprobs_equals_log_softmax_gather(chunk_rows):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11, generator=g)).requires_grad_()
    targets = torch.randint(0, 11, (3, 5), generator=g)
    out = token_logprobs(logits, targets, chunk_rows=chunk_rows)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    weights = torch.randn(3, 5, generator=g)
    (out * weights).sum().backward()
    grad, logits.grad = logits.grad.clone(), None
    ref = reference_logprobs(logits, targets)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, logits.grad)


def test_token_logprobs_chunking_changes_nothing_and_bf16_gives_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 6, 13, generator=g).bfloat16()
    targets = torch.randint(0, 13, (4, 6), generator=g)
    outs = [token_logprobs(logits, targets, chunk_rows=c) for c in (1, 5, 24, 100)]
    assert all(o.dtype == torch.float32 for o in outs)
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    torch.testing.assert_close(outs[0], reference_logprobs(logits, targets))
    # the gradient comes back in the logits' dtype
    leaf = logits.clone().requires_grad_()
    token_logprobs(leaf, targets, chunk_rows=5).sum().backward()
    assert leaf.grad.dtype == torch.bfloat16


def test_token_logprobs_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, generator=g).requires_grad_()
    targets = torch.randint(0, 5, (2, 3), generator=g)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, targets, chunk_rows=4), (logits,))


def test_token_logprobs_by_hand():
    # logits [0, log 3] -> softmax [1/4, 3/4]; targets 1 then 0 -> log .75, log .25
    logits = t([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    out = token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, t([[math.log(0.75), math.log(0.25)]]))


def test_token_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 9, generator=g, requires_grad=True)
    ent = token_entropy(logits, chunk_rows=5)
    assert ent.shape == (3, 4) and ent.dtype == torch.float32 and not ent.requires_grad
    p = logits.detach().softmax(-1)
    torch.testing.assert_close(ent, -(p * p.log()).sum(-1))
    # uniform over 4 -> log 4; a -inf logit (masked vocabulary) counts as probability 0, not NaN
    uniform = torch.zeros(1, 1, 4)
    torch.testing.assert_close(token_entropy(uniform), torch.full((1, 1), math.log(4.0)))
    masked = torch.tensor([[[0.0, 0.0, float("-inf"), float("-inf")]]])
    torch.testing.assert_close(token_entropy(masked), torch.full((1, 1), math.log(2.0)))
    assert torch.equal(token_entropy(logits, chunk_rows=1), token_entropy(logits, chunk_rows=12))


def test_logits_shape_errors():
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_rows"):
        token_entropy(torch.zeros(2, 3, 4), chunk_rows=0)


# ---------------------------------------------------------------- gate

TIERS = torch.tensor([EASY, MID, HARD, HARD, UNSCORED, MID])
TEACHER = torch.tensor([True, True, True, False, True, False])
COEFS = {"gamma": 2.0, "alpha": 0.25, "sft_coef": 0.4}


@pytest.mark.parametrize(
    "gate, sft, rl, gal",
    [
        #        easy  mid   hard  hard-no-teacher  unscored  mid-no-teacher
        ("dypo", [0, 0, 2, 0, 0, 0], [0, 0.25, 0, 0, 0, 0.25], [0, 0.75, 0, 0, 0, 0.75]),
        ("none", [2, 2, 2, 0, 2, 0], [0.25] * 6, [0.75] * 6),
        ("sft", [2, 2, 2, 0, 2, 0], [0] * 6, [0] * 6),
        ("rl", [0] * 6, [0.25, 0.25, 0.25, 0.25, 0, 0.25], [0.75, 0.75, 0.75, 0.75, 0, 0.75]),
        ("static", [0.4, 0.4, 0.4, 0, 0.4, 0], [0.6] * 6, [0] * 6),
    ],
)
def test_route_tables(gate, sft, rl, gal):
    r = route(gate, TIERS, TEACHER, **COEFS)
    assert isinstance(r, Route)
    for got, want in zip(r, (sft, rl, gal)):
        assert got.dtype == torch.float32 and got.shape == (6,)
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))


def test_route_unknown_gate_lists_valid_names():
    assert set(gate_names()) >= {"dypo", "none", "sft", "rl", "static"}
    with pytest.raises(ValueError, match="unknown gate 'dyp'.*dypo, none, rl, sft, static"):
        route("dyp", TIERS, TEACHER, **COEFS)
    with pytest.raises(ValueError, match="already registered"):
        register_gate("dypo")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="has_teacher"):
        route("dypo", TIERS, TEACHER[:2], **COEFS)


def test_registry_decorator_adds_a_gate():
    @register_gate("test-only-half")
    def half(tiers, has_teacher, *, gamma, alpha, sft_coef):
        ones = torch.full(tiers.shape, 0.5)
        return Route(ones, ones, ones)

    try:
        assert get_gate("test-only-half") is half
        assert route("test-only-half", TIERS, TEACHER, **COEFS).rl.tolist() == [0.5] * 6
    finally:
        from dypo_train.ops import gate

        gate._GATES.pop("test-only-half")


def group_batch(b=3, k=4, steps=5, seed=0):
    """Rows of b groups of k samples: logprobs (b*k, steps) leaf, mask, rewards with every tier."""
    g = torch.Generator().manual_seed(seed)
    logprobs = (-torch.rand(b * k, steps, generator=g, dtype=torch.float64)).requires_grad_()
    lengths = torch.randint(1, steps + 1, (b * k,), generator=g)
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    rewards = torch.tensor([[1.0] * k, [1.0, 0.0] * (k // 2), [0.0] * k][:b], dtype=torch.float64)
    return logprobs, mask, rewards


def gated_total(gate, logprobs, mask, rewards, teacher, **coefs):
    """sft + policy + gal with the per-row weights a gate gives (what the loop does)."""
    b, k = rewards.shape
    valid = torch.ones_like(rewards, dtype=torch.bool)
    r = route(gate, group_tiers(rewards, valid), teacher, **coefs)
    rows = lambda w: w.repeat_interleave(k).double()  # (B,) -> (N,)
    adv = group_advantages(rewards, valid).reshape(-1)
    group = torch.arange(b).repeat_interleave(k)
    old = logprobs.detach() - 0.05
    return (
        sft_loss(logprobs, mask, rows(r.sft))[0]
        + policy_loss(logprobs, old, adv, mask, rows(r.rl))[0]
        + gal_loss(logprobs, mask, rewards.reshape(-1), group, rows(r.gal))[0]
    )


def test_all_open_gate_equals_plain_weighted_sum():
    logprobs, mask, rewards = group_batch()
    n, teacher = logprobs.shape[0], torch.ones(3, dtype=torch.bool)
    total = gated_total("none", logprobs, mask, rewards, teacher, gamma=1.5, alpha=0.3, sft_coef=0.0)
    ones = torch.ones(n, dtype=torch.float64)
    adv = group_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool)).reshape(-1)
    group = torch.arange(3).repeat_interleave(4)
    plain = (
        1.5 * sft_loss(logprobs, mask, ones)[0]
        + 0.3 * policy_loss(logprobs, logprobs.detach() - 0.05, adv, mask, ones)[0]
        + 0.7 * gal_loss(logprobs, mask, rewards.reshape(-1), group, ones)[0]
    )
    torch.testing.assert_close(total, plain)


def test_closed_gate_gives_zero_gradient():
    # dypo: the easy group (rows 0-3) gets no term at all, the hard group without a teacher neither
    logprobs, mask, rewards = group_batch()
    teacher = torch.tensor([True, True, False])
    total = gated_total("dypo", logprobs, mask, rewards, teacher, gamma=1.0, alpha=0.5, sft_coef=0.0)
    total.backward()
    assert (logprobs.grad[:4] == 0).all() and (logprobs.grad[8:] == 0).all()
    assert (logprobs.grad[4:8][mask[4:8]] != 0).any()


@pytest.mark.parametrize("chunk_rows", [1, 5, 1024])
def test_fused_logprobs_and_entropy_equal_the_separate_ops(chunk_rows):
    """One pass gives the same log-probs (value and gradient) and entropies as the two ops apart."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 11, generator=g, dtype=torch.float64)
    logits[0, 0, 2] = float("-inf")  # a token the model can never emit: 0 log 0 = 0
    targets = torch.randint(0, 11, (3, 4), generator=g)
    targets[0, 0] = 0
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    lp_fused, ent_fused = ops.token_logprobs_and_entropy(a, targets, chunk_rows=chunk_rows)
    lp = ops.token_logprobs(b, targets, chunk_rows=chunk_rows)
    torch.testing.assert_close(lp_fused, lp)
    torch.testing.assert_close(ent_fused, ops.token_entropy(logits, chunk_rows=chunk_rows))
    assert not ent_fused.requires_grad
    weights = torch.randn(3, 4, generator=g, dtype=torch.float64)
    (lp_fused * weights).sum().backward()
    (lp * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
