"""Stores at the scale of real distillation data, in the project's own format, for bench_store.py.

`build_scale_store(root, n_prompts, seed)` writes what `dypo-data import`, `generate` (2 teachers x
1 trace, then the policy's groups of k = 8 rollouts) and `verify` leave behind, with the real
`ShardWriter` and the shard sizes those jobs write by default: prompts in shards of 1,000, traces
in shards of 256 (generate's --flush-every), verdicts in shards of 1,024 (verify's --flush-every).
Every trace is verified. Policy rollouts carry ~400 completion token ids with a sampling logprob
each and the prompt's token ids; completions are worked solutions padded with reasoning to ~4
characters per token. Problems come from the tests' problem makers (tests/store_factory.py),
numbered so that 100k of them are distinct. Deterministic for (n_prompts, seed).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa

import store_factory as sf
from dypo_data.contracts import PROMPTS, TRACES, VERDICTS, group_id, settings_hash, trace_id, verdict_id
from dypo_data.store import ShardWriter

K = 8
TEACHERS = ("teacher-a", "teacher-b")
POLICY = "policy"
POLICY_VERSION = "0"
PROMPT_SHARD, TRACE_SHARD, VERDICT_SHARD = 1_000, 256, 1_024
MEAN_TOKENS = 400
TEACHER_SAMPLING = {"temperature": 0.6, "max_tokens": 2048}
POLICY_SAMPLING = {"temperature": 1.0, "max_tokens": 512, "logprobs": 0}
VERIFIER = sf.VERIFIER
VERIFIER_HASH = settings_hash(VERIFIER)
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _problems(n: int, rng: random.Random) -> list[sf.Problem]:
    out = []
    for i in range(n):
        pb = sf._MAKERS[i % len(sf._MAKERS)](rng)
        out.append(sf.Problem(pb.source, f"({i}) {pb.problem}", pb.answer, pb.steps, pb.slip, pb.wrong))
    return out


def _padded(text: str, n_tokens: int, rng: random.Random) -> str:
    """`text` with reasoning sentences inserted before its last line, to about 4 characters per token."""
    head, _, last = text.rpartition("\n")
    filler = []
    while len(head) + sum(len(f) + 1 for f in filler) < 4 * n_tokens:
        filler.append(rng.choice(sf._CHECKS))
    return " ".join([head, *filler]) + "\n" + last


def _lists(lengths: np.ndarray, values: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class _Builder:
    """Buffers rows per table and writes a shard each time a buffer reaches its job's shard size."""

    def __init__(self, root: Path, seed: int) -> None:
        self.writer = ShardWriter(root, f"scale-{seed}")
        self.np_rng = np.random.default_rng(seed)
        self.rng = random.Random(seed)
        self.buffers: dict[str, list[dict]] = {"prompts": [], "traces": [], "verdicts": []}
        self.sizes = {"prompts": PROMPT_SHARD, "traces": TRACE_SHARD, "verdicts": VERDICT_SHARD}
        self.shard = 0

    def add(self, table: str, row: dict) -> None:
        self.buffers[table].append(row)
        if len(self.buffers[table]) >= self.sizes[table]:
            self.flush(table)

    def flush(self, table: str) -> None:
        rows = self.buffers[table]
        if not rows:
            return
        self.buffers[table] = []
        self.shard += 1
        when = T0 + dt.timedelta(seconds=self.shard)
        schema = {"prompts": PROMPTS, "traces": TRACES, "verdicts": VERDICTS}[table]
        token_rows = [r.pop("_tokens", None) for r in rows]
        prompt_ids = [r.pop("_prompt_ids", None) for r in rows]
        for r in rows:
            r["created_at"] = when
        data = pa.Table.from_pylist(rows, schema=schema)
        if table == "traces" and any(t is not None for t in token_rows):
            data = self._with_tokens(data, token_rows, prompt_ids)
        self.writer.write(table, data)

    def _with_tokens(self, data: pa.Table, token_rows: list[int | None], prompt_ids: list[np.ndarray | None]) -> pa.Table:
        lengths = np.array([t or 0 for t in token_rows])
        ids = self.np_rng.integers(0, 32_000, int(lengths.sum()), dtype=np.int32)
        logprobs = -np.abs(self.np_rng.normal(0.0, 0.8, int(lengths.sum()))).astype(np.float32) - 1e-3
        plen = np.array([0 if p is None else len(p) for p in prompt_ids])
        pvalues = np.concatenate([p for p in prompt_ids if p is not None] or [np.zeros(0, np.int32)]).astype(np.int32)
        mask = pa.array([t is None for t in token_rows])
        columns = {"completion_token_ids": _lists(lengths, ids), "completion_logprobs": _lists(lengths, logprobs),
                   "prompt_token_ids": _lists(plen, pvalues)}
        for name, column in columns.items():
            column = pa.compute.if_else(mask, pa.nulls(len(column), column.type), column)
            data = data.set_column(data.schema.get_field_index(name), TRACES.field(name), column)
        return data


def _trace(pid: str, model: str, role: str, idx: int, text: str, n_tokens: int, sampling: dict, **extra) -> dict:
    shash = settings_hash(sampling)
    version = POLICY_VERSION if role == "policy" else None
    return dict(
        trace_id=trace_id(pid, model, role, idx, shash, version), prompt_id=pid, run_id=f"generate-{model}", role=role,
        model=model, model_path=f"/models/{model}", group_id=group_id(pid, model, shash, version) if role == "policy" else None,
        sample_idx=idx, policy_version=version, completion=text, num_tokens=n_tokens, finish_reason="stop",
        sampling=json.dumps(sampling, sort_keys=True), settings_hash=shash, backend="vllm", source="generated",
        source_correct=None, gen_seconds=n_tokens / 60.0, **extra,
    )


def _verdict(trace: dict, gold: str, correct: bool) -> dict:
    return dict(
        verdict_id=verdict_id(trace["trace_id"], VERIFIER_HASH), trace_id=trace["trace_id"], reward=float(correct),
        correct=correct, extracted_answer=gold if correct else "0", gold=gold, status="ok", verifier="math-verify",
        verifier_version="0.9.0", settings=json.dumps(VERIFIER, sort_keys=True), settings_hash=VERIFIER_HASH, seconds=0.01,
    )


def build_scale_store(root: str | Path, *, n_prompts: int, seed: int = 0) -> dict[str, int]:
    """Write the store (see the module docstring); returns the rows written per table."""
    b = _Builder(Path(root), seed)
    rng = b.rng
    problems = _problems(n_prompts, rng)
    prompt_rows = [sf._prompt_row(pb) for pb in problems]
    for row in prompt_rows:
        b.add("prompts", dict(row))
    b.flush("prompts")
    verdicts: list[dict] = []
    for model in TEACHERS:  # generate --teacher: one trace per prompt and teacher
        for pb, prow in zip(problems, prompt_rows):
            correct = rng.random() < 0.7
            text, _ = sf._teacher_text(pb, rng, "ok", correct)
            n = rng.randint(MEAN_TOKENS // 2, MEAN_TOKENS * 3 // 2)
            row = _trace(prow["prompt_id"], model, "teacher", 0, _padded(text, n, rng), n, TEACHER_SAMPLING)
            b.add("traces", row)
            verdicts.append(_verdict(row, pb.answer, correct))
        b.flush("traces")
    for pb, prow in zip(problems, prompt_rows):  # generate --policy: groups of k rollouts
        tier = rng.choice(("easy", "mid", "mid", "hard"))
        pattern = [tier == "easy"] * K if tier != "mid" else rng.sample([True, False] + [rng.random() < 0.4 for _ in range(K - 2)], K)
        prompt_ids = b.np_rng.integers(0, 32_000, rng.randint(60, 140), dtype=np.int32)
        for s, correct in enumerate(pattern):
            text, _ = sf._policy_text(pb, rng, correct, truncated=False)
            n = rng.randint(MEAN_TOKENS // 2, MEAN_TOKENS * 3 // 2)
            row = _trace(prow["prompt_id"], POLICY, "policy", s, _padded(text, n, rng), n, POLICY_SAMPLING)
            b.add("traces", {**row, "_tokens": n, "_prompt_ids": prompt_ids})
            verdicts.append(_verdict(row, pb.answer, correct))
    b.flush("traces")
    for v in verdicts:  # verify: every trace, in the order generate wrote them
        b.add("verdicts", v)
    b.flush("verdicts")
    return {"prompts": n_prompts, "traces": n_prompts * (len(TEACHERS) + K), "verdicts": len(verdicts)}
