"""`dypo-data sql` through the real CLI: one read-only SELECT; writes, other files and `--out` into a
store are refused with one line, and nothing a query does changes the store."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from cli_run import assert_one_line_error, run
from store_factory import build_store


def store_digest(root) -> dict[str, str]:
    """Every file of the store with a hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "st")


def count(store_root, sql: str) -> int:
    r = run("sql", "--store", str(store_root), "--json", sql)
    assert r.returncode == 0, r.stderr
    return next(iter(json.loads(r.stdout.splitlines()[0]).values()))


@pytest.mark.parametrize("statement, refused", [
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE TEMP TABLE t AS SELECT 1", "CREATE"),
    ("DROP VIEW traces", "DROP"),
    ("ATTACH ':memory:' AS scratch", "ATTACH"),
    ("SET threads = 1", "SET"),
    ("INSTALL httpfs", "LOAD"),  # DuckDB classes INSTALL with LOAD
    ("COPY (SELECT * FROM traces) TO '{root}/traces/part-copy.parquet'", "COPY"),
    ("COPY (SELECT 1 AS a) TO '{shard}' (FORMAT parquet, USE_TMP_FILE false)", "COPY"),
    ("EXPORT DATABASE '{root}/dump'", "EXPORT"),
    ("SELECT 1; DROP VIEW traces", "2 statements"),
])
def test_writes_are_refused_and_change_nothing(store, statement, refused):
    before = store_digest(store.root)
    raw_traces = count(store.root, "SELECT count(*) FROM traces")
    shard = sorted((store.root / "traces").glob("*.parquet"))[0]
    r = run("sql", "--store", str(store.root), statement.format(root=store.root, shard=shard))
    assert_one_line_error(r, refused)
    assert store_digest(store.root) == before
    assert count(store.root, "SELECT count(*) FROM traces") == raw_traces == len(store.traces)


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{outside}')",
])
def test_files_outside_the_store_are_refused(store, tmp_path, statement):
    outside = tmp_path / "outside.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), outside)
    r = run("sql", "--store", str(store.root), statement.format(outside=outside))
    assert_one_line_error(r, "refused", "disabled by configuration")


def test_selects_and_describes_still_work(store, tmp_path):
    assert count(store.root, "SELECT count(*) FROM teacher_pool") == len(store.teacher_pool)
    r = run("sql", "--store", str(store.root), "--json", "DESCRIBE traces")
    assert r.returncode == 0 and "completion_token_ids" in r.stdout, r.stderr


def test_out_inside_a_store_is_refused(store, tmp_path):
    before = store_digest(store.root)
    for out in (store.root / "traces" / "part-x.parquet", store.root / "result.csv"):
        r = run("sql", "--store", str(store.root), "SELECT * FROM traces", "--out", str(out))
        assert_one_line_error(r, str(out), "inside the store")
    other = build_store(tmp_path / "other", seed=1)  # nor into another store
    r = run("sql", "--store", str(store.root), "SELECT 1 AS a", "--out", str(other.root / "prompts" / "x.parquet"))
    assert_one_line_error(r, "inside the store")
    assert store_digest(store.root) == before


def test_csv_out_writes_list_columns_as_json_text(store, tmp_path):
    out = tmp_path / "rollouts.csv"
    r = run("sql", "--store", str(store.root), "--out", str(out),
            "SELECT trace_id, completion_token_ids, completion_logprobs FROM traces WHERE role = 'policy' ORDER BY trace_id")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    expected = {t["trace_id"]: t for t in store.traces if t["role"] == "policy"}
    assert len(rows) == len(expected)
    for row in rows:
        assert json.loads(row["completion_token_ids"]) == expected[row["trace_id"]]["completion_token_ids"]
        assert json.loads(row["completion_logprobs"]) == pytest.approx(expected[row["trace_id"]]["completion_logprobs"], rel=1e-6)
