"""`dypo-data sql` and `dypo-data stats`: read-only questions to a store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dypo_data.errors import InputError
from dypo_data.store import VIEW_NAMES, naming_damaged_shards, open_store, queries, reading, store_containing
from dypo_data.store.readonly import READ_ONLY_HINT, check_read_only_query, read_only_connection
from dypo_data.store.summary import summary_views

# Errors of the query itself (not of the data it reads): shown as they are.
_QUERY_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)


def run_sql(store: str, query: str) -> pa.Table:
    """Run one read-only query against the store's views (see store/readonly.py).

    A write, a second statement or a file outside the store is refused; SQL errors become an
    InputError naming the query's problem, and a damaged shard a SchemaError naming the file.
    """
    root = open_store(store)
    with read_only_connection(root) as con:
        check_read_only_query(con, query)
        try:
            with naming_damaged_shards(root):
                return _fetch_user_query(con, query)
        except duckdb.Error as exc:
            first_line = str(exc).splitlines()[0]
            raise InputError(f"query failed: {first_line}", "the views are " + ", ".join(VIEW_NAMES)) from exc


def _fetch_user_query(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    try:
        return queries.fetch_arrow(con, query)
    except duckdb.PermissionException as exc:  # a file outside the store: not a damaged shard
        raise InputError(f"refused: {str(exc).splitlines()[0]}", "queries read the store's views and shard files only") from exc
    except _QUERY_ERRORS as exc:
        first_line = str(exc).splitlines()[0]
        raise InputError(f"query failed: {first_line}", "the views are " + ", ".join(VIEW_NAMES)) from exc


def check_result_path(out: Path) -> None:
    """`--out` never writes into a store: a stray file in a table folder would be read as data."""
    store = store_containing(out)
    if store is not None:
        raise InputError(f"--out {out} lies inside the store {store}", "write results outside the store directory")


def _json_text(column: pa.ChunkedArray) -> pa.Array:
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()],
                    pa.string())


def csv_ready(table: pa.Table) -> pa.Table:
    """CSV has no lists or structs: such columns become JSON text (.jsonl and .parquet keep them as they are)."""
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_struct, pa.types.is_map, pa.types.is_fixed_size_list)
    for i, field in enumerate(table.schema):
        if any(is_kind(field.type) for is_kind in nested):
            table = table.set_column(i, field.name, _json_text(table.column(i)))
    return table


def write_result(table: pa.Table, out: Path) -> None:
    """Write a query result as CSV, JSON lines or Parquet, chosen by the suffix; atomically."""
    fmt = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {out}: unknown format {out.suffix!r}", "use a .csv, .json, .jsonl or .parquet name")
    check_result_path(out)
    tmp = out.with_name(f".tmp-{out.name}")
    try:
        if fmt == "csv":
            pacsv.write_csv(csv_ready(table), tmp)
        elif fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        tmp.replace(out)
    except (pa.ArrowException, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {exc}", "check the output path") from exc


@dataclass
class StoreStats:
    models: pa.Table
    sources: pa.Table
    tiers: pa.Table
    statuses: dict[str, int]
    hard_prompts: int
    hard_with_teacher: int


def collect_stats(store: str) -> StoreStats:
    with reading(open_store(store)) as con, summary_views(con):
        hard, covered = queries.hard_prompt_coverage(con)
        return StoreStats(
            models=queries.model_stats(con, summary=True),
            sources=queries.source_stats(con),
            tiers=queries.tier_stats(con),
            statuses=queries.status_counts(con),
            hard_prompts=hard,
            hard_with_teacher=covered,
        )
