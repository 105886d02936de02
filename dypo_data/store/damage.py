"""Damaged shards: a Parquet file whose footer reads but whose data pages do not.

Opening a store checks each shard's footer (table tag, version, columns); damage inside a data page
only shows when a query reads that page, as an error from DuckDB or pyarrow that names no file.
`naming_damaged_shards(root)` turns such an error into a `SchemaError` naming the damaged file: it
reads every shard of the store once with both readers (only on the error path) to find it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dypo_data.contracts.schemas import TABLES
from dypo_data.store.shards import damaged_shard_error, shard_files

READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError)


def shard_read_error(path: Path) -> str | None:
    """Why `path` cannot be read in full (DuckDB, then pyarrow), or None when both read every page."""
    con = duckdb.connect()
    try:
        result = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        batches = result.to_arrow_reader() if hasattr(result, "to_arrow_reader") else result.fetch_record_batch()
        for _ in batches:  # DuckDB 2 has to_arrow_reader, older releases fetch_record_batch
            pass
    except duckdb.Error as exc:
        return str(exc).strip().splitlines()[0] or type(exc).__name__
    finally:
        con.close()
    try:
        for _ in pq.ParquetFile(path).iter_batches():
            pass
    except (pa.ArrowException, OSError) as exc:
        return str(exc).strip().splitlines()[0] or type(exc).__name__
    return None


def find_damaged_shard(root: Path) -> tuple[Path, str] | None:
    """The first shard of the store whose data cannot be read, with the reader's reason."""
    for table in TABLES:
        for path in shard_files(root, table):
            reason = shard_read_error(path)
            if reason is not None:
                return path, reason
    return None


@contextlib.contextmanager
def naming_damaged_shards(root: Path) -> Iterator[None]:
    """Re-raise a read error of a store query as a SchemaError naming the damaged shard, if one is."""
    try:
        yield
    except READ_ERRORS as exc:
        damaged = find_damaged_shard(root)
        if damaged is None:
            raise
        raise damaged_shard_error(*damaged) from exc


@contextlib.contextmanager
def reading(root: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the store's views (see views.py), closed on exit; read errors name the damaged shard."""
    from dypo_data.store.views import connect

    con = connect(root)
    try:
        with naming_damaged_shards(root):
            yield con
    finally:
        con.close()
