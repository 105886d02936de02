"""A store of many short traces for durability tests: grading them takes seconds, not milliseconds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from dypo_data.contracts import PROMPTS, TRACES, prompt_id, trace_id
from dypo_data.store import ShardWriter

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def build_many_traces(root: Path, *, prompts: int, per_prompt: int) -> int:
    """`prompts` sums with `per_prompt` answers each (every other one wrong); returns the number of traces."""
    prompt_rows, trace_rows = [], []
    for i in range(prompts):
        problem = f"What is {i} + {i + 1}?"
        pid = prompt_id("sums", problem)
        prompt_rows.append(dict(prompt_id=pid, source="sums", split="train", problem=problem, answer=str(2 * i + 1),
                                messages=[{"role": "user", "content": problem}], metadata="{}", origin="test",
                                created_at=T0))
        for s in range(per_prompt):
            answer = 2 * i + 1 + (s % 2)
            trace_rows.append(dict(trace_id=trace_id(pid, "m", "teacher", s, "h"), prompt_id=pid, role="teacher", model="m",
                                   sample_idx=s, completion=f"{i} + {i + 1} = {answer}, so the answer is $\\boxed{{{answer}}}$.",
                                   num_tokens=12, created_at=T0))
    writer = ShardWriter(root, "many")
    writer.write("prompts", pa.Table.from_pylist(prompt_rows, schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(trace_rows, schema=TRACES))
    return len(trace_rows)
