"""A small but realistic store, written with the real `ShardWriter`, for tests and demos.

`build_store(root, seed=0)` writes what a generate + verify pipeline would leave behind:

- prompts:  12 problems from two sources, `gsm8k` (word problems) and `math` (algebra, fractions,
            remainders), each with a chat prompt asking for the answer in \\boxed{}.
- traces:   two teachers x 2 samples per prompt (server backend: no token ids), and one policy group of
            k = 4 rollouts per prompt (vLLM backend: prompt / completion token ids and a sampling logprob
            per completion token). Completions are worked solutions ending in \\boxed{...}; wrong ones
            carry an arithmetic slip, truncated ones stop mid-sentence with finish_reason "length".
- verdicts: one per trace except the last policy group (generated, not yet verified), covering every
            status (ok / no_answer / parse_error / timeout / error). One teacher trace was re-verified
            later with other settings, so it has two verdicts and the newer one counts.

The policy groups follow a fixed schedule of tiers (easy, mid, hard, unscored); the seed changes the
numbers, the wording, the lengths and which rollouts of a mid group are right. One hard prompt has no
correct teacher trace. The returned `FactoryStore` holds every row written plus the ground truth
(latest verdict per trace, tier per group, teacher pool) computed in Python, independently of the
store's SQL views, so tests can check the views and exports against it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import zlib
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import pyarrow as pa

from dypo_data.contracts import PROMPTS, TRACES, VERDICTS, group_id, prompt_id, settings_hash, trace_id, verdict_id
from dypo_data.store import ShardWriter

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEACHERS = ("teacher-r1-7b", "teacher-qwq-32b")
POLICY = "policy-0.5b"
POLICY_VERSION = "step-0"
K = 4
M = 2  # samples per teacher and prompt
# Tier of the policy group of prompt i (cycled); "unscored" groups get no verdicts.
TIER_SCHEDULE = ("easy", "mid", "hard", "mid", "mid", "easy", "hard", "mid", "mid", "easy", "hard", "unscored")
NUM_PROMPTS = len(TIER_SCHEDULE)
HARD_WITHOUT_TEACHER = 10  # prompt index whose teacher traces are all wrong
# (prompt index, teacher index, sample) -> verdict status other than a plain ok.
SPECIAL_TEACHER_STATUS = {
    (1, 1, 1): "no_answer",
    (2, 1, 0): "parse_error",
    (3, 0, 1): "timeout",
    (4, 1, 1): "error",
    (7, 0, 0): "no_answer",
}
REVERIFIED = (5, 0, 1)  # first verified as timeout, later re-verified as correct
TEACHER_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096}
POLICY_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 1024, "logprobs": 0}
VERIFIER = {"verifier": "math-verify", "timeout_s": 5.0, "float_rounding": 6}
REVERIFIER = {"verifier": "math-verify", "timeout_s": 30.0, "float_rounding": 6}
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


@dataclass(frozen=True)
class Problem:
    source: str
    problem: str
    answer: str
    steps: tuple[str, ...]  # worked solution, the last step states the result
    slip: str  # the same last step with an arithmetic slip
    wrong: str  # the answer that slip gives


@dataclass
class FactoryStore:
    root: Path
    prompts: list[dict]
    traces: list[dict]
    verdicts: list[dict]
    latest: dict[str, dict]  # trace_id -> its latest verdict
    tiers: dict[str, str]  # policy group_id -> tier
    teacher_pool: set[str]  # trace_ids of teacher traces whose latest verdict is correct

    def groups_of(self, tier: str) -> list[str]:
        return sorted(g for g, t in self.tiers.items() if t == tier)

    def group_traces(self, gid: str) -> list[dict]:
        return sorted((t for t in self.traces if t["group_id"] == gid), key=lambda t: t["sample_idx"])

    def prompt(self, pid: str) -> dict:
        return next(p for p in self.prompts if p["prompt_id"] == pid)


# --- problems -------------------------------------------------------------------------------------


def _muffins(rng: random.Random) -> Problem:
    a, b = rng.randint(6, 19), rng.randint(12, 36)
    c = rng.randint(5, a * b // 2)
    total, left = a * b, a * b - c
    return Problem(
        "gsm8k",
        f"A bakery fills {a} trays with {b} muffins each. By noon it has sold {c} muffins. How many muffins are left?",
        str(left),
        (f"Each tray holds {b} muffins and there are {a} trays, so the bakery baked {a} × {b} = {total} muffins.",
         f"It sold {c} of them, so {total} - {c} = {left} muffins are left."),
        f"It sold {c} of them, so {total} - {c} = {left + 10} muffins are left.",
        str(left + 10),
    )


def _pages(rng: random.Random) -> Problem:
    a, b = rng.randint(12, 45), rng.randint(3, 15)
    tue, total = a + b, 2 * a + b
    return Problem(
        "gsm8k",
        f"Maya reads {a} pages on Monday and {b} more pages on Tuesday than on Monday. "
        "How many pages does she read over the two days?",
        str(total),
        (f"On Tuesday she reads {a} + {b} = {tue} pages.",
         f"Over both days she reads {a} + {tue} = {total} pages."),
        f"Over both days she reads {a} + {b} = {a + b} pages.",
        str(a + b),
    )


def _bus(rng: random.Random) -> Problem:
    a, b, c = rng.randint(20, 50), rng.randint(3, 15), rng.randint(2, 12)
    mid, end = a - b, a - b + c
    return Problem(
        "gsm8k",
        f"A bus leaves the depot with {a} passengers. At the first stop {b} passengers get off and {c} get on. "
        "How many passengers are on the bus now?",
        str(end),
        (f"After {b} passengers get off there are {a} - {b} = {mid} passengers.",
         f"Then {c} get on, so there are {mid} + {c} = {end} passengers."),
        f"Then {c} get on, so there are {mid} - {c} = {mid - c} passengers.",
        str(mid - c),
    )


def _linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(-6, 12), rng.randint(1, 20)
    c = a * x + b
    return Problem(
        "math",
        f"Solve for $x$: ${a}x + {b} = {c}$.",
        str(x),
        (f"Subtract {b} from both sides: ${a}x = {c} - {b} = {c - b}$.",
         f"Divide both sides by {a}: $x = \\frac{{{c - b}}}{{{a}}} = {x}$."),
        f"Divide both sides by {a}: $x = \\frac{{{c + b}}}{{{a}}} = {x + 2 * b // a}$.",
        str(x + 2 * b // a),
    )


def _fraction(rng: random.Random) -> Problem:
    while True:
        p, q, f = rng.randint(1, 9), rng.randint(2, 11), rng.randint(2, 9)
        if p < q and gcd(p, q) == 1:
            break
    n, d = p * f, q * f
    return Problem(
        "math",
        f"Simplify $\\frac{{{n}}}{{{d}}}$.",
        f"\\frac{{{p}}}{{{q}}}",
        (f"Both {n} and {d} are divisible by their greatest common divisor, {f}.",
         f"Dividing gives $\\frac{{{n} \\div {f}}}{{{d} \\div {f}}} = \\frac{{{p}}}{{{q}}}$."),
        f"Dividing gives $\\frac{{{n} \\div {f}}}{{{d} \\div {f}}} = \\frac{{{p}}}{{{q + 1}}}$.",
        f"\\frac{{{p}}}{{{q + 1}}}",
    )


def _remainder(rng: random.Random) -> Problem:
    b = rng.randint(6, 13)
    a = rng.randint(100, 999)
    quotient, rem = divmod(a, b)
    return Problem(
        "math",
        f"What is the remainder when ${a}$ is divided by ${b}$?",
        str(rem),
        (f"We have ${b} \\times {quotient} = {b * quotient}$.",
         f"So ${a} - {b * quotient} = {rem}$, and the remainder is ${rem}$."),
        f"So ${a} - {b * (quotient - 1)} = {rem + b}$, and the remainder is ${rem + b}$.",
        str(rem + b),
    )


_MAKERS = (_muffins, _linear, _pages, _fraction, _bus, _remainder)

_CHECKS = (
    "Let me double-check the arithmetic before answering.",
    "Wait, let me re-read the question to make sure I am answering what is asked.",
    "Checking each step again, the numbers are consistent with the statement.",
    "Hmm, is there a trick here? No, the quantities are given directly.",
    "I should verify the units: everything is counted in the same units, so this works.",
    "Alternatively, I could set this up as a single expression and get the same value.",
)


# --- completions ----------------------------------------------------------------------------------


def _teacher_text(pb: Problem, rng: random.Random, status: str, correct: bool) -> tuple[str, str]:
    """(completion, finish_reason) of a reasoning-model trace."""
    steps = list(pb.steps) if correct else [*pb.steps[:-1], pb.slip]
    final = pb.answer if correct else pb.wrong
    checks = rng.sample(_CHECKS, rng.randint(1, 4))
    think = "\n\n".join(["Okay, let me work through this carefully.", *steps, *checks, steps[-1]])
    if status == "no_answer":  # ran out of tokens inside the thinking block
        return f"<think>\n{think}\n\n{checks[0]} So far the running total is", "length"
    unreadable = {"parse_error": f"{final}\\}}{{", "timeout": f"{final}^{{{final}^{{{final}^{{{final}}}}}}}"}
    boxed = unreadable.get(status, final)
    summary = " ".join(steps)
    return f"<think>\n{think}\n</think>\n\n{summary}\n\nThe final answer is $\\boxed{{{boxed}}}$.", "stop"


def _policy_text(pb: Problem, rng: random.Random, correct: bool, truncated: bool) -> tuple[str, str]:
    steps = list(pb.steps) if correct else [*pb.steps[:-1], pb.slip]
    final = pb.answer if correct else pb.wrong
    body = " ".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
    if truncated:
        return f"{body} {rng.choice(_CHECKS)} Let me recount from the start. Step 1:", "length"
    text = " ".join([body, *rng.sample(_CHECKS, rng.randint(0, 2))])
    return f"{text}\nTherefore, the answer is $\\boxed{{{final}}}$.", "stop"


def _token_ids(text: str) -> list[int]:
    """A stand-in tokenizer: word pieces hashed into a 32k vocabulary."""
    return [zlib.crc32(piece.encode()) % 32000 for piece in _TOKEN.findall(text)]


def _chat_prompt(messages: list[dict]) -> str:
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


# --- rows ------------------------------------------------------------------------------------------


def _prompt_row(pb: Problem) -> dict:
    return dict(
        prompt_id=prompt_id(pb.source, pb.problem), source=pb.source, split="train", problem=pb.problem,
        answer=pb.answer, messages=[{"role": "user", "content": f"{pb.problem}\n\n{INSTRUCTION}"}],
        metadata=json.dumps({"level": len(pb.problem) % 5 + 1}), origin=f"{pb.source}/train.jsonl", created_at=T0,
    )


def _trace_row(pid: str, model: str, role: str, idx: int, text: str, finish: str, sampling: dict, *,
               run_id: str, when: dt.datetime, rng: random.Random, version: str | None = None) -> dict:
    shash = settings_hash(sampling)
    ids = _token_ids(text)
    row = dict(
        trace_id=trace_id(pid, model, role, idx, shash, version), prompt_id=pid, run_id=run_id, role=role, model=model,
        model_path=f"/models/{model}", group_id=group_id(pid, model, shash, version), sample_idx=idx,
        policy_version=version, completion=text, num_tokens=len(ids), finish_reason=finish,
        sampling=json.dumps(sampling, sort_keys=True), settings_hash=shash, source="generated",
        source_correct=None, gen_seconds=round(len(ids) / rng.uniform(40.0, 90.0), 3), created_at=when,
        backend="openai" if role == "teacher" else "vllm", prompt_token_ids=None, completion_token_ids=None,
        completion_logprobs=None,
    )
    if role == "policy":
        row["completion_token_ids"] = ids
        row["completion_logprobs"] = [-abs(rng.gauss(0.0, 0.8)) - 1e-3 for _ in ids]
    return row


def _verdict_row(trace: dict, gold: str, status: str, correct: bool | None, extracted: str | None,
                 settings: dict, when: dt.datetime, rng: random.Random) -> dict:
    vhash = settings_hash(settings)
    return dict(
        verdict_id=verdict_id(trace["trace_id"], vhash), trace_id=trace["trace_id"],
        reward=None if correct is None else float(correct), correct=correct, extracted_answer=extracted, gold=gold,
        status=status, verifier="math-verify", verifier_version="0.9.0", settings=json.dumps(settings, sort_keys=True),
        settings_hash=vhash,
        seconds=settings["timeout_s"] if status == "timeout" else round(rng.uniform(0.002, 0.05), 4),
        created_at=when,
    )


def _boxed(text: str) -> str | None:
    found = re.findall(r"\\boxed\{(.*)\}\$", text)
    return found[-1] if found else None


def _policy_pattern(tier: str, rng: random.Random) -> list[bool]:
    if tier == "easy":
        return [True] * K
    if tier == "hard":
        return [False] * K
    if tier == "unscored":
        return [rng.random() < 0.5 for _ in range(K)]
    n_correct = rng.randint(1, K - 1)
    return rng.sample([True] * n_correct + [False] * (K - n_correct), K)


def build_store(root: str | Path, seed: int = 0) -> FactoryStore:
    """Write the store at `root` (created if needed) and return its rows and ground truth."""
    root = Path(root)
    rng = random.Random(seed)
    problems = [_MAKERS[i % len(_MAKERS)](rng) for i in range(NUM_PROMPTS)]
    prompts = [_prompt_row(pb) for pb in problems]
    teacher_run, policy_run = f"teach-{seed}", f"rollout-{seed}"
    verify_run, reverify_run = f"verify-{seed}", f"reverify-{seed}"
    teacher_rows, policy_rows, verdicts, reverdicts = [], [], [], []
    timeout_group_done = False

    for i, (pb, prow) in enumerate(zip(problems, prompts)):
        pid = prow["prompt_id"]
        for t, teacher in enumerate(TEACHERS):
            for s in range(M):
                status = SPECIAL_TEACHER_STATUS.get((i, t, s), "ok")
                correct = i != HARD_WITHOUT_TEACHER and rng.random() < (0.9 if t == 0 else 0.7)
                if (i, t, s) == REVERIFIED:
                    status, correct = "ok", True
                text, finish = _teacher_text(pb, rng, status, correct)
                row = _trace_row(pid, teacher, "teacher", s, text, finish, TEACHER_SAMPLING,
                                 run_id=teacher_run, when=T0 + dt.timedelta(minutes=i), rng=rng)
                teacher_rows.append(row)
                when = T0 + dt.timedelta(hours=2, seconds=len(verdicts))
                if (i, t, s) == REVERIFIED:
                    verdicts.append(_verdict_row(row, pb.answer, "timeout", None, _boxed(text), VERIFIER, when, rng))
                    reverdicts.append(_verdict_row(row, pb.answer, "ok", True, _boxed(text), REVERIFIER,
                                                   when + dt.timedelta(hours=1), rng))
                    continue
                verdict_correct = {"ok": correct, "no_answer": False}.get(status)
                extracted = None if status == "no_answer" else _boxed(text)
                verdicts.append(_verdict_row(row, pb.answer, status, verdict_correct, extracted, VERIFIER, when, rng))

        tier = TIER_SCHEDULE[i]
        pattern = _policy_pattern(tier, rng)
        # The first mid group gets one ungradable (timeout) rollout, taken from its larger class so the
        # graded rest stays mixed: k = 4, n_graded = 3, still mid.
        timeout_idx = -1
        if tier == "mid" and not timeout_group_done:
            timeout_group_done = True
            timeout_idx = pattern.index(pattern.count(True) >= K // 2)
        prompt_ids = _token_ids(_chat_prompt(prow["messages"]))
        for s, correct in enumerate(pattern):
            truncated = tier == "hard" and s == K - 1  # a rollout that ran out of tokens: no answer
            text, finish = _policy_text(pb, rng, correct, truncated)
            row = _trace_row(pid, POLICY, "policy", s, text, finish, POLICY_SAMPLING, run_id=policy_run,
                             when=T0 + dt.timedelta(hours=1, minutes=i), rng=rng, version=POLICY_VERSION)
            row["prompt_token_ids"] = prompt_ids
            policy_rows.append(row)
            if tier == "unscored":
                continue
            when = T0 + dt.timedelta(hours=2, seconds=len(verdicts))
            if truncated:
                verdicts.append(_verdict_row(row, pb.answer, "no_answer", False, None, VERIFIER, when, rng))
            elif s == timeout_idx:
                verdicts.append(_verdict_row(row, pb.answer, "timeout", None, _boxed(text), VERIFIER, when, rng))
            else:
                verdicts.append(_verdict_row(row, pb.answer, "ok", correct, _boxed(text), VERIFIER, when, rng))

    writer = ShardWriter(root, teacher_run)
    for source in ("gsm8k", "math"):  # prompts loaded from two files: two shards
        writer.write("prompts", pa.Table.from_pylist([p for p in prompts if p["source"] == source], schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(teacher_rows, schema=TRACES))
    writer.write_manifest({"run_id": teacher_run, "kind": "generate", "role": "teacher", "traces": len(teacher_rows)})
    ShardWriter(root, policy_run).write("traces", pa.Table.from_pylist(policy_rows, schema=TRACES))
    ShardWriter(root, policy_run).write_manifest({"run_id": policy_run, "kind": "generate", "role": "policy", "k": K})
    for run, rows in ((verify_run, verdicts), (reverify_run, reverdicts)):
        ShardWriter(root, run).write("verdicts", pa.Table.from_pylist(rows, schema=VERDICTS))
        ShardWriter(root, run).write_manifest({"run_id": run, "kind": "verify", "verdicts": len(rows)})

    traces = teacher_rows + policy_rows
    all_verdicts = verdicts + reverdicts
    latest: dict[str, dict] = {}
    for v in sorted(all_verdicts, key=lambda v: v["created_at"]):
        latest[v["trace_id"]] = v
    return FactoryStore(
        root=root, prompts=prompts, traces=traces, verdicts=all_verdicts, latest=latest,
        tiers=_tiers(policy_rows, latest),
        teacher_pool={t["trace_id"] for t in teacher_rows if latest.get(t["trace_id"], {}).get("correct") is True},
    )


def _tiers(policy_rows: list[dict], latest: dict[str, dict]) -> dict[str, str]:
    """The DYPO gate over graded rollouts, computed in Python (the store computes it in SQL)."""
    graded: dict[str, list[bool]] = {}
    for row in policy_rows:
        verdict = latest.get(row["trace_id"])
        graded.setdefault(row["group_id"], [])
        if verdict is not None and verdict["correct"] is not None:
            graded[row["group_id"]].append(verdict["correct"])
    tiers = {}
    for gid, results in graded.items():
        if not results:
            tiers[gid] = "unscored"
        else:
            tiers[gid] = "easy" if all(results) else "hard" if not any(results) else "mid"
    return tiers
