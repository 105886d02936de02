"""The report's diagnosis of DYPO's gradient norm: which loss term carries it, and what it costs.

DYPO's pre-clip gradient norm runs far above GRPO's. The diagnosis runs (settings.DIAGNOSIS) separate the
candidates: without GAL (`dypo-no-gal`), GAL scaled to 1/50 of the RL term (`dypo-gal-0.01`, the public
code's additive form) and DYPO without gradient clipping (`dypo-no-clip`). Every statement is computed
from the runs' results; nothing here knows which way they came out.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from report_stats import Panel, band_figure, compare, curve, fmt, mean_std, method_table, values
from runs import final_metric
from settings import DIAGNOSIS, Variant

REWARD_EARLY_STEPS = 10  # "how fast the reward rises": the mean reward of the first steps


def trained_norms(result: dict) -> list[float]:
    """The pre-clip gradient norms of the steps that trained something (a step of only easy groups logs 0)."""
    return [v for _, v in curve(result, "grad/norm") if v > 0]


def median_norm(result: dict) -> float:
    norms = trained_norms(result)
    return statistics.median(norms) if norms else math.nan


def window_reward(result: dict, first: bool, n: int = REWARD_EARLY_STEPS) -> float:
    pts = curve(result, "reward/mean")
    vals = [v for _, v in (pts[:n] if first else pts[-n:])]
    return statistics.fmean(vals) if vals else math.nan


def diagnosis_table(chosen: dict[str, list[dict]], best: dict[str, float], v: Variant) -> list[str]:
    avg = f"avg@{v.eval_k}"
    return method_table(DIAGNOSIS, chosen, best, "lr", [
        ("median pre-clip grad norm", lambda runs: fmt([median_norm(r) for r in runs])),
        (f"reward, first {REWARD_EARLY_STEPS} steps", lambda runs: fmt([window_reward(r, True) for r in runs])),
        (f"reward, last {REWARD_EARLY_STEPS} steps", lambda runs: fmt([window_reward(r, False) for r in runs])),
        (f"test {avg}", lambda runs: fmt(values(runs, "test", avg))),
        (f"OOD {avg}", lambda runs: fmt(values(runs, "ood", avg))),
    ])


def _mean(runs: list[dict], fn) -> float:
    return mean_std([fn(r) for r in runs])[0]


def robustness_statement(results: list[dict], v: Variant) -> str:
    """Validation accuracy at each searched rate above the smallest, for the diagnosis methods (seed 0)."""
    avg = f"avg@{v.eval_k}"
    parts = []
    for lr in sorted(v.lrs)[1:]:
        cells = []
        for m in DIAGNOSIS:
            runs = [r for r in results if r["method"] == m and r["lr"] == lr and r["seed"] == 0]
            if runs:
                cells.append(f"{m} {final_metric(runs[0], 'val', avg):.3f}")
        if cells:
            parts.append(f"at lr {lr:g}: " + ", ".join(cells))
    return f"- Learning-rate robustness (validation {avg}, seed 0) " + "; ".join(parts) + "." if parts else ""


def diagnosis_statements(chosen: dict[str, list[dict]], results: list[dict], v: Variant) -> list[str]:
    """Plain statements about the gradient norm, each computed from the runs (empty when a run is missing)."""
    if not all(chosen.get(m) for m in DIAGNOSIS):
        return []
    avg = f"avg@{v.eval_k}"
    norm = {m: _mean(chosen[m], median_norm) for m in DIAGNOSIS}
    rise = {m: [window_reward(r, True) for r in chosen[m]] for m in DIAGNOSIS}  # per seed
    early = {m: mean_std(rise[m])[0] for m in DIAGNOSIS}
    test = {m: values(chosen[m], "test", avg) for m in DIAGNOSIS}
    carrier = "GAL carries it" if norm["dypo-no-gal"] < norm["dypo"] / 5 else "GAL does not explain it alone"
    out = [
        f"- DYPO's median pre-clip gradient norm is {norm['dypo']:.1f}, {norm['dypo'] / norm['grpo']:.0f}x GRPO's "
        f"({norm['grpo']:.2f}); without GAL it is {norm['dypo-no-gal']:.2f}, with GAL at 0.01 (additive) "
        f"{norm['dypo-gal-0.01']:.2f}: {carrier}. GAL sums the log-ratio over every completion token, where the RL "
        "and SFT terms average over tokens, so its gradient grows with completion length.",
        f"- Reward rise (mean reward of the first {REWARD_EARLY_STEPS} steps): DYPO {early['dypo']:.3f}, GRPO "
        f"{early['grpo']:.3f}, without GAL {early['dypo-no-gal']:.3f}, GAL at 0.01 {early['dypo-gal-0.01']:.3f}, "
        f"without clipping {early['dypo-no-clip']:.3f}. DYPO vs GRPO: {compare(rise['dypo'], rise['grpo'])}; GAL at 0.01 "
        f"vs DYPO: {compare(rise['dypo-gal-0.01'], rise['dypo'])} (mean ± std over seeds must not overlap to count).",
        f"- In distribution ({avg}): GAL at 0.01 vs DYPO: {compare(test['dypo-gal-0.01'], test['dypo'])}; "
        f"vs GRPO: {compare(test['dypo-gal-0.01'], test['grpo'])}. Without clipping vs DYPO: "
        f"{compare(test['dypo-no-clip'], test['dypo'])} (AdamW divides each step by the gradient's running RMS, so "
        "a clip that rescales every step by about the same factor changes little; what it cannot change is GAL's "
        "share of the direction).",
    ]
    robust = robustness_statement(results, v)
    return out + ([robust] if robust else [])


def draw_diagnosis(out: Path, chosen: dict[str, list[dict]]) -> bool:
    """diagnosis.png: pre-clip gradient norm (log scale) and mean reward per step; False when nothing to draw."""
    if not any(chosen.get(m) for m in DIAGNOSIS):
        return False
    band_figure(out / "diagnosis.png", chosen, DIAGNOSIS,
                [Panel("grad/norm", "gradient norm before clipping (log scale)", log=True),
                 Panel("reward/mean", "mean reward of the rollouts")],
                grid=(1, 2), figsize=(13, 4.5), what="Diagnosis")
    return True
