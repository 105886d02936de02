"""Peer check: `policy_loss` against TRL's own GRPO loss code, same inputs, values and gradients.

TRL has no standalone loss function: the maths sits inside `GRPOTrainer._compute_loss(self, model,
inputs)`. So the test calls that method, unbound, on a stub `self` that holds only the attributes the
method reads, and whose `_get_per_token_logps_and_entropies` returns our per-token log-probs. Every
line of TRL's loss computation (ratio, clipping, k3 KL, aggregation, clip metrics) then runs as
shipped. Mapping of TRL's `loss_type` to our `norm` (all weights 1):

- "bnpo":    sum(loss * mask) / sum(mask)                        = norm="token_mean"
- "grpo":    mean over rows of the per-row token mean            = norm="seq_mean"
- "dr_grpo": sum(loss * mask) / (N * max_completion_length)      = norm="sum", denominator=N * L
- importance_sampling_level="sequence" with "grpo" is GSPO       = ratio_level="sequence", norm="seq_mean"

Importing TRL takes several seconds, hence its own file.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from dypo_train.ops import policy_loss

MAX_LEN = 16


@pytest.fixture(scope="module")
def trl_compute_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    return grpo_trainer.GRPOTrainer._compute_loss


class _Accelerator:
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_stub(logprobs, *, loss_type, level, eps_low, eps_high, beta):
    """The attributes `GRPOTrainer._compute_loss` reads, for a plain single-process training step."""
    return SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.zeros_like(logprobs.detach()), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=MAX_LEN,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        accelerator=_Accelerator(),
    )


def batch(seed, n=6, steps=5):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (n,), generator=g)
    mask = (torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (N, T) right padding
    lp = -torch.rand(n, steps, generator=g, dtype=torch.float64) * 2
    old = lp + 0.3 * torch.randn(n, steps, generator=g, dtype=torch.float64)  # some ratios outside [.8, 1.28]
    ref = lp + 0.5 * torch.randn(n, steps, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return lp, old, ref, adv, mask


@pytest.mark.parametrize(
    "loss_type, level, norm",
    [
        ("bnpo", "token", "token_mean"),
        ("grpo", "token", "seq_mean"),
        ("dr_grpo", "token", "sum"),
        ("grpo", "sequence", "seq_mean"),
        ("bnpo", "sequence", "token_mean"),
    ],
)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", range(3))
def test_policy_loss_matches_trl_grpo(trl_compute_loss, loss_type, level, norm, beta, seed):
    lp, old, ref, adv, mask = batch(seed)
    n, steps = mask.shape
    eps_low, eps_high = 0.2, 0.28

    trl_lp = lp.clone().requires_grad_()
    stub = trl_stub(trl_lp, loss_type=loss_type, level=level, eps_low=eps_low, eps_high=eps_high, beta=beta)
    inputs = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, steps, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    trl_loss = trl_compute_loss(stub, None, inputs)
    trl_loss.backward()

    ours_lp = lp.clone().requires_grad_()
    loss, metrics = policy_loss(
        ours_lp, old, adv, mask, torch.ones(n, dtype=torch.float64),
        ref_logprobs=ref if beta else None, clip_eps=eps_low, clip_eps_high=eps_high, beta_kl=beta,
        ratio_level=level, norm=norm, denominator=float(n * MAX_LEN) if norm == "sum" else None,
    )
    loss.backward()

    torch.testing.assert_close(loss, trl_loss)
    torch.testing.assert_close(ours_lp.grad, trl_lp.grad)
    if level == "token":  # TRL averages its sequence-level clip metric over rows, ours over tokens
        assert stub._metrics["train"]["clip_ratio/region_mean"] == [pytest.approx(float(metrics["clip_frac"]))]
    if beta:
        assert stub._metrics["train"]["kl"] == [pytest.approx(float(metrics["kl"]))]
