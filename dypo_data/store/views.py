"""DuckDB over a store: one view per table and the derived views people query.

Views (all deduplicated by their ids, so an interrupted-and-resumed run never counts twice; a table
whose keys a compaction found unique in exactly its current shards skips the deduplication, which
then changes nothing):

- prompts, traces, verdicts:   the raw tables.
- latest_verdicts:             one verdict per trace, the most recent (any verifier settings).
- scored_traces:               traces joined with their prompt and latest verdict.
- groups:                      policy rollout groups: k, n_graded, n_correct, mean reward, tier.
- teacher_pool:                teacher traces the verifier marked correct (the SFT targets).
- train_metrics, train_samples: what dypo-train logged per step and where each prompt went; a
                               step retrained after a resume keeps its latest rows.
- eval_results:                what `dypo-data eval` measured, the latest row per (model, policy
                               version, benchmark, settings, metric): a resumed or repeated eval
                               supersedes its older numbers. Eval samples themselves are traces
                               of role 'eval'; they never enter `groups` or `teacher_pool`.

The same data is readable with no project code: `SELECT * FROM 'STORE/traces/*.parquet'`.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import duckdb

from dypo_data.contracts.schemas import TABLES
from dypo_data.store.catalog import hold_readers, release_readers
from dypo_data.store.shards import shard_listing

# table -> (key, ORDER BY of the row kept among duplicates of the key)
_DEDUP = {
    "prompts": ("prompt_id", "created_at"),
    "traces": ("trace_id", "created_at"),
    "verdicts": ("verdict_id", "created_at"),
    "train_metrics": ("run_id, step, name", "created_at DESC"),
    "train_samples": ("run_id, step, prompt_id", "created_at DESC"),
    "eval_results": ("model, policy_version, benchmark, settings_hash, metric", "created_at DESC, run_id DESC"),
}


def dedup_key(table: str) -> str:
    """The columns `table`'s view keeps one row per (its rows' identity)."""
    return _DEDUP[table][0]


# Tier of a rollout group from its graded samples: the DYPO gate.
GROUP_TIER_SQL = """
CASE
  WHEN n_graded = 0 THEN 'unscored'
  WHEN n_correct = n_graded THEN 'easy'
  WHEN n_correct = 0 THEN 'hard'
  ELSE 'mid'
END
"""

DERIVED_VIEWS: dict[str, str] = {
    "latest_verdicts": """
        SELECT * FROM verdicts
        QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY created_at DESC, verdict_id) = 1
    """,
    "scored_traces": """
        SELECT t.*, p.source AS prompt_source, p.problem, p.answer AS gold_answer,
               v.status, v.correct, v.reward, v.extracted_answer, v.verifier, v.verifier_version,
               v.settings_hash AS verifier_settings_hash
        FROM traces t
        LEFT JOIN prompts p USING (prompt_id)
        LEFT JOIN latest_verdicts v USING (trace_id)
    """,
    "groups": f"""
        SELECT *, {GROUP_TIER_SQL} AS tier FROM (
          SELECT group_id, any_value(prompt_id) AS prompt_id, any_value(model) AS model,
                 any_value(policy_version) AS policy_version, any_value(settings_hash) AS settings_hash,
                 count(*) AS k,
                 count(correct) AS n_graded,
                 count(*) FILTER (WHERE correct) AS n_correct,
                 avg(reward) AS mean_reward,
                 avg(num_tokens) AS mean_tokens
          FROM scored_traces
          WHERE role = 'policy'
          GROUP BY group_id
        )
    """,
    "teacher_pool": """
        SELECT * FROM scored_traces WHERE role = 'teacher' AND correct
    """,
}


def shard_variable(table: str) -> str:
    """The DuckDB variable holding the list of `table`'s shard files, which its view reads."""
    return f"dypo_shards_{table}"


def _table_source(con: duckdb.DuckDBPyConnection, table: str, files: list[Path]) -> str:
    """SQL that reads the table's shards, or an empty table with its schema (stored in the database,
    so a database file reopened read-only still has it).

    The file list is bound as a variable, not written into the SQL: DuckDB parses a literal list of
    thousands of paths slowly, and a bound list costs nothing to bind. Every shard was checked to
    have exactly the table's columns, which DuckDB matches by name, so only the first file's footer
    is read when the view is defined.
    """
    if files:
        con.execute(f"SET VARIABLE {shard_variable(table)} = ?", [[str(p) for p in files]])
        return f"SELECT * FROM read_parquet(getvariable('{shard_variable(table)}'))"
    empty_name = f"_empty_{table}"
    con.from_arrow(TABLES[table].empty_table()).create(empty_name)
    return f"SELECT * FROM {empty_name}"


def define_views(con: duckdb.DuckDBPyConnection, root: Path, *, save_catalog: bool = True) -> dict[str, list[Path]]:
    """Create every view of the store in `con`; returns the shard files each table's view reads.

    `save_catalog=False`: nothing is written to the store, not even the shard catalog (catalog.py).

    The views read DuckDB variables (`shard_variable`); a connection opened later on a database
    file holding these views needs `bind_shard_variables` first.
    """
    read: dict[str, list[Path]] = {}
    for table, (key, order) in _DEDUP.items():
        listing = shard_listing(root, table, save=save_catalog)
        read[table] = listing.paths
        source = _table_source(con, table, listing.paths)
        dedup = "" if listing.unique_keys else f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM ({source}) {dedup}")
    for name, sql in DERIVED_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    return read


def located_source(table: str) -> str:
    """The rows of `table`'s view with where each lies: `filename` and `file_row_number` (0-based) added.

    The same deduplication as the view (the same row of a duplicated key is kept), over the same
    files; a query selecting only small columns reads only those (read the large ones by location
    with `shards.read_shard_rows`). Needs shards: check `has_shards` first.
    """
    key, order = _DEDUP[table]
    return (f"SELECT * FROM read_parquet(getvariable('{shard_variable(table)}'), filename = true, file_row_number = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1")


def has_shards(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table`'s view (defined on `con`) reads any shard."""
    return bool(con.execute(f"SELECT getvariable('{shard_variable(table)}') IS NOT NULL").fetchall()[0][0])


def bind_shard_variables(con: duckdb.DuckDBPyConnection, files: dict[str, list[Path]]) -> None:
    """Set the variables the views of `define_views` read, on another connection to their database."""
    for table, paths in files.items():
        if paths:
            con.execute(f"SET VARIABLE {shard_variable(table)} = ?", [[str(p) for p in paths]])


def connect(root: Path, *, database: str = ":memory:", save_catalog: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every view of the store defined (for the jobs' own queries).

    The views read the shard lists from variables of this connection: query them through it, not
    through a `cursor()` (a new connection without the variables). `save_catalog=False` writes nothing
    to the store (no shard catalog, no readers lock file).
    """
    # held while the connection lives: a compaction keeps the files it lists (see catalog.hold_readers)
    readers = hold_readers(root, create=save_catalog)
    con = duckdb.connect(database)
    weakref.finalize(con, release_readers, readers)
    define_views(con, root, save_catalog=save_catalog)
    return con


VIEW_NAMES = tuple(_DEDUP) + tuple(DERIVED_VIEWS)
