"""Builders of small prompt files in the published layouts (LUFFY/verl, DYPO two-teacher, OpenR1, saved HF datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1] / "data"
BENCHMARKS = Path("/work/shared/benchmarks")
if not BENCHMARKS.exists():
    BENCHMARKS = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"

MESSAGE = pa.struct([("content", pa.string()), ("role", pa.string())])
MULTI_MESSAGE = pa.struct([("content", pa.list_(pa.string())), ("role", pa.string())])

SYSTEM = "Your task is to solve math problems. Think step by step, then give the final answer in \\boxed{}."
PROBLEMS = [
    ("Let $f(x) = 2x + 3$. Find $f(4)$.", "11"),
    ("What is the sum of the first $10$ positive odd numbers?", "100"),
    ("Simplify $\\frac{6}{8}$.", "\\frac{3}{4}"),
]


def trace(answer: str, teacher: str = "") -> str:
    return f"<think>\nLet me work it out{teacher}.\n</think>\nThe answer is $\\boxed{{{answer}}}$."


def _verl_schema(target_message: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(MESSAGE)),
        ("target", pa.list_(target_message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string())])),
    ])


def _verl_row(i: int, problem: str, answer: str, content) -> dict:
    return {
        "data_source": "openr1",
        "prompt": [{"content": SYSTEM, "role": "system"}, {"content": problem, "role": "user"}],
        "target": [{"content": content, "role": "assistant"}],
        "ability": "math",
        "reward_model": {"ground_truth": answer, "style": "rule"},
        "extra_info": {"index": i, "split": "default"},
    }


def luffy_parquet(directory: Path) -> Path:
    """LUFFY's openr1.parquet layout: chat prompt, one teacher trace in `target`, nested reward_model."""
    rows = [_verl_row(i, p, a, trace(a)) for i, (p, a) in enumerate(PROBLEMS)]
    path = directory / "openr1.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=_verl_schema(MESSAGE)), path)
    return path


def dypo_parquet(directory: Path) -> Path:
    """DYPO's fork: target[0]['content'] is a list with one trace per teacher."""
    rows = [_verl_row(i, p, a, [trace(a, " (teacher A)"), trace(a, " (teacher B)")]) for i, (p, a) in enumerate(PROBLEMS)]
    path = directory / "dypo_train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=_verl_schema(MULTI_MESSAGE)), path)
    return path


OPENR1_SCHEMA = pa.schema([
    ("problem", pa.string()),
    ("solution", pa.string()),
    ("answer", pa.string()),
    ("problem_type", pa.string()),
    ("question_type", pa.string()),
    ("source", pa.string()),
    ("uuid", pa.string()),
    ("is_reasoning_complete", pa.list_(pa.bool_())),
    ("generations", pa.list_(pa.string())),
    ("correctness_math_verify", pa.list_(pa.bool_())),
    ("correctness_llama", pa.list_(pa.bool_())),
    ("finish_reasons", pa.list_(pa.string())),
    ("correctness_count", pa.int64()),
    ("messages", pa.list_(MESSAGE)),
])


def openr1_parquet(directory: Path) -> Path:
    """OpenR1-Math-220k layout: generations with math-verify flags; `messages` repeats one generation."""
    rows = []
    for i, (p, a) in enumerate(PROBLEMS):
        gens = [trace(a), trace("0")]
        rows.append({
            "problem": p, "solution": f"Worked solution: {a}.", "answer": a, "problem_type": "Algebra",
            "question_type": "math-word-problem", "source": "olympiads", "uuid": f"uuid-{i}",
            "is_reasoning_complete": [True, True], "generations": gens, "correctness_math_verify": [True, False],
            "correctness_llama": None, "finish_reasons": None if i else ["stop", "length"], "correctness_count": 1,
            "messages": [{"content": p, "role": "user"}, {"content": gens[0], "role": "assistant"}],
        })
    path = directory / "openr1_default.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=OPENR1_SCHEMA), path)
    return path


def hf_dataset_dir(directory: Path) -> Path:
    """A `Dataset.save_to_disk` directory with problem/answer columns."""
    from datasets import Dataset

    path = directory / "hf_problems"
    Dataset.from_list([{"problem": p, "answer": a, "level": "Level 1"} for p, a in PROBLEMS]).save_to_disk(str(path))
    return path


def hf_dataset_dict_dir(directory: Path) -> Path:
    """A `DatasetDict.save_to_disk` directory (GSM8K-like question/answer) with train and test splits."""
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in (DATA / "gsm8k_sample.jsonl").read_text().splitlines()]
    path = directory / "gsm8k_like"
    DatasetDict({"train": Dataset.from_list(rows[:3]), "test": Dataset.from_list(rows[3:])}).save_to_disk(str(path))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
