"""The metrics of one evaluation (evaluation/summary.py) on a hand-made table, the pass@j list
rules, and the run-checkpoint discovery that `--run` relies on."""

from __future__ import annotations

import json
import math

import pytest

from dypo_data.errors import ConfigError, InputError
from dypo_data.evaluation import avg_per_problem, bootstrap_interval
from dypo_data.evaluation.summary import ProblemSamples, check_pass_at, default_pass_at, summarize
from dypo_data.models.runs import parse_steps, run_checkpoints


def problem(correct, answers=None, finish=None, tokens=None):
    k = len(correct)
    answers = answers or [None if c is None else ("right" if c else "wrong") for c in correct]
    labels = [None if a is None else a for a in answers]
    return ProblemSamples(correct, answers, labels, finish or ["stop"] * k, tokens or [10] * k)


def test_a_hand_computed_table():
    # k = 4: problem 1 has c = 2 of n = 4; problem 2 c = 0; problem 3 c = 4; problem 4: 1 of 3 graded + 1 ungradable
    problems = [
        problem([True, False, True, False], finish=["stop", "length", "stop", "stop"], tokens=[4, 8, 12, 16]),
        problem([False] * 4),
        problem([True] * 4),
        problem([True, False, None, False]),
    ]
    got = {v.metric: v for v in summarize(problems, k=4, pass_at=(1, 2, 4), seed=0)}
    assert [v for v in got] == ["avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "samples", "ungradable",
                                "truncation_rate", "mean_length"]
    assert got["avg@4"].value == pytest.approx((0.5 + 0 + 1 + 1 / 3) / 4)
    assert got["pass@1"].value == pytest.approx(got["avg@4"].value)
    # pass@2: 1 - C(2,2)/C(4,2) = 5/6; 0; 1; 1 - C(2,2)/C(3,2) = 2/3
    assert got["pass@2"].value == pytest.approx((5 / 6 + 0 + 1 + 2 / 3) / 4)
    # pass@4 needs 4 graded samples: problem 4 (3 graded) is left out
    assert got["pass@4"].value == pytest.approx((1 + 0 + 1) / 3) and got["pass@4"].n_problems == 3
    # maj@4: a 2-2 tie scores 1/2; wrong; right; "wrong" wins 2-1
    assert got["maj@4"].value == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert got["ungradable"].value == 1 and got["samples"].value == 16
    assert got["truncation_rate"].value == pytest.approx(1 / 16)
    assert got["mean_length"].value == pytest.approx((4 + 8 + 12 + 16 + 12 * 10) / 16)
    for name in ("avg@4", "pass@2", "maj@4"):
        assert got[name].low <= got[name].value <= got[name].high
    assert got["ungradable"].low is None and got["mean_length"].high is None


def test_intervals_are_seeded():
    problems = [problem([i % 3 == 0, i % 2 == 0]) for i in range(30)]
    a = summarize(problems, k=2, pass_at=(1, 2), seed=7)
    assert a == summarize(problems, k=2, pass_at=(1, 2), seed=7)
    low, high = bootstrap_interval(avg_per_problem([p.correct for p in problems]), seed=7)
    assert (a[0].metric, a[0].low, a[0].high) == ("avg@2", low, high)


def test_no_graded_sample_gives_nan_without_interval():
    got = {v.metric: v for v in summarize([problem([None, None])], k=2, pass_at=(1,), seed=0)}
    assert math.isnan(got["avg@2"].value) and got["avg@2"].low is None and got["avg@2"].n_problems == 0
    assert got["ungradable"].value == 2


@pytest.mark.parametrize("k, expected", [(1, (1,)), (2, (1, 2)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8))])
def test_default_pass_at(k, expected):
    assert default_pass_at(k) == expected


def test_pass_at_rules():
    assert check_pass_at([4, 1, 4], 4) == (1, 4)
    with pytest.raises(ConfigError, match="pass@8 needs at least 8 samples"):
        check_pass_at([1, 8], 4)
    with pytest.raises(ConfigError, match="k=0"):
        check_pass_at([1], 0)
    with pytest.raises(ConfigError, match="undefined"):
        check_pass_at([0], 4)


# -- run checkpoints --------------------------------------------------------------------------------


def fake_checkpoint(run, step, *, complete=True):
    from dypo_train.loop.checkpoint import STATE_FILE, checkpoint_name

    ckpt = run / "checkpoints" / checkpoint_name(step)
    (ckpt / "model").mkdir(parents=True)
    (ckpt / "model" / "config.json").write_text("{}")
    if complete:
        (ckpt / STATE_FILE).write_text(json.dumps({"step": step}))
    return ckpt


def test_run_checkpoints_follow_the_trainer_layout(tmp_path):
    run = tmp_path / "runs" / "r1"
    for step in (2, 10):
        fake_checkpoint(run, step)
    fake_checkpoint(run, 12, complete=False)  # being written
    (run / "checkpoints" / ".tmp-step-000014").mkdir()
    found = run_checkpoints(run)
    assert [(c.step, c.path.parent.name) for c in found] == [(2, "step-000002"), (10, "step-000010")]
    assert [c.step for c in run_checkpoints(run, (10,))] == [10]
    with pytest.raises(InputError, match="no checkpoint for step"):
        run_checkpoints(run, (3,))


def test_run_without_checkpoints(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_checkpoints(tmp_path / "nope")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(InputError, match="no complete checkpoint"):
        run_checkpoints(tmp_path / "empty")


def test_parse_steps():
    assert parse_steps("100, 200") == (100, 200) and parse_steps(None) is None
    with pytest.raises(ConfigError, match="not a step number"):
        parse_steps("100,x")
