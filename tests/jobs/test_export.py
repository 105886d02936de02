"""`run_export` on a factory store: the SFT teacher pool and the mid-group preference pairs hold exactly
what the factory's ground truth says, outputs are never replaced by accident, and TRL's own trainers
(SFTTrainer, DPOTrainer) take the exported datasets as they are."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pyarrow as pa
import pytest

from dypo_data.contracts import PROMPTS, TRACES, VERDICTS
from dypo_data.errors import ConfigError, InputError
from dypo_data.jobs.export import ExportConfig, run_export
from dypo_data.store import ShardWriter
from store_factory import REVERIFIED, TEACHERS, FactoryStore, build_store


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FactoryStore:
    return build_store(tmp_path_factory.mktemp("export") / "store", seed=3)


def export(fs: FactoryStore, out: Path, **kw) -> tuple[int, datasets.Dataset]:
    n = run_export(ExportConfig(store=str(fs.root), out=str(out), **kw))
    return n, datasets.load_from_disk(str(out))


def jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- sft ------------------------------------------------------------------------------------------


def test_sft_is_exactly_the_verified_teacher_pool(fs, tmp_path):
    n, ds = export(fs, tmp_path / "sft", kind="sft")
    assert n == len(ds) == len(fs.teacher_pool) > 0
    assert set(ds["trace_id"]) == fs.teacher_pool  # correct latest verdicts only: no wrong, ungradable or policy traces
    traces = {t["trace_id"]: t for t in fs.traces}
    for rec in ds:
        trace = traces[rec["trace_id"]]
        prompt = fs.prompt(trace["prompt_id"])
        assert trace["role"] == "teacher" and rec["teacher"] == trace["model"] in TEACHERS
        assert rec["prompt_id"] == prompt["prompt_id"] and rec["source"] == prompt["source"]
        assert rec["messages"] == [*prompt["messages"], assistant(trace["completion"])]
    assert {rec["teacher"] for rec in ds} == set(TEACHERS)  # multi-teacher pool
    assert jsonl(tmp_path / "sft") == ds.to_list()


def test_sft_follows_the_latest_verdict(fs, tmp_path):
    """A trace first verified as a timeout and later re-verified as correct is a target."""
    i, t, s = REVERIFIED
    trace = [x for x in fs.traces if x["role"] == "teacher" and x["model"] == TEACHERS[t]
             and x["prompt_id"] == fs.prompts[i]["prompt_id"] and x["sample_idx"] == s][0]
    assert sorted(v["status"] for v in fs.verdicts if v["trace_id"] == trace["trace_id"]) == ["ok", "timeout"]
    _, ds = export(fs, tmp_path / "sft", kind="sft")
    assert trace["trace_id"] in set(ds["trace_id"])


# --- pairs ----------------------------------------------------------------------------------------


def graded_completions(fs: FactoryStore, gid: str) -> tuple[list[str], list[str]]:
    """(correct, wrong) completions of a group by their latest verdicts; ungradable rollouts in neither."""
    good, bad = [], []
    for trace in fs.group_traces(gid):
        verdict = fs.latest.get(trace["trace_id"])
        if verdict is not None and verdict["correct"] is not None:
            (good if verdict["correct"] else bad).append(trace["completion"])
    return good, bad


@pytest.mark.parametrize("cap", [1, 4, 100])
def test_pairs_come_from_mid_groups_only_and_respect_the_cap(fs, tmp_path, cap):
    n, ds = export(fs, tmp_path / "pairs", kind="pairs", max_pairs_per_group=cap)
    mid = fs.groups_of("mid")
    assert n == len(ds) and set(ds["group_id"]) == set(mid)
    per_group = {gid: 0 for gid in mid}
    for rec in ds:
        gid = rec["group_id"]
        per_group[gid] += 1
        good, bad = graded_completions(fs, gid)
        prompt = fs.prompt(fs.group_traces(gid)[0]["prompt_id"])
        assert rec["prompt"] == prompt["messages"] and rec["prompt_id"] == prompt["prompt_id"]
        assert rec["chosen"][0]["role"] == rec["rejected"][0]["role"] == "assistant"
        assert rec["chosen"][0]["content"] in good
        assert rec["rejected"][0]["content"] in bad
    for gid, count in per_group.items():
        good, bad = graded_completions(fs, gid)
        assert count == min(cap, len(good) * len(bad)), gid  # the timeout rollout is in no pair
    assert jsonl(tmp_path / "pairs") == ds.to_list()


def test_pairs_need_a_mid_group(fs, tmp_path):
    """The same store without its mid groups (only easy, hard and unscored) has nothing to pair."""
    mid = set(fs.groups_of("mid"))
    traces = [t for t in fs.traces if t["role"] == "teacher" or t["group_id"] not in mid]
    kept = {t["trace_id"] for t in traces}
    root = tmp_path / "no_mid"
    writer = ShardWriter(root, "copy")
    writer.write("prompts", pa.Table.from_pylist(fs.prompts, schema=PROMPTS))
    writer.write("traces", pa.Table.from_pylist(traces, schema=TRACES))
    writer.write("verdicts", pa.Table.from_pylist([v for v in fs.verdicts if v["trace_id"] in kept], schema=VERDICTS))
    with pytest.raises(InputError, match="mid-tier"):
        run_export(ExportConfig(store=str(root), out=str(tmp_path / "pairs"), kind="pairs"))
    assert run_export(ExportConfig(store=str(root), out=str(tmp_path / "sft"), kind="sft")) == len(fs.teacher_pool)


# --- outputs and errors ---------------------------------------------------------------------------


def test_refuses_to_overwrite_without_the_flag(fs, tmp_path):
    out = tmp_path / "ds"
    n_sft, _ = export(fs, out, kind="sft")
    with pytest.raises(InputError, match="already exists"):
        run_export(ExportConfig(store=str(fs.root), out=str(out), kind="pairs"))
    assert len(datasets.load_from_disk(str(out))) == n_sft  # untouched
    n_pairs, ds = export(fs, out, kind="pairs", overwrite=True)
    assert len(ds) == n_pairs and "chosen" in ds.column_names and "messages" not in ds.column_names
    assert len(jsonl(out)) == n_pairs
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary directory left behind


@pytest.mark.parametrize("victim", ["file", "store", "dir"])
def test_overwrite_only_replaces_a_previous_export(fs, tmp_path, victim):
    """--overwrite deletes the old output, so it must never delete a file, the store or a foreign directory."""
    target = {"file": tmp_path / "notes.txt", "store": fs.root, "dir": tmp_path / "mine"}[victim]
    if victim == "file":
        target.write_text("keep me")
    elif victim == "dir":
        target.mkdir()
        (target / "keep.txt").write_text("keep me")
    before = sorted(p.relative_to(target) for p in target.rglob("*")) if target.is_dir() else target.read_text()
    with pytest.raises(InputError, match="not a `dypo-data export`"):
        run_export(ExportConfig(store=str(fs.root), out=str(target), kind="sft", overwrite=True))
    after = sorted(p.relative_to(target) for p in target.rglob("*")) if target.is_dir() else target.read_text()
    assert after == before


@pytest.mark.parametrize("kind, fragment", [("sft", "verified-correct teacher traces"), ("pairs", "mid-tier")])
def test_empty_store_is_an_input_error(tmp_path, kind, fragment):
    store = tmp_path / "empty"
    store.mkdir()
    with pytest.raises(InputError, match=fragment):
        run_export(ExportConfig(store=str(store), out=str(tmp_path / "out"), kind=kind))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written


def test_missing_store_and_bad_config(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_export(ExportConfig(store=str(tmp_path / "nope"), out=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="sft or pairs"):
        ExportConfig(store="s", out="o", kind="dpo")
    with pytest.raises(ConfigError, match="max_pairs_per_group"):
        ExportConfig(store="s", out="o", kind="pairs", max_pairs_per_group=0)


# --- TRL takes the exports as they are ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with a character-level tokenizer and a ChatML chat template."""
    from transformers import AutoTokenizer

    from dypo_data.models.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    return path, AutoTokenizer.from_pretrained(path)


def trl_args(config_cls, out: Path, **kw):
    return config_cls(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-4, use_cpu=True,
        report_to=[], logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True, **kw,
    )


def test_trl_sft_trainer_trains_on_the_sft_export(fs, tmp_path, tiny):
    trl = pytest.importorskip("trl")
    model_dir, tokenizer = tiny
    _, ds = export(fs, tmp_path / "sft", kind="sft")
    trainer = trl.SFTTrainer(model=str(model_dir), args=trl_args(trl.SFTConfig, tmp_path / "run", max_length=256),
                             train_dataset=ds, processing_class=tokenizer)
    # TRL saw a conversational dataset and applied the chat template to prompt + assistant turn
    text = tokenizer.decode(trainer.train_dataset[0]["input_ids"])
    assert text.startswith("<|im_start|>user\n" + ds[0]["messages"][0]["content"][:40])
    result = trainer.train()
    assert trainer.state.global_step == 1
    assert math.isfinite(result.training_loss) and result.training_loss > 0


def test_trl_dpo_trainer_trains_on_the_pairs_export(fs, tmp_path, tiny):
    trl = pytest.importorskip("trl")
    model_dir, tokenizer = tiny
    _, ds = export(fs, tmp_path / "pairs", kind="pairs", max_pairs_per_group=1)
    trainer = trl.DPOTrainer(model=str(model_dir), args=trl_args(trl.DPOConfig, tmp_path / "run", max_length=384),
                             train_dataset=ds, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(ds)  # no pair dropped as too long or malformed
    result = trainer.train()
    assert trainer.state.global_step == 1
    # First step: the policy still equals its reference copy, so every pair's margin is 0 and the loss is log 2.
    assert result.training_loss == pytest.approx(math.log(2), abs=1e-4)
