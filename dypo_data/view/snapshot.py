"""An in-memory snapshot of a store's views, the only thing the viewer's queries read.

The store's views deduplicate every table with a window over all its rows, so a filter such as
`WHERE prompt_id = ?` cannot be pushed below them: every page would rescan every shard. The viewer
instead copies the rows its pages read into an in-memory DuckDB database once, under the same
names and with the same rows as the store's views (token-id and logprob lists, which no page shows,
left out), and runs its named queries there. The SQL a page shows therefore runs unchanged with
`dypo-data sql` on the store.

The snapshot is read-only towards the store twice over: it only ever reads shards while it is
built, and once built it switches DuckDB's external access off and locks the configuration, so
no query can read or write a file. It is rebuilt when the store's shard listing changes (checked
at most every `recheck_s` seconds), so a page reflects a run still writing to the store.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from dypo_data.contracts.schemas import TABLES
from dypo_data.store.views import DERIVED_VIEWS, connect
from dypo_data.store.view_queries import NamedQuery

log = logging.getLogger(__name__)

# Columns of `traces` no page reads (per-token lists: the bulk of a policy rollout's bytes).
_TOKEN_COLUMNS = ("prompt_token_ids", "completion_token_ids", "completion_logprobs")
# view -> ORDER BY of its copy: rows of one prompt / run sit together, so zone maps skip the rest.
_COPIED_VIEWS = {
    "prompts": "prompt_id",
    "traces": "prompt_id, trace_id",
    "latest_verdicts": "trace_id",
    "train_metrics": "run_id, name, step",
    "train_samples": "run_id, step, prompt_id",
    "eval_results": "benchmark, model, policy_version",
}


@dataclass(frozen=True)
class QueryRun:
    """A named query as it ran: its rows and the SQL that reproduces them."""

    query: NamedQuery
    rows: list[dict[str, Any]]
    sql: str

    @property
    def first(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None


def _copy_columns(view: str) -> str:
    names = [n for n in TABLES[view].names if n not in _TOKEN_COLUMNS] if view in TABLES else ["*"]
    return ", ".join(names)


def store_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every shard: changes when a writer adds one."""
    entries = []
    for table in TABLES:
        folder = root / table
        if folder.is_dir():
            for path in folder.glob("*.parquet"):
                stat = path.stat()
                entries.append((f"{table}/{path.name}", stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def build_snapshot(root: Path) -> duckdb.DuckDBPyConnection:
    """Copy the views the pages read into a fresh in-memory database and lock it (see module doc)."""
    con = connect(root, save_catalog=False)  # nothing is written to the store, not even the shard catalog
    con.execute("ATTACH ':memory:' AS snapshot")
    for view, order in _COPIED_VIEWS.items():
        source = "verdicts" if view == "latest_verdicts" else view
        columns = _copy_columns(source)
        con.execute(f"CREATE TABLE snapshot.{view} AS SELECT {columns} FROM memory.main.{view} ORDER BY {order}")
    con.execute("USE snapshot")
    con.execute(f"CREATE VIEW scored_traces AS {DERIVED_VIEWS['scored_traces']}")
    con.execute(f"CREATE TABLE groups AS SELECT * FROM ({DERIVED_VIEWS['groups']}) ORDER BY prompt_id, group_id")
    # The pages only ask which prompts have a verified teacher trace, and how many there are.
    con.execute(f"CREATE TABLE teacher_pool AS SELECT trace_id, prompt_id, model FROM ({DERIVED_VIEWS['teacher_pool']})")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@dataclass
class Snapshot:
    """The current snapshot of one store, rebuilt when its shards change."""

    root: Path
    recheck_s: float = 2.0
    _con: duckdb.DuckDBPyConnection | None = None
    _signature: tuple = ()
    _checked_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    build_seconds: float = 0.0

    def refresh(self, *, force: bool = False) -> None:
        """Rebuild if the store's shards changed since the last build (at most every `recheck_s`)."""
        with self._lock:
            now = time.monotonic()
            if not force and self._con is not None and now - self._checked_at < self.recheck_s:
                return
            self._checked_at = now
            signature = store_signature(self.root)
            if self._con is not None and signature == self._signature and not force:
                return
            started = time.perf_counter()
            con = build_snapshot(self.root)
            # The previous snapshot is dropped, not closed: a request still running keeps its cursor.
            self._con, self._signature = con, signature
            self.build_seconds = time.perf_counter() - started
            log.info("snapshot of %s built in %.2f s (%d shards)", self.root, self.build_seconds, len(signature))

    def run(self, query: NamedQuery, values: dict[str, Any] | None = None) -> QueryRun:
        """Rows of `query` with `values` bound to its parameters, as dicts."""
        self.refresh()
        values = values or {}
        assert self._con is not None
        cursor = self._con.cursor()  # one cursor per call: requests run on several threads
        try:
            cursor.execute("USE snapshot")  # a cursor starts in the default catalog, where the shard views are
            result = cursor.execute(query.sql, query.bind(values))
            columns = [d[0] for d in result.description]
            rows = [dict(zip(columns, row)) for row in result.fetchall()]
        finally:
            cursor.close()
        return QueryRun(query=query, rows=rows, sql=query.reproducible(values))

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
