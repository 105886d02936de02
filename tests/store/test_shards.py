"""The store's on-disk contract: atomic shards, schema checks, views, failures that keep data."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dypo_data.contracts import PROMPTS, TRACES, VERDICTS, prompt_id, trace_id
from dypo_data.errors import InputError, SchemaError, StoreError
from dypo_data.store import ShardWriter, check_writable, connect, open_store, read_table, shard_files

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def prompt_rows(n: int) -> pa.Table:
    rows = [
        dict(prompt_id=prompt_id("t", f"{i}+{i}"), source="t", split="train", problem=f"{i}+{i}", answer=str(2 * i),
             messages=[{"role": "user", "content": f"{i}+{i}"}], metadata="{}", origin="mem", created_at=NOW)
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=PROMPTS)


def trace_rows(pids: list[str], k: int, role: str = "policy", text: str = r"\boxed{0}") -> pa.Table:
    rows = [
        dict(trace_id=trace_id(p, "m", role, i, "h"), prompt_id=p, role=role, model="m", group_id=f"g-{p}",
             sample_idx=i, completion=text, num_tokens=3, created_at=NOW)
        for p in pids for i in range(k)
    ]
    return pa.Table.from_pylist(rows, schema=TRACES)


def verdict_rows(trace_ids: list[str], correct: list[bool | None], when: dt.datetime = NOW, shash: str = "v1") -> pa.Table:
    rows = [
        dict(verdict_id=f"{t}-{shash}", trace_id=t, reward=None if c is None else float(c), correct=c,
             status="ok" if c is not None else "timeout", verifier="math-verify", settings_hash=shash, created_at=when)
        for t, c in zip(trace_ids, correct)
    ]
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def test_write_is_atomic_and_readable_without_project_code(tmp_path):
    writer = ShardWriter(tmp_path, "run1")
    path = writer.write("prompts", prompt_rows(3))
    assert path.parent == tmp_path / "prompts" and path.name.startswith("part-run1-")
    assert not any(p.name.startswith(".tmp-") for p in path.parent.iterdir())
    # plain pyarrow, polars and duckdb read the shard
    assert pq.read_table(path).num_rows == 3
    assert pl.read_parquet(tmp_path / "prompts" / "*.parquet").height == 3
    import duckdb

    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/prompts/*.parquet'").fetchall()[0][0] == 3
    assert writer.write("prompts", prompt_rows(0)) is None


def test_leftover_temp_files_are_ignored(tmp_path):
    ShardWriter(tmp_path, "run1").write("prompts", prompt_rows(2))
    (tmp_path / "prompts" / ".tmp-part-killed.parquet.partial").write_bytes(b"half a file")
    assert read_table(tmp_path, "prompts").num_rows == 2
    import duckdb

    assert duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/prompts/*.parquet'").fetchall()[0][0] == 2


def test_foreign_parquet_file_is_named(tmp_path):
    ShardWriter(tmp_path, "run1").write("prompts", prompt_rows(2))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "prompts" / "foreign.parquet")
    with pytest.raises(SchemaError, match="foreign.parquet is not a dypo prompts shard"):
        read_table(tmp_path, "prompts")


def test_corrupt_parquet_file_is_named(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "part-x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SchemaError, match="part-x.parquet is not a readable Parquet file"):
        connect(tmp_path)


def test_shard_of_other_table_or_version_is_refused(tmp_path):
    path = ShardWriter(tmp_path, "run1").write("prompts", prompt_rows(1))
    shutil.copy(path, tmp_path / "prompts_copy.parquet")
    (tmp_path / "traces").mkdir()
    shutil.copy(path, tmp_path / "traces" / "part-wrong.parquet")
    with pytest.raises(SchemaError, match="not a dypo traces shard"):
        shard_files(tmp_path, "traces")
    old = prompt_rows(1).replace_schema_metadata({b"dypo.table": b"prompts", b"dypo.schema_version": b"0"})
    pq.write_table(old, tmp_path / "prompts" / "part-old.parquet")
    with pytest.raises(SchemaError, match="schema version 0, expected 1"):
        shard_files(tmp_path, "prompts")


def test_views_dedupe_and_grade_groups(tmp_path):
    writer = ShardWriter(tmp_path, "run1")
    prompts = prompt_rows(4)
    pids = prompts["prompt_id"].to_pylist()
    writer.write("prompts", prompts)
    traces = trace_rows(pids, 4)
    writer.write("traces", traces)
    writer.write("traces", traces.slice(0, 2))  # a duplicate shard must not double-count
    tids = traces["trace_id"].to_pylist()
    # group 0 all correct (easy), group 1 all wrong (hard), group 2 mixed (mid), group 3 unverified
    correct = [True] * 4 + [False] * 4 + [True, False, None, False]
    writer.write("verdicts", verdict_rows(tids[:12], correct))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM traces").fetchone()[0] == 16
    tiers = dict(con.execute("SELECT prompt_id, tier FROM groups").fetchall())
    assert [tiers[p] for p in pids] == ["easy", "hard", "mid", "unscored"]
    mid = con.execute("SELECT k, n_graded, n_correct FROM groups WHERE tier = 'mid'").fetchone()
    assert mid == (4, 3, 1)


def test_latest_verdict_wins_and_old_verdicts_stay(tmp_path):
    writer = ShardWriter(tmp_path, "run1")
    prompts = prompt_rows(1)
    writer.write("prompts", prompts)
    traces = trace_rows(prompts["prompt_id"].to_pylist(), 2, role="teacher")
    writer.write("traces", traces)
    tids = traces["trace_id"].to_pylist()
    writer.write("verdicts", verdict_rows(tids, [False, False], NOW, "v1"))
    writer.write("verdicts", verdict_rows(tids, [True, False], NOW + dt.timedelta(seconds=5), "v2"))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM teacher_pool").fetchone()[0] == 1
    assert con.execute("SELECT verifier_settings_hash FROM teacher_pool").fetchone()[0] == "v2"


def test_empty_store_has_every_view(tmp_path):
    con = connect(tmp_path)
    for view in ("prompts", "traces", "verdicts", "latest_verdicts", "scored_traces", "groups", "teacher_pool"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0


def test_missing_store_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_store(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        open_store(tmp_path / "file", must_exist=False)


@pytest.fixture
def small_mount(tmp_path):
    """A tiny tmpfs (root only) to fill or make read-only; skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(options: str):
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        return mnt

    yield mount
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:  # busy (a file still open): detach it
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_store_fails_early_and_keeps_data(tmp_path, small_mount):
    if os.geteuid() != 0:
        store = tmp_path / "ro"
        ShardWriter(store, "r").write("prompts", prompt_rows(2))
        os.chmod(store, 0o500)
    else:
        store = small_mount("size=4m")
        ShardWriter(store, "r").write("prompts", prompt_rows(2))
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
    with pytest.raises(StoreError, match="not writable"):
        check_writable(store)
    with pytest.raises(StoreError, match="not writable"):
        ShardWriter(store, "r2").write("prompts", prompt_rows(1))
    assert read_table(store, "prompts").num_rows == 2


def test_full_disk_leaves_no_partial_shard(small_mount):
    store = small_mount("size=64k")
    writer = ShardWriter(store, "r")
    writer.write("prompts", prompt_rows(1))
    big = pa.concat_tables([trace_rows([f"p{i}"], 1, text=os.urandom(1000).hex()) for i in range(200)])
    with pytest.raises(StoreError, match="disk is full"):
        writer.write("traces", big)
    assert list((store / "traces").iterdir()) == []
    assert read_table(store, "prompts").num_rows == 1
