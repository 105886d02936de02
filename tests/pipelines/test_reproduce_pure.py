"""The reproduction's pure parts: choosing a learning rate, statistics over seeds, comparisons."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipelines" / "reproduce"))

from report import compare, mean_std  # noqa: E402
from runs import RunSpec, best_lr, final_metric  # noqa: E402
from settings import METHODS, VARIANTS  # noqa: E402


def _result(lr: float, val: float, greedy: float, *, steps: tuple[int, ...] = (10, 20)) -> dict:
    rows = []
    for s in steps:  # the last step carries the given values; earlier steps score higher on purpose
        last = s == steps[-1]
        rows.append({"benchmark": "val", "metric": "avg@4", "policy_version": str(s), "value": val if last else 1.0})
        rows.append({"benchmark": "val", "metric": "avg@1", "policy_version": str(s), "value": greedy if last else 1.0})
        rows.append({"benchmark": "test", "metric": "avg@4", "policy_version": str(s), "value": 0.99})
    return {"lr": lr, "eval": rows}


def test_final_metric_reads_the_last_step_not_the_best():
    r = _result(1e-3, 0.25, 0.5, steps=(5, 10, 100))
    assert final_metric(r, "val", "avg@4") == 0.25
    assert math.isnan(final_metric(r, "ood", "avg@4"))


def test_best_lr_uses_validation_then_greedy_then_the_smaller_rate():
    runs = [_result(1e-4, 0.30, 0.1), _result(1e-3, 0.40, 0.1), _result(3e-3, 0.40, 0.2)]
    assert best_lr(runs, metric="avg@4", tie_metric="avg@1") == 3e-3  # tie on avg@4, greedy decides
    runs = [_result(1e-4, 0.40, 0.2), _result(1e-3, 0.40, 0.2)]
    assert best_lr(runs, metric="avg@4", tie_metric="avg@1") == 1e-4  # full tie: the smaller rate
    runs = [_result(1e-4, math.nan, math.nan), _result(1e-3, 0.0, 0.0)]
    assert best_lr(runs, metric="avg@4", tie_metric="avg@1") == 1e-3  # a run with no evaluation never wins


def test_mean_std_is_the_sample_deviation_over_finite_values():
    m, s, n = mean_std([0.2, 0.4, 0.6, math.nan])
    assert (round(m, 12), round(s, 12), n) == (0.4, 0.2, 3)
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    assert mean_std([])[2] == 0


@pytest.mark.parametrize("a,b,expected", [
    ([0.6, 0.62, 0.64], [0.40, 0.42, 0.44], "higher"),
    ([0.40, 0.42, 0.44], [0.6, 0.62, 0.64], "lower"),
    ([0.5, 0.6, 0.7], [0.55, 0.6, 0.65], "no clear difference"),
    ([], [0.5], "not measured"),
])
def test_compare_counts_a_difference_only_when_the_ranges_do_not_overlap(a, b, expected):
    assert compare(a, b) == expected


def test_every_variant_runs_every_method_with_the_same_budget():
    names = {m.name for m in METHODS}
    assert names == {"dypo", "sft", "grpo", "sft-then-grpo", "static-mix", "luffy", "dypo-no-gal",
                     "dypo-one-teacher", "dypo-no-grading"}
    for v in VARIANTS.values():
        assert set(v.methods) == names
        assert v.n_val and v.n_test and v.n_ood and v.eval_k >= 2  # avg@1 is the greedy metric only
    full = VARIANTS["full"]
    assert len(full.lrs) >= 3 and full.seeds >= 3
    assert RunSpec("dypo", 1e-3, 2).name == "dypo-lr0.001-s2"
