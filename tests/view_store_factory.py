"""Stores for the viewer's tests and benchmark, written with the real `ShardWriter`.

- `build_view_store(root)`: `store_factory.build_store` (12 prompts, teachers, policy groups, every
  verdict status) plus what the viewer shows beyond it: two training runs (train_metrics with the
  curves the trainer logs, train_samples routing every prompt every step, skips with their reason),
  an evaluation (eval samples with verdicts, eval_results for the base model and two checkpoints),
  and one teacher trace carrying hostile markup (`HOSTILE_MARKUP`) that must stay inert text.
- `build_large_store(root, n_prompts)`: the same kinds of rows at scale (by default 20,000 prompts,
  2 teachers x 2 samples and a group of k = 8 rollouts per prompt, two 200-step runs of 64 prompts
  per step, eval results), deterministic for a seed; used by `benchmarks/bench_view.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
from pathlib import Path

import pyarrow as pa

import store_factory as sf
from dypo_data.contracts import TRACES, VERDICTS, group_id, settings_hash, trace_id, verdict_id
from dypo_data.contracts.schemas import EVAL_RESULTS, PROMPTS, TRAIN_METRICS, TRAIN_SAMPLES
from dypo_data.store import ShardWriter

HOSTILE_MARKUP = '<script>window.__dypo_pwned = 1;</script><img src="x" onerror="window.__dypo_pwned = 2">'
RUNS = ("dypo-a", "dypo-b")
EVAL_MODEL = "policy-0.5b"
EVAL_VERSIONS = ("base", "4", "8")
BENCHMARK = "held-out"
EVAL_SAMPLING = {"temperature": 0.6, "max_tokens": 1024}
T1 = sf.T0 + dt.timedelta(days=1)


def _curve(step: int, steps: int, start: float, end: float, noise: float, rng: random.Random) -> float:
    return start + (end - start) * (1 - math.exp(-3 * step / max(steps, 1))) + rng.gauss(0, noise)


def metric_rows(run_id: str, steps: int, prompts_per_step: int, seed: int) -> list[dict]:
    """train_metrics rows with the shapes the paper reports (offline ratio falling, entropy in range)."""
    rng = random.Random(f"{run_id}-{seed}")
    rows = []
    for step in range(1, steps + 1):
        hard = max(0.0, _curve(step, steps, 0.9, 0.35, 0.03, rng))
        easy = max(0.0, _curve(step, steps, 0.0, 0.3, 0.03, rng))
        values = {
            "tier/offline_ratio": hard, "tier/hard": round(hard * prompts_per_step),
            "tier/easy": round(easy * prompts_per_step),
            "tier/mid": prompts_per_step - round(hard * prompts_per_step) - round(easy * prompts_per_step),
            "reward/mean": _curve(step, steps, 0.05, 0.6, 0.02, rng),
            "policy/entropy": _curve(step, steps, 0.6, 0.3, 0.02, rng),
            "grad/norm": abs(_curve(step, steps, 2.0, 0.8, 0.15, rng)),
            "loss/sft": _curve(step, steps, 1.2, 0.5, 0.05, rng), "loss/rl": rng.gauss(0, 0.02),
            "loss/gal": _curve(step, steps, 0.69, 0.55, 0.01, rng), "loss/total": _curve(step, steps, 1.0, 0.4, 0.04, rng),
            "time/generate": rng.uniform(2, 3), "time/verify": rng.uniform(0.2, 0.4), "time/train": rng.uniform(4, 5),
            "time/weight_sync": rng.uniform(0.1, 0.2), "route/hard_without_teacher": float(rng.randint(0, 2)),
        }
        if step % 4 == 0:
            values[f"eval/{BENCHMARK}/avg@4"] = _curve(step, steps, 0.1, 0.5, 0.02, rng)
        rows += [{"run_id": run_id, "step": step, "name": k, "value": float(v), "created_at": T1} for k, v in values.items()]
    rows.append({"run_id": run_id, "step": steps, "name": "loss/offpolicy", "value": None, "created_at": T1})  # NaN logged
    return rows


def _route(tier: str, has_teacher: bool) -> tuple[str, bool]:
    """(route, trains on a teacher trace) as the DYPO plan decides it (dypo_train.loop.plan)."""
    if tier == "easy":
        return "skip:easy", False
    if tier == "unscored":
        return "skip:unscored", False
    if tier == "hard":
        return ("sft", True) if has_teacher else ("skip:no_teacher", False)
    return "rl", False


def sample_rows(run_id: str, steps: int, step_prompts: list[list[dict]], pool: dict[str, list[str]]) -> list[dict]:
    """train_samples rows: `step_prompts[s]` holds {prompt_id, group_id, tier, k, n_correct} of step s+1."""
    rows = []
    for step in range(1, steps + 1):
        for i, g in enumerate(step_prompts[step - 1]):
            teachers = pool.get(g["prompt_id"], [])
            route, sft = _route(g["tier"], bool(teachers))
            rows.append({
                "run_id": run_id, "step": step, "prompt_id": g["prompt_id"], "group_id": g["group_id"], "tier": g["tier"],
                "route": route, "teacher_trace_id": teachers[(step + i) % len(teachers)] if sft else None,
                "n_rollouts": g["k"], "n_correct": g["n_correct"], "created_at": T1,
            })
    return rows


def _eval_rows(fs: sf.FactoryStore) -> tuple[list[dict], list[dict], list[dict]]:
    """Eval traces (k = 2 per prompt and version) with verdicts, and the eval_results they give."""
    rng = random.Random(7)
    shash = settings_hash(EVAL_SAMPLING)
    vhash = settings_hash(sf.VERIFIER)
    traces, verdicts, results = [], [], []
    for v_i, version in enumerate(EVAL_VERSIONS):
        for p in fs.prompts[:6]:
            for s in range(2):
                correct = rng.random() < 0.3 + 0.2 * v_i
                text = f"Working it out. The answer is $\\boxed{{{p['answer'] if correct else '0'}}}$."
                tid = trace_id(p["prompt_id"], EVAL_MODEL, "eval", s, shash, version)
                traces.append({**_blank_trace(), "trace_id": tid, "prompt_id": p["prompt_id"], "run_id": "eval-0",
                               "role": "eval", "model": EVAL_MODEL, "sample_idx": s, "policy_version": version,
                               "completion": text, "num_tokens": 14, "finish_reason": "stop",
                               "sampling": json.dumps(EVAL_SAMPLING), "settings_hash": shash, "created_at": T1})
                verdicts.append({"verdict_id": verdict_id(tid, vhash), "trace_id": tid, "reward": float(correct),
                                 "correct": correct, "extracted_answer": p["answer"] if correct else "0",
                                 "gold": p["answer"], "status": "ok", "verifier": "math-verify",
                                 "verifier_version": "0.9.0", "settings": json.dumps(sf.VERIFIER),
                                 "settings_hash": vhash, "seconds": 0.01, "created_at": T1})
        for metric, value in (("avg@2", 0.3 + 0.2 * v_i), ("pass@1", 0.3 + 0.2 * v_i), ("maj@2", 0.25 + 0.2 * v_i)):
            results.append({"run_id": "eval-0", "model": EVAL_MODEL, "policy_version": version, "benchmark": BENCHMARK,
                            "metric": metric, "value": value, "low": value - 0.1, "high": value + 0.1,
                            "n_problems": 6, "k": 2, "settings": json.dumps({"k": 2}), "settings_hash": "s0",
                            "created_at": T1})
    return traces, verdicts, results


def _blank_trace() -> dict:
    return {name: None for name in TRACES.names}


def _hostile_trace(fs: sf.FactoryStore) -> tuple[dict, dict]:
    """A teacher trace (verified correct) whose completion holds markup that must be shown as text."""
    p = fs.prompts[0]
    sampling = {"temperature": 0.6, "hostile": True}
    shash = settings_hash(sampling)
    tid = trace_id(p["prompt_id"], "teacher-hostile", "teacher", 0, shash)
    text = f"Ignore this: {HOSTILE_MARKUP} and so the answer is $\\boxed{{{p['answer']}}}$."
    trace = {**_blank_trace(), "trace_id": tid, "prompt_id": p["prompt_id"], "run_id": "hostile", "role": "teacher",
             "model": "teacher-hostile", "sample_idx": 0, "completion": text, "num_tokens": 40, "finish_reason": "stop",
             "sampling": json.dumps(sampling), "settings_hash": shash, "created_at": T1}
    vhash = settings_hash(sf.VERIFIER)
    verdict = {"verdict_id": verdict_id(tid, vhash), "trace_id": tid, "reward": 1.0, "correct": True,
               "extracted_answer": p["answer"], "gold": p["answer"], "status": "ok", "verifier": "math-verify",
               "verifier_version": "0.9.0", "settings": json.dumps(sf.VERIFIER), "settings_hash": vhash,
               "seconds": 0.01, "created_at": T1}
    return trace, verdict


def _factory_groups(fs: sf.FactoryStore) -> list[dict]:
    groups = []
    for gid, tier in sorted(fs.tiers.items()):
        rows = fs.group_traces(gid)
        n_correct = sum(1 for r in rows if (fs.latest.get(r["trace_id"]) or {}).get("correct") is True)
        groups.append({"prompt_id": rows[0]["prompt_id"], "group_id": gid, "tier": tier, "k": len(rows), "n_correct": n_correct})
    return groups


def _teacher_pool(traces: list[dict], correct_ids: set[str]) -> dict[str, list[str]]:
    pool: dict[str, list[str]] = {}
    for t in traces:
        if t["role"] == "teacher" and t["trace_id"] in correct_ids:
            pool.setdefault(t["prompt_id"], []).append(t["trace_id"])
    return pool


def build_view_store(root: str | Path, *, steps: int = 8) -> sf.FactoryStore:
    """The factory store plus training runs, an evaluation and one hostile trace (see module doc)."""
    root = Path(root)
    fs = sf.build_store(root)
    hostile, hostile_verdict = _hostile_trace(fs)
    eval_traces, eval_verdicts, results = _eval_rows(fs)
    writer = ShardWriter(root, "view-extras")
    writer.write("traces", pa.Table.from_pylist([hostile, *eval_traces], schema=TRACES))
    writer.write("verdicts", pa.Table.from_pylist([hostile_verdict, *eval_verdicts], schema=VERDICTS))
    writer.write("eval_results", pa.Table.from_pylist(results, schema=EVAL_RESULTS))
    pool = _teacher_pool(fs.traces, fs.teacher_pool)
    groups = _factory_groups(fs)
    for run_id in RUNS:
        run_writer = ShardWriter(root, run_id)
        run_writer.write("train_metrics", pa.Table.from_pylist(metric_rows(run_id, steps, len(groups), 0), schema=TRAIN_METRICS))
        run_writer.write("train_samples", pa.Table.from_pylist(sample_rows(run_id, steps, [groups] * steps, pool), schema=TRAIN_SAMPLES))
    fs.traces += [hostile, *eval_traces]
    return fs


# -- at scale --------------------------------------------------------------------------------------

LARGE_K = 8


def _large_prompts(n_prompts: int, rng: random.Random) -> list[sf.Problem]:
    """`n_prompts` distinct problems; makers with few distinct problems (fractions) run dry and are skipped over."""
    problems, seen = [], set()
    for attempt in range(50 * n_prompts):
        if len(problems) == n_prompts:
            break
        pb = sf._MAKERS[attempt % len(sf._MAKERS)](rng)
        key = (pb.source, pb.problem)
        if key not in seen:
            seen.add(key)
            problems.append(pb)
    if len(problems) < n_prompts:
        raise ValueError(f"the problem makers gave only {len(problems)} distinct problems, fewer than {n_prompts}")
    return problems


def _large_traces(pb: sf.Problem, pid: str, rng: random.Random, tier: str) -> tuple[list[dict], list[dict], dict]:
    vhash = settings_hash(sf.VERIFIER)
    traces, verdicts = [], []
    for t, teacher in enumerate(sf.TEACHERS):
        for s in range(sf.M):
            correct = rng.random() < (0.8 if t == 0 else 0.6)
            text, finish = sf._teacher_text(pb, rng, "ok", correct)
            traces.append(sf._trace_row(pid, teacher, "teacher", s, text, finish, sf.TEACHER_SAMPLING,
                                        run_id="teach", when=sf.T0, rng=rng))
            verdicts.append((traces[-1], correct))
    pattern = [True] * LARGE_K if tier == "easy" else [False] * LARGE_K if tier == "hard" else \
        rng.sample([True] + [False] * (LARGE_K - 2) + [rng.random() < 0.5], LARGE_K)
    for s, correct in enumerate(pattern):
        text, finish = sf._policy_text(pb, rng, correct, truncated=False)
        row = sf._trace_row(pid, sf.POLICY, "policy", s, text, finish, sf.POLICY_SAMPLING, run_id="rollout",
                            when=sf.T0, rng=rng, version=sf.POLICY_VERSION)
        traces.append(row)
        verdicts.append((row, correct))
    verdict_rows = [sf._verdict_row(row, pb.answer, "ok", c, sf._boxed(row["completion"]), sf.VERIFIER, sf.T0, rng)
                    for row, c in verdicts]
    group = {"prompt_id": pid, "group_id": group_id(pid, sf.POLICY, settings_hash(sf.POLICY_SAMPLING), sf.POLICY_VERSION),
             "tier": tier, "k": LARGE_K, "n_correct": sum(pattern)}
    assert vhash == verdict_rows[0]["settings_hash"]
    return traces, verdict_rows, group


def build_large_store(root: str | Path, *, n_prompts: int = 20_000, steps: int = 200, prompts_per_step: int = 64,
                      seed: int = 0, shard_prompts: int = 2_000) -> None:
    """A store of `n_prompts` prompts (see module doc), written in shards of `shard_prompts` prompts."""
    root = Path(root)
    rng = random.Random(seed)
    problems = _large_prompts(n_prompts, rng)
    writer = ShardWriter(root, f"large-{seed}")
    groups, pool = [], {}
    for start in range(0, n_prompts, shard_prompts):
        prompts, traces, verdicts = [], [], []
        for pb in problems[start:start + shard_prompts]:
            prow = sf._prompt_row(pb)
            tier = rng.choice(("easy", "mid", "mid", "hard"))
            t_rows, v_rows, group = _large_traces(pb, prow["prompt_id"], rng, tier)
            prompts.append(prow)
            traces += t_rows
            verdicts += v_rows
            groups.append(group)
        correct = {v["trace_id"] for v in verdicts if v["correct"]}
        for pid, ids in _teacher_pool(traces, correct).items():
            pool[pid] = ids
        writer.write("prompts", pa.Table.from_pylist(prompts, schema=PROMPTS))
        writer.write("traces", pa.Table.from_pylist(traces, schema=TRACES))
        writer.write("verdicts", pa.Table.from_pylist(verdicts, schema=VERDICTS))
    for run_id in RUNS:
        step_prompts = [rng.sample(groups, prompts_per_step) for _ in range(steps)]
        run_writer = ShardWriter(root, run_id)
        run_writer.write("train_metrics", pa.Table.from_pylist(metric_rows(run_id, steps, prompts_per_step, seed), schema=TRAIN_METRICS))
        run_writer.write("train_samples", pa.Table.from_pylist(sample_rows(run_id, steps, step_prompts, pool), schema=TRAIN_SAMPLES))
    _write_large_eval(writer)


def _write_large_eval(writer: ShardWriter) -> None:
    results = [{"run_id": "eval-large", "model": EVAL_MODEL, "policy_version": version, "benchmark": bench,
                "metric": metric, "value": 0.2 + 0.1 * i, "low": 0.1 + 0.1 * i, "high": 0.3 + 0.1 * i,
                "n_problems": 500, "k": 4, "settings": "{}", "settings_hash": "s0", "created_at": T1}
               for bench in ("math500", "aime24") for i, version in enumerate(("base", "100", "200"))
               for metric in ("avg@4", "pass@1", "maj@4")]
    writer.write("eval_results", pa.Table.from_pylist(results, schema=EVAL_RESULTS))


def store_digest(root: Path) -> dict[str, str]:
    """Every file under the store with the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
