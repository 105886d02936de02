"""The reproduction's pure parts: choosing a learning rate, statistics over seeds, comparisons."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipelines" / "reproduce"))

from diagnosis import diagnosis_statements, diagnosis_table, median_norm, window_reward  # noqa: E402
from report import compute_statement  # noqa: E402
from report_stats import compare, mean_std  # noqa: E402
from runs import METHOD_BY_NAME, RunSpec, best_lr, final_metric  # noqa: E402
from settings import DIAGNOSIS, METHODS, VARIANTS  # noqa: E402


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
        assert names <= set(v.methods) <= set(METHOD_BY_NAME)
        assert set(v.methods) - names == (set(DIAGNOSIS) - names if v.name == "full" else set())
        assert v.n_val and v.n_test and v.n_ood and v.eval_k >= 2  # avg@1 is the greedy metric only
    full = VARIANTS["full"]
    assert len(full.lrs) >= 3 and full.seeds >= 3
    assert RunSpec("dypo", 1e-3, 2).name == "dypo-lr0.001-s2"


def _diag_run(norms: list[float], rewards: list[float], test: float) -> dict:
    dynamics = [{"step": i + 1, "name": "grad/norm", "value": n} for i, n in enumerate(norms)]
    dynamics += [{"step": i + 1, "name": "reward/mean", "value": r} for i, r in enumerate(rewards)]
    evals = [{"benchmark": b, "metric": "avg@4", "policy_version": "30", "value": test} for b in ("val", "test", "ood")]
    return {"dynamics": dynamics, "eval": evals, "lr": 3e-4}


def test_median_norm_leaves_out_steps_that_trained_nothing():
    assert median_norm(_diag_run([0.0, 2.0, 0.0, 4.0, 9.0], [], 0.5)) == 4.0  # median of 2, 4, 9
    assert math.isnan(median_norm(_diag_run([0.0, 0.0], [], 0.5)))


def test_window_reward_means_the_first_and_last_steps():
    r = _diag_run([], [0.0] * 10 + [1.0] * 10, 0.5)
    assert window_reward(r, True) == 0.0 and window_reward(r, False) == 1.0
    assert window_reward(r, True, n=20) == 0.5


def test_diagnosis_names_the_term_that_carries_the_norm_from_the_numbers():
    v = VARIANTS["full"]
    big, small = [100.0, 120.0, 80.0], [2.0, 3.0, 1.0]
    chosen = {
        "dypo": [_diag_run(big, [0.3] * 20, 0.90), _diag_run(big, [0.3] * 20, 0.92)],
        "grpo": [_diag_run(small, [0.6] * 20, 0.99), _diag_run(small, [0.6] * 20, 0.98)],
        "dypo-no-gal": [_diag_run(small, [0.5] * 20, 0.97)] * 2,
        "dypo-gal-0.01": [_diag_run(small, [0.6] * 20, 0.99), _diag_run(small, [0.6] * 20, 0.98)],
        "dypo-no-clip": [_diag_run(big, [0.3] * 20, 0.91)] * 2,
    }
    results = [{**r, "method": m, "seed": 0, "lr": 1e-3} for m, runs in chosen.items() for r in runs[:1]]
    text = "\n".join(diagnosis_statements(chosen, results, v))
    assert "norm is 100.0, 50x GRPO's (2.00)" in text and "GAL carries it" in text
    assert "GAL at 0.01 vs DYPO: higher; vs GRPO: no clear difference" in text
    assert "Without clipping vs DYPO: no clear difference" in text
    assert "DYPO vs GRPO: lower; GAL at 0.01 vs DYPO: higher" in text
    assert "(validation avg@4, seed 0) at lr 0.001: dypo 0.900, grpo 0.990, dypo-no-gal 0.970," in text
    chosen["dypo-no-gal"] = chosen["dypo"]  # the norm stays without GAL: GAL is not the cause
    assert "GAL does not explain it alone" in "\n".join(diagnosis_statements(chosen, results, v))
    best = {m: 3e-4 for m in DIAGNOSIS}
    table = diagnosis_table(chosen, best, v)
    assert len(table) == 2 + len(DIAGNOSIS) and table[2].startswith("| dypo | 0.0003 | 100.000 ± 0.000 |")
    del chosen["dypo-no-clip"]
    assert diagnosis_statements(chosen, results, v) == []  # a missing run: no statement rather than a half one
    assert "| dypo-no-clip | n/a | not run |" in "\n".join(diagnosis_table(chosen, best, v))


def test_compute_statement_gives_tokens_trained_relative_to_dypo():
    chosen = {"dypo": [{"tokens_trained": 100.0}, {"tokens_trained": 300.0}], "sft": [{"tokens_trained": 50.0}],
              "grpo": [], "dypo-no-gal": [{"tokens_trained": 1.0}]}
    text = compute_statement(chosen)
    assert text.endswith("Tokens trained relative to DYPO: sft 0.25x.")  # ablations and methods without runs left out
    assert compute_statement({"sft": [{"tokens_trained": 5.0}]}) == ""
