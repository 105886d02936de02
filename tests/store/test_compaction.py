"""`dypo-data compact`: views unchanged, exact duplicates gone, safe under kill -9, readers and a second compaction."""

from __future__ import annotations

import datetime as dt
import gc
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dypo_data.jobs.compact import CompactConfig, run_compact
from dypo_data.store import ShardWriter, connect, shard_files
from dypo_data.store.catalog import compactions_dir
from dypo_data.store.lease import hold_lease
from tests.cli_run import DATA_CLI, assert_one_line_error, cli_env
from test_shards import NOW, prompt_rows, trace_rows, verdict_rows

ROOT = Path(__file__).resolve().parents[2]
KILLING = [sys.executable, str(Path(__file__).with_name("killing_compact.py"))]
VIEWS = ("prompts", "traces", "verdicts", "latest_verdicts", "scored_traces", "groups", "teacher_pool")
MERGED = ("traces", "verdicts")
SMALL = ["--target-mib", "0.02", "--row-group-rows", "16", "--table", "traces", "--table", "verdicts"]


def build(root: Path, n_shards: int = 12) -> Path:
    """Prompts, then traces and verdicts in `n_shards` small shards each, plus what resumed runs leave:
    a shard written twice (exact duplicates) and a trace written again later (a duplicate key, not an exact duplicate)."""
    writer = ShardWriter(root, "r")
    prompts = prompt_rows(2 * n_shards)
    writer.write("prompts", prompts)
    pids = prompts["prompt_id"].to_pylist()
    for i in range(n_shards):
        traces = trace_rows(pids[2 * i:2 * i + 2], 4, text=os.urandom(300).hex() + r"\boxed{0}")
        writer.write("traces", traces)
        tids = traces["trace_id"].to_pylist()
        writer.write("verdicts", verdict_rows(tids, [j % 3 == 0 for j in range(len(tids))]))
    writer.write("traces", traces)  # the last shard again
    later = trace_rows(pids[:1], 1, text="written again").set_column(
        TRACE_CREATED, "created_at", [[NOW + dt.timedelta(hours=1)]])
    writer.write("traces", later)
    return root


TRACE_CREATED = trace_rows(["p"], 1).schema.get_field_index("created_at")


def views_digest(root: Path) -> dict[str, tuple[int, int]]:
    """Rows of every view and an order-free digest of their full contents."""
    con = connect(root)
    try:
        return {v: tuple(con.execute(f"SELECT count(*), bit_xor(hash(x)) FROM {v} x").fetchall()[0]) for v in VIEWS}
    finally:
        con.close()


def listed_rows(root: Path) -> dict[str, int]:
    """Rows of the files a reader lists (duplicates included): what the views deduplicate."""
    con = connect(root)
    try:
        return {t: con.execute(f"SELECT count(*) FROM read_parquet(getvariable('dypo_shards_{t}'))").fetchall()[0][0]
                for t in MERGED}
    finally:
        con.close()


def distinct_rows(root: Path) -> dict[str, int]:
    con = connect(root)
    try:
        return {t: con.execute(f"SELECT count(*) FROM (SELECT DISTINCT * FROM read_parquet(getvariable('dypo_shards_{t}')))")
                .fetchall()[0][0] for t in MERGED}
    finally:
        con.close()


def compact(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DATA_CLI, "compact", "--store", str(root), *args], capture_output=True, text=True, env=cli_env(),
                          timeout=300)


def assert_fully_compacted(root: Path, before: dict, distinct: dict) -> None:
    assert views_digest(root) == before
    assert listed_rows(root) == distinct  # no duplicate left in the files read
    assert not [p for p in root.rglob(".tmp-*")]
    assert not list(compactions_dir(root).glob("*.json"))  # finished: nothing replaced is kept
    for table in MERGED:  # the files on disk are exactly the listed ones: a plain glob reads the same rows
        assert sorted((root / table).glob("*.parquet")) == shard_files(root, table)


def test_views_stay_the_same_and_exact_duplicates_go(tmp_path):
    root = build(tmp_path / "st")
    before, distinct = views_digest(root), distinct_rows(root)
    listed = listed_rows(root)
    assert listed["traces"] == distinct["traces"] + 8  # the shard written twice
    result = compact(root, *SMALL)
    assert result.returncode == 0, result.stderr
    assert "traces: 14 shards" in result.stdout
    assert_fully_compacted(root, before, distinct)
    assert len(shard_files(root, "traces")) >= 2  # parts of about the target size
    # the written-again trace is no exact duplicate: both rows stay, the view keeps the older one
    con = connect(root)
    assert con.execute("SELECT count(*) FROM read_parquet(getvariable('dypo_shards_traces')) WHERE completion = 'written again'").fetchone()[0] == 1
    con.close()
    # plain DuckDB and Polars read the compacted store with no project code
    assert duckdb.sql(f"SELECT count(*) FROM '{root}/traces/*.parquet'").fetchall()[0][0] == distinct["traces"]
    frame = pl.read_parquet(root / "traces" / "*.parquet")
    assert frame.height == distinct["traces"] and frame.schema["prompt_token_ids"] == pl.List(pl.Int32)
    again = compact(root, *SMALL)  # nothing small is left to merge
    assert again.returncode == 0 and "nothing to merge" in again.stdout
    assert views_digest(root) == before


@pytest.mark.parametrize("point", ["part:2", "replace:1", "replace:2", "replace:3", "unlink:1", "unlink:7"])
def test_a_kill_at_any_point_keeps_the_views_and_a_rerun_finishes(tmp_path, point):
    root = build(tmp_path / "st")
    before, distinct, listed = views_digest(root), distinct_rows(root), listed_rows(root)
    killed = subprocess.run([*KILLING, "--store", str(root), *SMALL], capture_output=True, text=True, timeout=300,
                            env=cli_env(DYPO_TEST_KILL_AT=point, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])))
    assert killed.returncode == -9, killed.stderr
    assert views_digest(root) == before  # what a reader sees right after the kill
    assert listed_rows(root)["traces"] in (listed["traces"], distinct["traces"])  # the old files or the new, never both
    rerun = compact(root, *SMALL)
    assert rerun.returncode == 0, rerun.stderr
    assert_fully_compacted(root, before, distinct)


def test_open_readers_keep_their_files_until_they_close(tmp_path):
    root = build(tmp_path / "st")
    before, distinct = views_digest(root), distinct_rows(root)
    reader = connect(root)  # listed the old shards
    old = shard_files(root, "traces") + shard_files(root, "verdicts")
    stats = run_compact(CompactConfig(store=str(root), tables=MERGED, target_mib=0.02, row_group_rows=16))
    assert stats.counts["replaced_shards_kept"] == len(old)
    assert all(p.exists() for p in old)  # kept for the open reader ...
    assert reader.execute("SELECT count(*), bit_xor(hash(x)) FROM traces x").fetchall()[0] == before["traces"]
    assert listed_rows(root) == distinct  # ... while a new reader lists the merged files only
    reader.close()
    del reader
    gc.collect()
    stats = run_compact(CompactConfig(store=str(root), tables=MERGED))  # nothing to merge; removes what was kept
    assert stats.counts["replaced_shards_kept"] == 0
    assert not any(p.exists() for p in old)
    assert_fully_compacted(root, before, distinct)


def test_readers_during_a_compaction_see_the_old_or_the_new_files(tmp_path):
    root = build(tmp_path / "st", n_shards=150)
    before, distinct, listed = views_digest(root), distinct_rows(root), listed_rows(root)
    proc = subprocess.Popen([*DATA_CLI, "compact", "--store", str(root), *SMALL], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:
        seen.append(listed_rows(root)["traces"])
        assert views_digest(root) == before
    assert proc.returncode == 0, proc.stderr.read()
    assert seen and set(seen) <= {listed["traces"], distinct["traces"]}
    assert listed_rows(root) == distinct
    assert compact(root).returncode == 0  # removes what was kept for the readers above
    assert_fully_compacted(root, before, distinct)


def test_a_second_compaction_is_refused_while_one_runs(tmp_path):
    root = build(tmp_path / "st", n_shards=2)
    with hold_lease(root, "compact", "compaction of the store"):  # a record lock: another process finds it held
        result = compact(root)
    assert result.returncode == 75
    assert_one_line_error(result, "compaction of the store is already running")


def view_sql(root: Path, view: str) -> str:
    con = connect(root)
    try:
        return con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [view]).fetchall()[0][0]
    finally:
        con.close()


def test_tables_with_unique_keys_skip_deduplication_until_a_shard_changes_that(tmp_path):
    root = build(tmp_path / "st")
    before = views_digest(root)
    assert "row_number" in view_sql(root, "verdicts")
    stats = run_compact(CompactConfig(store=str(root), target_mib=0.02, row_group_rows=16))
    assert stats.counts["tables_with_unique_keys"] == 2  # prompts and verdicts; traces holds a key written twice
    assert "row_number" not in view_sql(root, "verdicts") and "row_number" in view_sql(root, "traces")
    assert views_digest(root) == before
    # a resumed verify writes some verdicts again (later): the view deduplicates again at once
    con = connect(root)
    again = con.execute("SELECT * FROM verdicts LIMIT 3").to_arrow_table()
    con.close()
    ShardWriter(root, "again").write("verdicts", again.set_column(again.schema.get_field_index("created_at"), "created_at",
                                                                   [[NOW + dt.timedelta(days=1)] * 3]))
    assert "row_number" in view_sql(root, "verdicts")
    assert views_digest(root) == before
