"""A shard whose footer is valid but whose data pages are damaged: every command that reads it
(verify, stats, export, sql, dypo-train) names the file and the fix in one line and exits non-zero,
and moving the file out (the fix) makes the store readable again."""

from __future__ import annotations

import shutil

import pytest

from cli_run import assert_one_line_error, run
from parquet_damage import damage_column
from store_factory import build_store


@pytest.fixture
def damaged(tmp_path):
    """The factory store with the teacher traces shard's `completion` pages damaged."""
    store = build_store(tmp_path / "st")
    shard = next(p for p in (store.root / "traces").glob("*.parquet") if "teach" in p.name)
    damage_column(shard, "completion")
    return store, shard


@pytest.mark.parametrize("command", [
    ["verify", "--workers", "1"],
    ["stats"],
    ["export", "--kind", "sft", "--out", "{tmp}/sft"],
    ["sql", "SELECT * FROM traces"],
    ["sql", "SELECT count(*), max(length(completion)) FROM scored_traces"],
])
def test_every_data_command_names_the_damaged_shard(damaged, tmp_path, command):
    store, shard = damaged
    args = [a.format(tmp=tmp_path) for a in command]
    r = run(*args[:1], "--store", str(store.root), *args[1:])
    assert_one_line_error(r, str(shard), "damaged", "move it out of the store")


def test_moving_the_damaged_shard_out_is_the_fix(damaged, tmp_path):
    store, shard = damaged
    shutil.move(shard, tmp_path / shard.name)
    assert run("stats", "--store", str(store.root)).returncode == 0


def test_dypo_train_names_the_damaged_shard(tmp_path, tiny_model_dir):
    from train_runs import cli, make_store, overrides, sets_args
    from train_runs import assert_one_line_error as assert_train_error

    store = make_store(tmp_path / "train-store", tiny_model_dir)
    shard = next((store.root / "traces").glob("*.parquet"))
    damage_column(shard, "completion")
    r = cli("run", *sets_args(overrides(store.root, tiny_model_dir, tmp_path / "out", "r", "run.max_steps=1")))
    assert_train_error(r, str(shard), "damaged")
    assert not list((tmp_path / "out").glob("*/checkpoints"))


@pytest.mark.parametrize("command", [["verify", "--workers", "1"], ["stats"], ["sql", "SELECT count(*) FROM traces"],
                                     ["export", "--kind", "sft", "--out", "{tmp}/sft"]])
def test_shard_with_the_table_tag_but_other_columns_is_refused(tmp_path, command):
    """Tagged as traces, with the traces schema's metadata, but the columns of another table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dypo_data.contracts import TRACES

    store = build_store(tmp_path / "st")
    impostor = store.root / "traces" / "part-impostor.parquet"
    pq.write_table(pa.table({"trace_id": ["x"], "score": [1.0]}).replace_schema_metadata(TRACES.metadata), impostor)
    args = [a.format(tmp=tmp_path) for a in command]
    r = run(*args[:1], "--store", str(store.root), *args[1:])
    assert_one_line_error(r, str(impostor), "columns differ", "missing prompt_id", "unknown score", "move it out")
