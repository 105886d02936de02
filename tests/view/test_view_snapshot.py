"""The snapshot: same rows as the store's views, locked against file access, rebuilt when shards change."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from dypo_data.contracts.schemas import TRAIN_METRICS
from dypo_data.store import ShardWriter, connect
from dypo_data.store import view_queries as q
from dypo_data.view.snapshot import Snapshot


@pytest.mark.parametrize("view", ["prompts", "latest_verdicts", "groups", "train_samples", "eval_results"])
def test_copied_views_hold_the_same_rows(view_store, view):
    snap = Snapshot(view_store.root)
    snap.refresh()
    store_rows = connect(view_store.root).execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()
    copy_rows = snap._con.cursor().execute(f"SELECT * FROM snapshot.{view} ORDER BY ALL").fetchall()
    assert copy_rows == store_rows


def test_snapshot_cannot_touch_files(view_store, tmp_path):
    snap = Snapshot(view_store.root)
    snap.refresh()
    cursor = snap._con.cursor()
    with pytest.raises(duckdb.PermissionException):
        cursor.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    with pytest.raises(duckdb.PermissionException):
        cursor.execute(f"SELECT * FROM read_parquet('{view_store.root}/prompts/*.parquet')")
    with pytest.raises(duckdb.Error):
        cursor.execute("SET enable_external_access = true")
    assert not (tmp_path / "out.csv").exists()


def test_snapshot_rebuilds_when_a_shard_appears(tmp_path):
    from view_store_factory import build_view_store

    fs = build_view_store(tmp_path / "store", steps=2)
    snap = Snapshot(fs.root, recheck_s=0.0)
    assert [r["run_id"] for r in snap.run(q.RUNS).rows] == ["dypo-a", "dypo-b"]
    row = {"run_id": "dypo-c", "step": 1, "name": "loss/total", "value": 1.0, "created_at": None}
    ShardWriter(fs.root, "dypo-c").write("train_metrics", pa.Table.from_pylist([row], schema=TRAIN_METRICS))
    assert [r["run_id"] for r in snap.run(q.RUNS).rows] == ["dypo-a", "dypo-b", "dypo-c"]


def test_a_foreign_file_in_the_store_is_a_503_page_naming_it(tmp_path):
    from starlette.testclient import TestClient
    from view_store_factory import build_view_store

    from dypo_data.view.app import create_app

    fs = build_view_store(tmp_path / "store", steps=2)
    client = TestClient(create_app(fs.root, snapshot=Snapshot(fs.root, recheck_s=0.0)))
    assert client.get("/").status_code == 200
    (fs.root / "traces" / "part-foreign.parquet").write_bytes(b"not parquet")
    page = client.get("/")
    assert page.status_code == 503 and "part-foreign.parquet" in page.text
