"""REPORT.md and its figures, from the runs' result files: tables over seeds, dynamics, a plain conclusion.

Every number in the report is computed here from `results/*.json` (written by runs.py), so the report
can be redrawn at any time with `reproduce.py --report-only`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from diagnosis import diagnosis_statements, diagnosis_table, draw_diagnosis
from report_stats import (
    Panel, band_figure, compare, curve, fmt, mean_std, method_table, pyplot, save_figure, values,
)
from runs import final_metric
from settings import ABLATIONS, DYNAMICS, MAIN, Variant

FIGURES = ("dynamics.png", "lr_robustness.png", "accuracy.png")
CURVES = (Panel("tier/offline_ratio", "offline-data ratio (share of prompts routed to SFT)"),
          Panel("reward/mean", "mean reward of the rollouts"), Panel("policy/entropy", "policy entropy on rollout tokens"),
          Panel("grad/norm", "gradient norm (before clipping)"), Panel("tier/hard", "hard groups per step"),
          Panel("tier/easy", "easy groups per step"))


def by_method(results: list[dict], best: dict[str, float]) -> dict[str, list[dict]]:
    """The runs at each method's chosen learning rate (all seeds)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if best.get(r["method"]) == r["lr"]:
            out[r["method"]].append(r)
    return out


def accuracy_table(methods: tuple[str, ...], chosen: dict[str, list[dict]], best: dict[str, float], v: Variant) -> list[str]:
    avg = f"avg@{v.eval_k}"
    per_run = lambda key, spec: lambda runs: format(statistics.fmean(r[key] for r in runs), spec)  # noqa: E731
    return method_table(methods, chosen, best, "best lr", [
        (f"test {avg} (T=0.6)", lambda runs: fmt(values(runs, "test", avg))),
        (f"OOD {avg} (T=0.6)", lambda runs: fmt(values(runs, "ood", avg))),
        ("test greedy", lambda runs: fmt(values(runs, "test", "avg@1"))),
        ("OOD greedy", lambda runs: fmt(values(runs, "ood", "avg@1"))),
        (f"val {avg}", lambda runs: fmt(values(runs, "val", avg))),
        ("rollouts sampled", per_run("rollouts", ",.0f")),
        ("tokens trained", per_run("tokens_trained", ",.0f")),
        ("wall s/run", per_run("wall_seconds", ".0f")),
    ])


def lr_table(results: list[dict], methods: tuple[str, ...], v: Variant) -> list[str]:
    avg = f"avg@{v.eval_k}"
    lrs = sorted({r["lr"] for r in results if r["seed"] == 0})
    lines = ["| method | " + " | ".join(f"val {avg} at lr {lr:g}" for lr in lrs) + " |",
             "|---|" + "---|" * len(lrs)]
    for m in methods:
        cells = []
        for lr in lrs:
            runs = [r for r in results if r["method"] == m and r["lr"] == lr and r["seed"] == 0]
            cells.append(f"{final_metric(runs[0], 'val', avg):.3f}" if runs else "n/a")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def draw_figures(out: Path, results: list[dict], chosen: dict[str, list[dict]], v: Variant) -> None:
    band_figure(out / "dynamics.png", chosen, DYNAMICS, CURVES, grid=(2, 3), figsize=(15, 8), what="Dynamics")
    plt = pyplot()

    avg = f"avg@{v.eval_k}"
    fig, ax = plt.subplots(figsize=(8, 5))
    for m in v.methods:
        pts = sorted((r["lr"], final_metric(r, "val", avg)) for r in results if r["method"] == m and r["seed"] == 0)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation {avg} (T=0.6), seed 0")
    ax.set_title("Learning-rate robustness")
    ax.legend(fontsize=8)
    save_figure(fig, out / "lr_robustness.png")

    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, bench in zip(axes, ("test", "ood")):
        names = [m for m in v.methods if chosen.get(m)]
        stats = [mean_std(values(chosen[m], bench, avg)) for m in names]
        ax.bar(range(len(names)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{'in-distribution' if bench == 'test' else 'out-of-distribution'} {avg} (T=0.6), mean ± std over seeds")
    save_figure(fig, out / "accuracy.png")


def _window_mean(points: list[tuple[int, float]], first: bool, n: int = 5) -> float:
    vals = [v for _, v in (points[:n] if first else points[-n:])]
    return statistics.fmean(vals) if vals else math.nan


def _roughness(points: list[tuple[int, float]]) -> float:
    """Mean absolute step-to-step change: how jagged a curve is."""
    vals = [v for _, v in points]
    return statistics.fmean(abs(b - a) for a, b in zip(vals, vals[1:])) if len(vals) > 1 else math.nan


def conclusion(chosen: dict[str, list[dict]], v: Variant) -> list[str]:
    """Plain statements, each computed from the runs, about the paper's claims."""
    avg = f"avg@{v.eval_k}"
    out = []
    dypo = chosen.get("dypo", [])
    ratios = [curve(r, "tier/offline_ratio") for r in dypo]
    if ratios and all(ratios):
        start = statistics.fmean(_window_mean(c, True) for c in ratios)
        end = statistics.fmean(_window_mean(c, False) for c in ratios)
        verdict = "falls" if end < start - 0.1 else "does not fall"
        out.append(f"- Offline-data ratio (paper: ~1.0 at the start, ~0.35 later): DYPO's {verdict} here, from "
                   f"{start:.2f} (mean of the first 5 steps) to {end:.2f} (last 5 steps), mean over {len(ratios)} seed(s).")
    for name, label in (("policy/entropy", "entropy"), ("grad/norm", "gradient-norm roughness")):
        vals = {}
        for m in ("dypo", "grpo"):
            curves = [curve(r, name) for r in chosen.get(m, []) if curve(r, name)]
            if curves:
                vals[m] = statistics.fmean((_window_mean(c, False) if name == "policy/entropy" else _roughness(c))
                                           for c in curves)
        if len(vals) == 2:
            if name == "policy/entropy":
                out.append(f"- Entropy at the end (paper: DYPO keeps 0.2-0.6 where GRPO collapses): DYPO {vals['dypo']:.3f}, "
                           f"GRPO {vals['grpo']:.3f} (mean of the last 5 steps).")
            else:
                smoother = "smoother" if vals["dypo"] < vals["grpo"] else "not smoother"
                out.append(f"- Gradient norm (paper: smoother than GRPO's): DYPO's is {smoother} here (mean step-to-step "
                           f"change {vals['dypo']:.3f} vs GRPO {vals['grpo']:.3f}).")
    for bench, what in (("test", "in distribution"), ("ood", "out of distribution")):
        for group, label in ((MAIN, "baseline"), (ABLATIONS, "ablation")):
            parts = []
            for m in group:
                if m == "dypo" or not chosen.get(m) or not dypo:
                    continue
                parts.append(f"{m}: DYPO {compare(values(dypo, bench, avg), values(chosen[m], bench, avg))}")
            if parts:
                out.append(f"- DYPO vs each {label}, {what} ({avg}, mean ± std over seeds must not overlap to count): "
                           + "; ".join(parts) + ".")
    budget = compute_statement(chosen)
    return (out + ([budget] if budget else [])) or ["- No complete runs yet."]


def compute_statement(chosen: dict[str, list[dict]]) -> str:
    """What "the same number of steps" spends: tokens trained per method, relative to DYPO's."""
    tokens = {m: statistics.fmean(r["tokens_trained"] for r in runs) for m, runs in chosen.items() if m in MAIN and runs}
    if "dypo" not in tokens or len(tokens) < 2 or not tokens["dypo"]:
        return ""
    parts = [f"{m} {tokens[m] / tokens['dypo']:.2f}x" for m in MAIN if m in tokens and m != "dypo"]
    return ("- Compute: every method takes the same optimizer steps on the same prompts and samples the same rollouts; "
            "the tokens each trains on differ (SFT trains one teacher trace per prompt where RL trains k rollouts). "
            "Tokens trained relative to DYPO: " + ", ".join(parts) + ".")


def write_report(out: Path, results: list[dict], best: dict[str, float], v: Variant, context: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    chosen = by_method(results, best)
    draw_figures(out, results, chosen, v)
    teachers = context.get("teachers", {})
    lines = [
        "# DYPO at CPU scale: a fair comparison with its baselines",
        "",
        f"Generated by `python pipelines/reproduce/reproduce.py --variant {v.name}` on {context.get('machine', 'unknown CPU')}: "
        f"{len(results)} runs, {sum(r['wall_seconds'] for r in results) / 60:.0f} min of training and evaluation in "
        "total (summed over runs, which went two at a time on their own cores; teachers and warm start not "
        "counted). Every number below is computed from `results/*.json`.",
        "",
        "## Setup",
        "",
        f"- Task: `dypo-data synth` {', '.join(v.kinds)} problems, level {v.level}; training pool {v.n_train} prompts, "
        f"validation {v.n_val} (chooses each method's learning rate), in-distribution test {v.n_test}, "
        f"out-of-distribution test {v.n_ood} ({', '.join(v.ood_kinds)}, level {v.ood_level}: never trained on). "
        "No split shares a problem text; at level 1 `operation` has 243 distinct expressions in 3 phrasings, so an "
        "expression of the test set can recur in the training pool in another phrasing: the in-distribution test "
        "measures the arithmetic facts the methods practise, the OOD set whether they compose.",
        f"- Teachers (tiny Llamas, {v.teacher_arch.layers} layers x {v.teacher_arch.hidden}, trained by the `sft` recipe on "
        f"{v.n_teacher} other problems' solutions): worked style ({v.teacher_steps} steps), compact style ({v.teacher_steps} steps), "
        f"noisy (compact style, {v.noisy_steps} steps). Each wrote {v.m} traces per training prompt with vLLM "
        f"(T={v.teacher_temperature}); `dypo-data verify` keeps the correct ones as SFT targets.",
        f"- Policy: a tiny Llama ({v.policy_arch.layers} layers x {v.policy_arch.hidden}) with a {v.warm_steps}-step SFT warm "
        f"start on {v.n_warm} further problems, the same start for every run.",
        f"- Runs: online, {v.steps} optimizer steps of {v.prompts_per_step} prompts x k={v.k} rollouts (T=1.0, up to "
        f"{v.max_tokens} tokens), for every method; learning rates {', '.join(f'{lr:g}' for lr in v.lrs)} on seed 0, then "
        f"{v.seeds} seed(s) at each method's best validation rate. Evaluation every {v.eval_every} steps at T=0.6 "
        f"(avg@{v.eval_k}, k={v.eval_k}) and greedily at the end (avg@1).",
        "",
        "## Teachers",
        "",
        "| teacher | traces | share correct | training prompts with a correct trace |",
        "|---|---|---|---|",
    ]
    for row in teachers.get("teachers", []):
        lines.append(f"| {row['model']} | {row['traces']} | {row['accuracy']:.3f} | {row['prompts_covered']} |")
    lines += [f"", f"Prompts with at least one verified teacher trace: {teachers.get('pool_prompts', 'n/a')} of "
                   f"{teachers.get('train_prompts', 'n/a')}.", "",
              "## Methods", "", *accuracy_table(MAIN, chosen, best, v), "", "![accuracy](accuracy.png)", "",
              "## Ablations", "", *accuracy_table(ABLATIONS, chosen, best, v), "",
              "## Learning-rate robustness", "", *lr_table(results, v.methods, v), "", "![lr](lr_robustness.png)", "",
              "## Dynamics", "", "![dynamics](dynamics.png)", ""]
    if draw_diagnosis(out, chosen):
        lines += ["## Diagnosis: DYPO's gradient norm", "",
                  "DYPO's pre-clip gradient norm runs far above GRPO's. Three runs separate the causes: `dypo-no-gal` "
                  "(no GAL), `dypo-gal-0.01` (GAL added at 0.01 beside the RL term at alpha, the public code's form, "
                  "instead of 1 - alpha) and `dypo-no-clip` (no gradient clipping), each with the same "
                  "learning-rate search and seeds as every method.", "",
                  *diagnosis_table(chosen, best, v), "", "![diagnosis](diagnosis.png)", "",
                  *diagnosis_statements(chosen, results, v), ""]
    lines += ["## Conclusion", "", *conclusion(chosen, v), ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
