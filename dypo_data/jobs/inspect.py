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
from dypo_data.store import VIEW_NAMES, connect, open_store, queries

def run_sql(store: str, query: str) -> pa.Table:
    """Run one query against the store's views; SQL errors become an InputError naming the query."""
    con = connect(open_store(store))
    try:
        return queries.fetch_arrow(con, query)
    except duckdb.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise InputError(f"query failed: {first_line}", "the views are " + ", ".join(VIEW_NAMES)) from exc
    finally:
        con.close()


def write_result(table: pa.Table, out: Path) -> None:
    """Write a query result as CSV, JSON lines or Parquet, chosen by the suffix; atomically."""
    fmt = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {out}: unknown format {out.suffix!r}", "use a .csv, .json, .jsonl or .parquet name")
    tmp = out.with_name(f".tmp-{out.name}")
    try:
        if fmt == "csv":
            pacsv.write_csv(table, tmp)
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
    con = connect(open_store(store))
    try:
        hard, covered = queries.hard_prompt_coverage(con)
        return StoreStats(
            models=queries.model_stats(con),
            sources=queries.source_stats(con),
            tiers=queries.tier_stats(con),
            statuses=queries.status_counts(con),
            hard_prompts=hard,
            hard_with_teacher=covered,
        )
    finally:
        con.close()
