"""A store a tiny model can train on, written with the real row builders and `ShardWriter`.

`build_train_store(root, tokenizer)` writes what `dypo-data generate` + `verify` would leave behind
for a character-level policy, with the tiers chosen rather than left to chance:

- prompts:  N synthetic arithmetic problems (difficulty 1) asking for a boxed answer;
- traces:   two teachers, one trace each per prompt (no token ids, as from a server), and one policy
            group of k rollouts per prompt with prompt / completion token ids from `tokenizer` (its
            chat template) and a sampling logprob per completion token;
- verdicts: one per trace, except the groups scheduled "unscored"; prompt NO_TEACHER's teacher
            traces are both wrong, so it is a hard prompt without an SFT target.

Group tiers follow SCHEDULE (cycled); a mid group's correct samples are drawn from the seed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dypo_data.contracts import PROMPTS, TRACES, VERDICTS, prompt_id, settings_hash
from dypo_data.contracts.ids import verdict_id
from dypo_data.contracts.rows import trace_row
from dypo_data.prompts.synthetic import generate_problems
from dypo_data.store import ShardWriter

T0 = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.timezone.utc)
INSTRUCTION = "Put the answer in \\boxed{}."
TEACHERS = ("teacher-a", "teacher-b")
POLICY = "tiny-policy"
SCHEDULE = ("mid", "hard", "easy", "mid", "hard", "mid", "mid", "unscored")
NO_TEACHER = 4  # prompt index whose teacher traces are all wrong (a hard prompt without a target)


@dataclass
class TrainStore:
    root: Path
    prompts: list[dict]
    traces: list[dict]
    verdicts: list[dict]
    tiers: dict[str, str]  # group_id -> tier


def _pattern(tier: str, k: int, rng: random.Random) -> list[bool]:
    if tier == "easy":
        return [True] * k
    if tier in ("hard",):
        return [False] * k
    if tier == "unscored":
        return [False] * k
    n = rng.randint(1, k - 1)
    return rng.sample([True] * n + [False] * (k - n), k)


def _verdict(trace: dict, gold: str, correct: bool) -> dict:
    settings = {"verifier": "math-verify", "timeout_s": 5.0}
    vhash = settings_hash(settings)
    return dict(verdict_id=verdict_id(trace["trace_id"], vhash), trace_id=trace["trace_id"], reward=float(correct),
                correct=correct, extracted_answer=None, gold=gold, status="ok", verifier="math-verify",
                verifier_version="0.9.0", settings=json.dumps(settings), settings_hash=vhash, seconds=0.01, created_at=T0)


def build_train_store(root: str | Path, tokenizer, *, n_prompts: int = 16, k: int = 4, seed: int = 0,
                      schedule: tuple[str, ...] = SCHEDULE, policy: str = POLICY) -> TrainStore:
    root = Path(root)
    rng = random.Random(seed)
    problems = generate_problems(n_prompts, seed=seed, kinds=["arithmetic"], difficulty=1)
    prompts, traces, verdicts, tiers = [], [], [], {}
    for i, pb in enumerate(problems):
        problem, answer = pb["problem"], pb["answer"]
        pid = prompt_id("synthetic", problem)
        messages = [{"role": "user", "content": f"{problem} {INSTRUCTION}"}]
        prompts.append(dict(prompt_id=pid, source="synthetic", split="train", problem=problem, answer=answer,
                            messages=messages, metadata=None, origin="synthetic", created_at=T0))
        for t, teacher in enumerate(TEACHERS):
            right = i != NO_TEACHER
            text = f"We compute {problem.rstrip('?.')} step by step. The answer is \\boxed{{{answer if right else answer + '1'}}}."
            shash = settings_hash({"teacher": teacher})
            row = trace_row(prompt_id=pid, model=teacher, role="teacher", sample_idx=0, shash=shash, policy_version=None,
                            completion=text, num_tokens=len(text), finish_reason="stop", sampling_json="{}", backend="openai",
                            source="generated", run_id="factory", model_path=None, gen_seconds=0.1, created_at=T0)
            traces.append(row)
            verdicts.append(_verdict(row, answer, right))
        tier = schedule[i % len(schedule)]
        pattern = _pattern(tier, k, rng)
        prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = list(prompt_ids)
        shash = settings_hash({"policy": policy, "k": k})
        for s, correct in enumerate(pattern):
            wrong = str(int(rng.randint(0, 99)))
            text = f"\\boxed{{{answer if correct else wrong}}}" + "!" * rng.randint(0, 6)
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
            row = trace_row(prompt_id=pid, model=policy, role="policy", sample_idx=s, shash=shash, policy_version="0",
                            completion=text, num_tokens=len(ids), finish_reason="stop", sampling_json="{}", backend="vllm",
                            source="generated", run_id="factory", model_path=None, gen_seconds=0.1, created_at=T0,
                            prompt_token_ids=prompt_ids, completion_token_ids=ids,
                            completion_logprobs=[-rng.uniform(0.5, 6.0) for _ in ids])
            traces.append(row)
            tiers[row["group_id"]] = tier
            if tier != "unscored":
                verdicts.append(_verdict(row, answer, correct))
    writer = ShardWriter(root, "factory")
    writer.write("prompts", pa.Table.from_pylist(prompts, schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(traces, schema=TRACES))
    writer.write("verdicts", pa.Table.from_pylist(verdicts, schema=VERDICTS))
    return TrainStore(root, prompts, traces, verdicts, tiers)
