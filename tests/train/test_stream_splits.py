"""Online prompt units come from the training split only: benchmark problems stored by eval never train."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dypo_data.contracts import PROMPTS, prompt_id
from dypo_data.errors import InputError
from dypo_data.store import ShardWriter
from dypo_train.stream.reader import StoreStream

from tests.train.train_store import T0


def _write_prompts(root, splits: dict[str, list[str]]) -> dict[str, list[str]]:
    rows, ids = [], {}
    for split, problems in splits.items():
        for problem in problems:
            pid = prompt_id(split, problem)
            ids.setdefault(split, []).append(pid)
            rows.append(dict(prompt_id=pid, source=split, split=split, problem=problem, answer="1",
                             messages=[{"role": "user", "content": problem}], metadata=None, origin="test", created_at=T0))
    ShardWriter(root, "prompts-run").write("prompts", pa.Table.from_pylist(rows, schema=PROMPTS))
    return ids


def test_online_prompts_skip_other_splits(tmp_path):
    ids = _write_prompts(tmp_path, {"train": ["1+0?", "2-1?", "3-2?"], "test": ["AIME 1", "AIME 2"]})
    stream = StoreStream(tmp_path, unit_kind="prompt", prompt_split="train")
    try:
        assert sorted(stream.plan.units) == sorted(ids["train"])
    finally:
        stream.close()
    every = StoreStream(tmp_path, unit_kind="prompt", prompt_split="")
    try:
        assert sorted(every.plan.units) == sorted(ids["train"] + ids["test"])
    finally:
        every.close()


def test_a_store_with_only_benchmark_prompts_says_which_split_is_missing(tmp_path):
    _write_prompts(tmp_path, {"test": ["AIME 1"]})
    with pytest.raises(InputError, match="no prompts of split 'train'") as err:
        StoreStream(tmp_path, unit_kind="prompt", prompt_split="train")
    assert "data.prompt_split" in err.value.hint
