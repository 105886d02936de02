"""A read-only DuckDB connection for people's own SQL (`dypo-data sql`).

Nothing a query does can change the store or touch other files, and DuckDB enforces it itself:

- The views are written into a scratch database file outside the store, which is then reopened
  with `read_only=True`: CREATE, DROP, INSERT, ATTACH (also of `:memory:`) and CHECKPOINT writes fail.
- `allowed_paths` lists exactly the store's shard files and `enable_external_access=false` refuses
  every other file: no reads of other paths, no globs, no extension installs or loads.
- `lock_configuration=true` keeps a query from switching any of this back (`SET`, `RESET`).
- DuckDB's own parser classifies the statement, and only one SELECT (with DESCRIBE, SHOW, SUMMARIZE
  and FROM-first queries, which parse as SELECT) is run: `allowed_paths` grants writes as well as
  reads, so a `COPY ... TO` one of the shard paths is refused by its statement type, and so are
  temporary tables and macros, which would change nothing on disk but are writes all the same.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

from dypo_data.errors import InputError
from dypo_data.store.catalog import hold_readers, release_readers
from dypo_data.store.views import VIEW_NAMES, bind_shard_variables, define_views

READ_ONLY_HINT = "dypo-data sql only reads; save a result with --out FILE (.csv, .jsonl or .parquet) outside the store"


@contextlib.contextmanager
def read_only_connection(root: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that can read the store's views and shards and nothing else (see the module docstring)."""
    scratch = Path(tempfile.mkdtemp(prefix="dypo-sql-"))
    readers = hold_readers(root, create=False)  # a compaction keeps the files listed here until the query is done
    try:
        database = str(scratch / "views.duckdb")
        build = duckdb.connect(database)
        try:
            files = define_views(build, root.resolve(), save_catalog=False)
        finally:
            build.close()
        con = duckdb.connect(database, read_only=True)
        try:
            bind_shard_variables(con, files)
            paths = [str(p) for table_files in files.values() for p in table_files]
            if paths:
                con.execute("SET allowed_paths = ?", [paths])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield con
        finally:
            con.close()
    finally:
        release_readers(readers)
        shutil.rmtree(scratch, ignore_errors=True)


def check_read_only_query(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT, as DuckDB's parser classifies the statement."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise InputError(f"query failed: {first_line}", "the views are " + ", ".join(VIEW_NAMES)) from exc
    if len(statements) != 1:
        raise InputError(f"the query holds {len(statements)} statements; dypo-data sql runs one", "pass one SELECT")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InputError(f"refused {kind.name}: dypo-data sql runs read-only SELECT queries", READ_ONLY_HINT)
