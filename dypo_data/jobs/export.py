"""`dypo-data export`: the store as datasets TRL trains on.

- sft:  the verified teacher pool in the conversational `messages` format (TRL SFTTrainer).
- pairs: (success, failure) pairs from mixed rollout groups in the conversational preference format
         `prompt` / `chosen` / `rejected` (TRL DPOTrainer).

Each export is a Hugging Face dataset saved with `save_to_disk` (plus a JSONL copy), written to a
temporary directory and renamed into place.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dypo_data.errors import ConfigError, InputError
from dypo_data.store import open_store, reading
from dypo_data.store.queries import fetch_arrow

SFT_QUERY = """
    SELECT tp.trace_id, tp.prompt_id, tp.model, tp.prompt_source AS source, p.messages, tp.completion
    FROM teacher_pool tp JOIN prompts p USING (prompt_id)
    ORDER BY tp.prompt_id, tp.model, tp.sample_idx
"""

PAIR_CANDIDATES = """
    SELECT st.group_id, st.prompt_id, st.trace_id, st.model, st.sample_idx, st.completion, st.correct, p.messages
    FROM scored_traces st JOIN prompts p USING (prompt_id)
    JOIN groups g USING (group_id)
    WHERE st.role = 'policy' AND g.tier = 'mid' AND st.correct IS NOT NULL
    ORDER BY st.group_id, st.sample_idx
"""


EXPORT_FILES = ("state.json", "data.jsonl")  # written by `save_to_disk` and by this job: marks an export


@dataclass(frozen=True)
class ExportConfig:
    store: str = field(metadata={"help": "Store directory to export from."})
    out: str = field(metadata={"help": "Output directory of the dataset."})
    kind: Literal["sft", "pairs"] = field(default="sft", metadata={"help": "sft: teacher pool; pairs: preference pairs."})
    max_pairs_per_group: int = field(default=4, metadata={"help": "Cap on (success, failure) pairs per group."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if self.kind not in ("sft", "pairs"):
            raise ConfigError(f"export kind {self.kind!r} is unknown", "use sft or pairs")
        if self.max_pairs_per_group < 1:
            raise ConfigError(f"max_pairs_per_group={self.max_pairs_per_group} must be >= 1", "use e.g. 4")


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def sft_records(rows: list[dict]) -> list[dict]:
    return [
        {
            "messages": [*r["messages"], _assistant(r["completion"])],
            "prompt_id": r["prompt_id"],
            "trace_id": r["trace_id"],
            "teacher": r["model"],
            "source": r["source"],
        }
        for r in rows
    ]


def spread_pairs(n_good: int, n_bad: int) -> Iterator[tuple[int, int]]:
    """Every (good, bad) index pair once, ordered so that the first pairs use as many distinct
    samples as possible: (0,0), (1,1), ... then the next diagonal (0,1), (1,2), ..."""
    for offset in range(n_bad):
        for i in range(n_good):
            yield i, (i + offset) % n_bad


def pair_records(rows: list[dict], max_pairs_per_group: int) -> list[dict]:
    """(correct, incorrect) pairs of each group, at most `max_pairs_per_group`, spread over its samples."""
    records = []
    for gid, members in itertools.groupby(rows, key=lambda r: r["group_id"]):
        members = list(members)
        good = [m for m in members if m["correct"]]
        bad = [m for m in members if not m["correct"]]
        for i, j in itertools.islice(spread_pairs(len(good), len(bad)), max_pairs_per_group):
            s, f = good[i], bad[j]
            records.append(
                {
                    "prompt": s["messages"],
                    "chosen": [_assistant(s["completion"])],
                    "rejected": [_assistant(f["completion"])],
                    "group_id": gid,
                    "prompt_id": s["prompt_id"],
                    "chosen_trace_id": s["trace_id"],
                    "rejected_trace_id": f["trace_id"],
                    "model": s["model"],
                }
            )
    return records


def run_export(cfg: ExportConfig) -> int:
    """Write the dataset; returns the number of records."""
    import datasets  # heavy, and only this command needs it

    root = open_store(cfg.store)
    out = Path(cfg.out).expanduser()
    if out.exists() and not cfg.overwrite:
        raise InputError(f"output {out} already exists", "pass --overwrite or choose another --out")
    if out.exists() and not all((out / name).is_file() for name in EXPORT_FILES):
        # --overwrite deletes the old output: never a file, the store or any directory that is not an export
        raise InputError(
            f"output {out} exists and is not a `dypo-data export` dataset, so it is not replaced", "choose another --out"
        )
    with reading(root) as con:
        rows = fetch_arrow(con, SFT_QUERY if cfg.kind == "sft" else PAIR_CANDIDATES).to_pylist()
    records = sft_records(rows) if cfg.kind == "sft" else pair_records(rows, cfg.max_pairs_per_group)
    if not records:
        what = "verified-correct teacher traces" if cfg.kind == "sft" else "mixed (mid-tier) rollout groups"
        raise InputError(f"store {root} has no {what} to export", "run `dypo-data generate` and `dypo-data verify` first")
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_list(records).save_to_disk(str(tmp))
    with open(tmp / "data.jsonl", "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return len(records)
