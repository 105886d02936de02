"""dypo_train.ops.losses: SFT, policy (GRPO / GSPO, k3 KL), GAL and LUFFY's shaped off-policy term.

- hand-computed values on tiny tensors, the arithmetic in the comments;
- naive Python loops (the textbook formulas, GSPO in its plain sequence form) against the
  vectorised code over random shapes and seeds, values and gradients;
- invariances: micro-batches with the global denominator sum to the full batch, padding length
  changes nothing, a row of weight 0 gets exactly zero gradient;
- gradcheck of GAL in float64, GSPO's gradient against its analytic form.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dypo_train.ops import (
    gal_loss,
    gal_pairs,
    k3_kl,
    loss_denominator,
    offpolicy_shaped_loss,
    policy_loss,
    sft_loss,
)

NAN = float("nan")
NORMS = ("token_mean", "seq_mean", "sum")
SEEDS = range(5)


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def lp_leaf(x):
    return t(x).requires_grad_()


# ---------------------------------------------------------------- hand values


def test_sft_loss_by_hand():
    lp = lp_leaf([[-1.0, -2.0, NAN], [-3.0, NAN, NAN]])  # NaN = padding, never read
    mask = t([[1, 1, 0], [1, 0, 0]]).bool()
    ones = t([1.0, 1.0])
    loss, m = sft_loss(lp, mask, ones)
    torch.testing.assert_close(loss, t(2.0))  # (1 + 2 + 3) / 3 tokens
    torch.testing.assert_close(sft_loss(lp, mask, ones, norm="seq_mean")[0], t(2.25))  # (1.5 + 3) / 2 rows
    torch.testing.assert_close(sft_loss(lp, mask, ones, norm="sum")[0], t(2.0))  # 6 / T=3
    torch.testing.assert_close(sft_loss(lp, mask, ones, norm="sum", denominator=12.0)[0], t(0.5))  # 6 / 12
    torch.testing.assert_close(m["nll"], t(2.0))
    torch.testing.assert_close(m["tokens"], t(3.0))
    # weights [2, 0]: row 1 is removed from numerator, denominator and metrics: 2 * (1 + 2) / 2 = 3
    loss, m = sft_loss(lp, mask, t([2.0, 0.0]))
    torch.testing.assert_close(loss, t(3.0))
    torch.testing.assert_close(m["nll"], t(1.5))
    torch.testing.assert_close(m["tokens"], t(2.0))
    assert not m["nll"].requires_grad and loss.requires_grad
    loss.backward()
    torch.testing.assert_close(lp.grad, t([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))  # d/dlp of -2 lp / 2


def test_policy_loss_token_level_by_hand():
    # ratios r = exp(lp - old) = [1.5, 0.5, 1.0], clip eps .2 -> clip(r) = [1.2, 0.8, 1.0]
    old = t([[0.0, 0.0, 0.0]])
    lp = t([[math.log(1.5), math.log(0.5), 0.0]])
    mask, w = torch.ones(1, 3, dtype=torch.bool), t([1.0])
    # A = +1: -min(r, clip r) = [-1.2, -0.5, -1.0] -> mean -0.9; token 0 clipped (-1.2 > -1.5)
    loss, m = policy_loss(lp, old, t([1.0]), mask, w)
    torch.testing.assert_close(loss, t(-0.9))
    torch.testing.assert_close(m["clip_frac"], t(1 / 3))
    torch.testing.assert_close(m["ratio_mean"], t(1.0))  # (1.5 + .5 + 1) / 3
    torch.testing.assert_close(m["kl"], t(0.0))  # no reference given
    # A = -1: -min(-r, -clip r) = [1.5, 0.8, 1.0] -> mean 1.1; token 1 clipped (0.8 > 0.5)
    loss, m = policy_loss(lp, old, t([-1.0]), mask, w)
    torch.testing.assert_close(loss, t(1.1))
    torch.testing.assert_close(m["clip_frac"], t(1 / 3))
    # DAPO clip-higher .28: A = +1 -> [-1.28, -0.5, -1.0] -> mean -2.78 / 3
    loss, _ = policy_loss(lp, old, t([1.0]), mask, w, clip_eps_high=0.28)
    torch.testing.assert_close(loss, t(-2.78 / 3))


def test_policy_loss_gradient_by_hand():
    # A = 1, r = [1.5, 1.1]: token 0 clipped (no gradient), token 1 d(-r)/dlp = -r = -1.1; / 2 tokens
    lp = lp_leaf([[math.log(1.5), math.log(1.1)]])
    policy_loss(lp, t([[0.0, 0.0]]), t([1.0]), torch.ones(1, 2), t([1.0]))[0].backward()
    torch.testing.assert_close(lp.grad, t([[0.0, -0.55]]))


def test_policy_loss_sequence_level_gspo_by_hand():
    # lp - old = [log 2, 0] -> s = exp(log 2 / 2) = sqrt 2 = 1.41421 on both tokens; the padded 3rd is ignored
    old = t([[0.0, 0.0, 5.0]])
    lp = t([[math.log(2.0), 0.0, NAN]])
    mask = t([[1, 1, 0]]).bool()
    # A = +1: -min(1.414, 1.2) = -1.2 per token, both clipped
    loss, m = policy_loss(lp, old, t([1.0]), mask, t([1.0]), ratio_level="sequence")
    torch.testing.assert_close(loss, t(-1.2))
    torch.testing.assert_close(m["clip_frac"], t(1.0))
    torch.testing.assert_close(m["ratio_mean"], t(math.sqrt(2.0)))
    # A = -1: -min(-1.414, -1.2) = 1.414, not clipped
    loss, m = policy_loss(lp, old, t([-1.0]), mask, t([1.0]), ratio_level="sequence")
    torch.testing.assert_close(loss, t(math.sqrt(2.0)))
    torch.testing.assert_close(m["clip_frac"], t(0.0))


def test_k3_kl_by_hand():
    # lp = -1, ref = -2: d = ref - lp = -1 -> e^-1 + 1 - 1 = e^-1 = .367879
    torch.testing.assert_close(k3_kl(t([[-1.0]]), t([[-2.0]])), t([[math.exp(-1.0)]]))
    # lp = -2, ref = -1: d = 1 -> e - 1 - 1 = .718282
    torch.testing.assert_close(k3_kl(t([[-2.0]]), t([[-1.0]])), t([[math.e - 2.0]]))
    # beta .5 on a token with r = 1 and A = 0: loss = .5 * e^-1 = .183940
    lp = lp_leaf([[-1.0]])
    loss, m = policy_loss(lp, t([[-1.0]]), t([0.0]), torch.ones(1, 1), t([1.0]), ref_logprobs=t([[-2.0]]), beta_kl=0.5)
    torch.testing.assert_close(loss, t(0.5 * math.exp(-1.0)))
    torch.testing.assert_close(m["kl"], t(math.exp(-1.0)))
    loss.backward()
    torch.testing.assert_close(lp.grad, t([[0.5 * (1.0 - math.exp(-1.0))]]))  # d/dlp (e^(ref-lp) + lp) = 1 - e^d
    # beta 0: the metric is still reported, the loss does not change
    loss0, m0 = policy_loss(lp, t([[-1.0]]), t([0.0]), torch.ones(1, 1), t([1.0]), ref_logprobs=t([[-2.0]]))
    torch.testing.assert_close(loss0, t(0.0))
    torch.testing.assert_close(m0["kl"], t(math.exp(-1.0)))


def test_k3_kl_is_zero_when_ref_equals_policy():
    lp = lp_leaf([[-0.3, -2.0, -7.0], [-1.0, -0.1, -4.0]])
    assert (k3_kl(lp, lp.detach()) == 0).all()
    old = lp.detach()
    adv = t([0.7, -0.4])
    base, _ = policy_loss(lp, old, adv, torch.ones(2, 3), t([1.0, 1.0]))
    loss, m = policy_loss(lp, old, adv, torch.ones(2, 3), t([1.0, 1.0]), ref_logprobs=lp.detach(), beta_kl=0.3)
    assert m["kl"] == 0
    torch.testing.assert_close(loss, base)


def test_gal_loss_by_hand():
    # one group, r = [1, 0], d = [-1 + 0, -2 - 1] = [-1, -3] (padded NaN ignored); d_s - d_f = 2
    lp = lp_leaf([[-1.0, 0.0, NAN], [-2.0, -1.0, NAN]])
    mask = t([[1, 1, 0], [1, 1, 0]]).bool()
    loss, m = gal_loss(lp, mask, t([1.0, 0.0]), torch.tensor([0, 0]), t([1.0, 1.0]))
    torch.testing.assert_close(loss, t(math.log1p(math.exp(-2.0))))  # -log sigmoid(2) = log(1 + e^-2) = .126928
    assert (m["pairs"], m["pair_acc"], m["margin"]) == (1.0, 1.0, 2.0)
    loss.backward()
    g = 1.0 - 1.0 / (1.0 + math.exp(-2.0))  # d/dd_s -log sigmoid(d_s - d_f) = -(1 - sigmoid(2)) = -.119203
    torch.testing.assert_close(lp.grad, t([[-g, -g, 0.0], [g, g, 0.0]]))
    # beta .5 and a reference: d = [(-1 + 2) + (0 + 0), (-2 + 2) + (-1 + 0)] = [1, -1] -> -log sigmoid(.5 * 2)
    ref = t([[-2.0, 0.0, 0.0]] * 2)
    loss, _ = gal_loss(lp, mask, t([1.0, 0.0]), torch.tensor([0, 0]), t([1.0, 1.0]), ref_logprobs=ref, beta=0.5)
    torch.testing.assert_close(loss, t(math.log1p(math.exp(-1.0))))


def test_gal_loss_non_binary_rewards_ties_and_groups():
    # group 0: r = [.2, .5, .9], d = [0, 1, .5]; group 1: r = [1, 1] (tie: no pair), d = [5, -5]
    # pairs (s, f): (.5 > .2) d 1 - 0 = 1; (.9 > .2) .5 - 0 = .5; (.9 > .5) .5 - 1 = -.5
    # loss = [log(1 + e^-1) + log(1 + e^-.5) + log(1 + e^.5)] / 3 = (.313262 + .474077 + .974077) / 3 = .587139
    lp = lp_leaf([[0.0], [1.0], [0.5], [5.0], [-5.0]])
    rewards, group = t([0.2, 0.5, 0.9, 1.0, 1.0]), torch.tensor([0, 0, 0, 1, 1])
    loss, m = gal_loss(lp, torch.ones(5, 1), rewards, group, torch.ones(5, dtype=torch.float64))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(0.5))) / 3
    torch.testing.assert_close(loss, t(expected))
    torch.testing.assert_close(m["pairs"], t(3.0))
    torch.testing.assert_close(m["pair_acc"], t(2 / 3))
    torch.testing.assert_close(m["margin"], t(1 / 3))  # (1 + .5 - .5) / 3
    pairs = gal_pairs(rewards, group, torch.ones(5))
    assert pairs.nonzero().tolist() == [[1, 0], [2, 0], [2, 1]]


def test_gal_loss_no_pairs_gives_zero_not_nan():
    lp = lp_leaf([[-1.0, -2.0], [-3.0, -4.0]])
    for rewards, weights in ((t([1.0, 1.0]), t([1.0, 1.0])), (t([1.0, 0.0]), t([1.0, 0.0]))):
        loss, m = gal_loss(lp, torch.ones(2, 2), rewards, torch.tensor([0, 0]), weights)
        assert loss == 0 and loss.requires_grad
        assert m["pairs"] == 0 and m["pair_acc"] == 0 and m["margin"] == 0
    # the pair weight is weights[s]; a 0-weight row (the worse one here) removes the pair
    loss, _ = gal_loss(lp, torch.ones(2, 2), t([1.0, 0.0]), torch.tensor([0, 0]), t([0.5, 0.5]))
    torch.testing.assert_close(loss, t(0.5 * math.log1p(math.exp(-4.0))))  # d = [-3, -7], .5 * -log sigmoid(4)


def test_offpolicy_shaped_loss_by_hand():
    # p = .4 -> f = .4 / (.4 + .1) = .8; A = 2 -> -1.6 per token; second row p = 1 -> f = 1 / 1.1, A = -1
    lp = lp_leaf([[math.log(0.4), math.log(0.4)], [0.0, NAN]])
    mask = t([[1, 1], [1, 0]]).bool()
    loss, m = offpolicy_shaped_loss(lp, t([2.0, -1.0]), mask, t([1.0, 1.0]))
    torch.testing.assert_close(loss, t((-1.6 - 1.6 + 1 / 1.1) / 3))
    torch.testing.assert_close(m["prob_mean"], t(1.8 / 3))
    torch.testing.assert_close(m["shaped_mean"], t((0.8 + 0.8 + 1 / 1.1) / 3))
    loss.backward()
    # d f / d lp = p * shaping / (p + shaping)^2 = .4 * .1 / .25 = .16 -> -2 * .16 / 3
    torch.testing.assert_close(lp.grad[0], t([-0.32 / 3, -0.32 / 3]))


def test_all_masked_rows_and_empty_batch():
    lp = lp_leaf([[NAN, NAN], [-1.0, NAN]])
    mask = t([[0, 0], [1, 0]]).bool()
    w = t([1.0, 1.0])
    torch.testing.assert_close(sft_loss(lp, mask, w)[0], t(1.0))  # 1 token
    # seq_mean counts every row of weight > 0: (0 + 1) / 2
    torch.testing.assert_close(sft_loss(lp, mask, w, norm="seq_mean")[0], t(0.5))
    nothing = torch.zeros(2, 2, dtype=torch.bool)
    for loss, _ in (
        sft_loss(lp, nothing, w),
        policy_loss(lp, lp.detach(), t([1.0, -1.0]), nothing, w, ratio_level="sequence"),
        offpolicy_shaped_loss(lp, t([1.0, 1.0]), nothing, w),
    ):
        assert loss == 0 and loss.requires_grad
    empty = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    e_mask, e_w = torch.zeros(0, 3, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    assert sft_loss(empty, e_mask, e_w, norm="seq_mean")[0] == 0
    assert policy_loss(empty, empty.detach(), e_w, e_mask, e_w)[0] == 0
    assert gal_loss(empty, e_mask, e_w, torch.zeros(0, dtype=torch.long), e_w)[0] == 0


def test_errors_name_the_problem():
    lp, mask, w = torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2)
    with pytest.raises(ValueError, match="unknown norm 'mean'; valid: seq_mean, sum, token_mean"):
        sft_loss(lp, mask, w, norm="mean")
    with pytest.raises(ValueError, match="unknown ratio_level 'seq'; valid: sequence, token"):
        policy_loss(lp, lp, w, mask, w, ratio_level="seq")
    with pytest.raises(ValueError, match="weights"):
        sft_loss(lp, mask, torch.ones(3))
    with pytest.raises(ValueError, match="old_logprobs"):
        policy_loss(lp, lp[:, :2], w, mask, w)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, lp, torch.ones(2, 1), mask, w)


# ---------------------------------------------------------------- naive loops vs vectorised


def random_batch(seed, n_max=10, t_max=7):
    """Rows with ragged masks (some all-masked), weights with zeros, NaN at padding, groups of varying size."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, n_max + 1, (1,), generator=g))
    steps = int(torch.randint(1, t_max + 1, (1,), generator=g))
    lengths = torch.randint(0, steps + 1, (n,), generator=g)
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)  # (N, T) right padding, some rows empty
    mask = mask & (torch.rand(n, steps, generator=g) > 0.1)  # and a few holes
    lp = -torch.rand(n, steps, generator=g, dtype=torch.float64) * 2
    old = lp + 0.3 * torch.randn(n, steps, generator=g, dtype=torch.float64)  # some ratios outside the clip range
    ref = lp + 0.5 * torch.randn(n, steps, generator=g, dtype=torch.float64)
    weights = torch.rand(n, generator=g, dtype=torch.float64) * (torch.rand(n, generator=g) > 0.25)
    group = torch.randint(0, 2, (n,), generator=g)
    rewards = torch.randint(0, 3, (n,), generator=g).double() / 2  # non-binary, with ties
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    fill = lambda x: x.masked_fill(~mask, NAN)  # padding holds garbage
    return dict(lp=fill(lp).requires_grad_(), old=fill(old), ref=fill(ref), mask=mask, weights=weights,
                group=group, rewards=rewards, adv=adv)


def reduce_loop(per_token, mask, weights, norm, denominator=None):
    """The norm rules of the plan, one token at a time. per_token[i][t] is a 0-d tensor."""
    n, steps = mask.shape
    num, den = torch.zeros((), dtype=torch.float64), 0.0
    for i in range(n):
        if weights[i] <= 0:
            continue
        toks = [per_token[i][j] for j in range(steps) if mask[i, j]]
        if norm == "seq_mean":
            num = num + weights[i] * (sum(toks) / len(toks) if toks else 0.0)
            den += 1
        else:
            num = num + weights[i] * sum(toks)
            den += len(toks)
    if norm == "sum":
        den = steps
    den = den if denominator is None else denominator
    return num / max(den, 1.0)


def policy_loop(b, *, norm, ratio_level, clip_eps=0.2, clip_eps_high=None, beta_kl=0.0):
    """Textbook PPO / GRPO per token; GSPO in its plain sequence form s_i = exp(mean_t(lp - old))."""
    lp, old, ref, mask, adv = b["lp"], b["old"], b["ref"], b["mask"], b["adv"]
    high = clip_eps if clip_eps_high is None else clip_eps_high
    per_token = []
    for i in range(lp.shape[0]):
        toks = [j for j in range(lp.shape[1]) if mask[i, j]]
        s = torch.exp(sum(lp[i, j] - old[i, j] for j in toks) / len(toks)) if toks else None
        row = []
        for j in range(lp.shape[1]):
            if not mask[i, j]:
                row.append(torch.zeros((), dtype=torch.float64))
                continue
            r = s if ratio_level == "sequence" else torch.exp(lp[i, j] - old[i, j])
            loss = -torch.min(r * adv[i], torch.clamp(r, 1 - clip_eps, 1 + high) * adv[i])
            d = ref[i, j] - lp[i, j]
            row.append(loss + beta_kl * (torch.exp(d) - d - 1))
        per_token.append(row)
    return reduce_loop(per_token, mask, b["weights"], norm)


def gal_loop(b, *, beta, use_ref):
    lp, ref, mask, w, r, grp = b["lp"], b["ref"], b["mask"], b["weights"], b["rewards"], b["group"]
    n = lp.shape[0]
    d = [sum((lp[i, j] - (ref[i, j] if use_ref else 0.0) for j in range(lp.shape[1]) if mask[i, j]),
             torch.zeros((), dtype=torch.float64)) for i in range(n)]
    total, pairs = torch.zeros((), dtype=torch.float64), 0
    for s in range(n):
        for f in range(n):
            if grp[s] == grp[f] and r[s] > r[f] and w[s] > 0 and w[f] > 0:
                total = total + w[s] * -F.logsigmoid(beta * (d[s] - d[f]))
                pairs += 1
    return total / max(pairs, 1)


def grad_or_zero(loss, leaf):
    """d loss / d leaf; zeros when the loss does not depend on leaf at all (a loop that counted nothing)."""
    if not loss.requires_grad:
        return torch.zeros_like(leaf)
    (g,) = torch.autograd.grad(loss, leaf, retain_graph=True, allow_unused=True)
    return torch.zeros_like(leaf) if g is None else g


def grads_match(loss_fn, ref_fn, b):
    got, want = loss_fn(), ref_fn()
    assert got.requires_grad  # the ops stay attached to the graph even when nothing is counted
    torch.testing.assert_close(got, want)
    g = grad_or_zero(got, b["lp"])
    torch.testing.assert_close(g, grad_or_zero(want, b["lp"]))
    assert g.isfinite().all()


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_policy_loss_matches_loop(seed, norm, ratio_level):
    b = random_batch(seed)
    kw = dict(norm=norm, ratio_level=ratio_level, clip_eps=0.2, clip_eps_high=0.28, beta_kl=0.1)
    grads_match(
        lambda: policy_loss(b["lp"], b["old"], b["adv"], b["mask"], b["weights"], ref_logprobs=b["ref"], **kw)[0],
        lambda: policy_loop(b, **kw),
        b,
    )


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_sft_and_offpolicy_match_loop(seed, norm):
    b = random_batch(seed)
    lp, mask, w = b["lp"], b["mask"], b["weights"]
    rows = range(lp.shape[0])
    cols = range(lp.shape[1])
    grads_match(
        lambda: sft_loss(lp, mask, w, norm=norm)[0],
        lambda: reduce_loop([[-lp[i, j] for j in cols] for i in rows], mask, w, norm),
        b,
    )
    shaped = lambda i, j: -b["adv"][i] * torch.exp(lp[i, j]) / (torch.exp(lp[i, j]) + 0.2)
    grads_match(
        lambda: offpolicy_shaped_loss(lp, b["adv"], mask, w, shaping=0.2, norm=norm)[0],
        lambda: reduce_loop([[shaped(i, j) for j in cols] for i in rows], mask, w, norm),
        b,
    )


@pytest.mark.parametrize("use_ref", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_gal_loss_matches_loop(seed, use_ref):
    b = random_batch(seed + 10)
    ref = b["ref"] if use_ref else None
    grads_match(
        lambda: gal_loss(b["lp"], b["mask"], b["rewards"], b["group"], b["weights"], ref_logprobs=ref, beta=0.7)[0],
        lambda: gal_loop(b, beta=0.7, use_ref=use_ref),
        b,
    )


# ---------------------------------------------------------------- invariances


def all_losses(b, lp, rows, *, norm, denominators):
    """Every loss on the rows `rows` of batch b (logprobs `lp` for those rows), with given denominators."""
    sub = {k: v[rows] for k, v in b.items() if k != "lp"}
    mask, w = sub["mask"], sub["weights"]
    den = denominators
    return [
        sft_loss(lp, mask, w, norm=norm, denominator=den["tok"])[0],
        policy_loss(lp, sub["old"], sub["adv"], mask, w, ref_logprobs=sub["ref"], beta_kl=0.05, norm=norm,
                    denominator=den["tok"])[0],
        policy_loss(lp, sub["old"], sub["adv"], mask, w, ratio_level="sequence", norm=norm,
                    denominator=den["tok"])[0],
        offpolicy_shaped_loss(lp, sub["adv"], mask, w, norm=norm, denominator=den["tok"])[0],
        gal_loss(lp, mask, sub["rewards"], sub["group"], w, ref_logprobs=sub["ref"], denominator=den["gal"])[0],
    ]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_micro_batches_with_global_denominator_equal_the_full_batch(seed, norm):
    b = random_batch(seed, n_max=12)
    b["group"] = torch.arange(b["lp"].shape[0]) // 3  # groups of 3, never split across micro-batches
    n, steps = b["mask"].shape
    const = {"tok": float(steps) if norm == "sum" else None, "gal": None}
    full = all_losses(b, b["lp"], slice(None), norm=norm, denominators=const)
    full_grads = [grad_or_zero(x, b["lp"]) for x in full]

    splits = [slice(i, i + 3) for i in range(0, n, 3)]  # micro-batches of one group each
    global_den = {
        "tok": float(steps) if norm == "sum" else sum(loss_denominator(b["mask"][s], b["weights"][s], norm=norm)
                                                      for s in splits),
        "gal": sum(gal_pairs(b["rewards"][s], b["group"][s], b["weights"][s]).sum() for s in splits),
    }
    parts = []
    for s in splits:
        keep = max(int(b["mask"][s].any(0).nonzero().max()) + 1, 1) if b["mask"][s].any() else 1
        lp = b["lp"][s][:, :keep]  # each micro-batch trimmed to its own padding length
        sub = dict(b, mask=b["mask"][:, :keep], old=b["old"][:, :keep], ref=b["ref"][:, :keep])
        parts.append(all_losses(sub, lp, s, norm=norm, denominators=global_den))
    for k, (whole, grad) in enumerate(zip(full, full_grads)):
        summed = sum(p[k] for p in parts)
        torch.testing.assert_close(summed, whole)
        torch.testing.assert_close(grad_or_zero(summed, b["lp"]), grad)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_padding_length_does_not_change_the_loss(seed, norm):
    b = random_batch(seed)
    extra = 4
    pad = lambda x, v: torch.cat([x, torch.full((x.shape[0], extra), v, dtype=x.dtype)], dim=1)
    padded = dict(b, mask=pad(b["mask"], False), old=pad(b["old"], 9.0), ref=pad(b["ref"], -9.0))
    lp_padded = pad(b["lp"].detach(), NAN).requires_grad_()
    const = {"tok": 10.0 if norm == "sum" else None, "gal": None}  # "sum" needs a constant, not T
    short = all_losses(b, b["lp"], slice(None), norm=norm, denominators=const)
    long = all_losses(padded, lp_padded, slice(None), norm=norm, denominators=const)
    for a, c in zip(short, long):
        torch.testing.assert_close(a, c)
        gc = grad_or_zero(c, lp_padded)
        torch.testing.assert_close(gc[:, :-extra], grad_or_zero(a, b["lp"]))
        assert (gc[:, -extra:] == 0).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_zero_row_gets_exactly_zero_gradient(seed):
    b = random_batch(seed + 20, n_max=8)
    b["weights"] = torch.ones_like(b["weights"])
    b["weights"][0] = 0.0
    b["mask"][0, 0] = True  # row 0 has tokens
    b["lp"] = b["lp"].detach().masked_fill(~b["mask"], NAN).requires_grad_()
    b["group"] = torch.zeros_like(b["group"])  # everyone in one group, so row 0 would have pairs
    b["rewards"][0] = 5.0
    for norm in NORMS:
        losses = all_losses(b, b["lp"], slice(None), norm=norm, denominators={"tok": None, "gal": None})
        for loss in losses:
            g = grad_or_zero(loss, b["lp"])
            assert (g[0] == 0).all()
            assert g.isfinite().all()
    # and the loss does not depend on row 0's values
    other = b["lp"].detach().clone()
    other[0] = -50.0
    for a, c in zip(all_losses(b, b["lp"], slice(None), norm="token_mean", denominators={"tok": None, "gal": None}),
                    all_losses(b, other, slice(None), norm="token_mean", denominators={"tok": None, "gal": None})):
        torch.testing.assert_close(a, c)


# ---------------------------------------------------------------- gradients


def test_gal_gradcheck_float64():
    b = random_batch(3, n_max=6, t_max=4)
    b["mask"][:, 0] = True
    lp = b["lp"].detach().nan_to_num(-1.0).requires_grad_()  # finite inputs for finite differences
    b["weights"] = torch.rand(lp.shape[0], dtype=torch.float64) + 0.5
    b["group"] = torch.zeros_like(b["group"])
    b["rewards"] = torch.arange(lp.shape[0], dtype=torch.float64) % 3
    for ref in (None, b["ref"].nan_to_num(-1.5)):  # (mask widened above: no NaN left where counted)
        fn = lambda x: gal_loss(x, b["mask"], b["rewards"], b["group"], b["weights"], ref_logprobs=ref, beta=1.3)[0]
        assert torch.autograd.gradcheck(fn, (lp,))


def test_policy_and_sft_gradcheck_float64():
    b = random_batch(4, n_max=5, t_max=4)
    b["mask"][:, 0] = True
    b["weights"][0] = 0.5
    lp = b["lp"].detach().nan_to_num(-1.0).requires_grad_()
    b["ref"], b["old"] = b["ref"].nan_to_num(-1.5), b["old"].nan_to_num(-1.2)
    for level in ("token", "sequence"):
        fn = lambda x: policy_loss(x, b["old"], b["adv"], b["mask"], b["weights"], ref_logprobs=b["ref"],
                                   beta_kl=0.2, ratio_level=level, clip_eps=10.0)[0]  # wide clip: smooth
        assert torch.autograd.gradcheck(fn, (lp,))
    assert torch.autograd.gradcheck(lambda x: offpolicy_shaped_loss(x, b["adv"], b["mask"], b["weights"])[0], (lp,))


def test_gspo_gradient_equals_analytic_form():
    # GSPO (seq_mean): d loss / d lp[i, t] = -w_i * s_i * A_i / (n_i * D) on unclipped rows, 0 on clipped rows
    g = torch.Generator().manual_seed(5)
    n, steps = 6, 5
    mask = torch.arange(steps).unsqueeze(0) < torch.tensor([5, 3, 1, 4, 2, 5]).unsqueeze(1)
    lp = (-torch.rand(n, steps, generator=g, dtype=torch.float64)).requires_grad_()
    delta = t([0.02, -0.05, 0.3, 0.0, -0.4, 0.1])  # per-row mean of lp - old: rows 2 and 4 leave [0.8, 1.2]
    old = lp.detach() - delta.unsqueeze(1)
    adv = t([1.0, -0.5, 2.0, 0.7, -1.0, -1.2])  # row 2: s = e^.3 > 1.2 with A > 0; row 4: s = e^-.4 < .8, A < 0
    w = t([1.0, 0.5, 1.0, 2.0, 1.0, 0.0])
    loss, m = policy_loss(lp, old, adv, mask, w, ratio_level="sequence", norm="seq_mean")
    loss.backward()
    s = delta.exp()
    n_i = mask.sum(1).double()
    D = (w > 0).sum().double()
    clipped = t([0, 0, 1, 0, 1, 0]).bool()
    expected = (-w * s * adv / (n_i * D)).masked_fill(clipped, 0.0).unsqueeze(1) * mask
    torch.testing.assert_close(lp.grad, expected)
    # clipped: row 2 (1 token) and row 4 (2 tokens), out of 5 + 3 + 1 + 4 + 2 counted tokens (row 5 has weight 0)
    torch.testing.assert_close(m["clip_frac"], t(3 / 15))
