"""Named queries over a store connection (see views.py). Parameters are bound with `?`, never formatted in."""

from __future__ import annotations

import duckdb
import pyarrow as pa

UNSCORED_TRACES = """
    SELECT t.trace_id, t.completion, p.answer AS gold
    FROM traces t JOIN prompts p USING (prompt_id)
    WHERE t.trace_id NOT IN (SELECT trace_id FROM verdicts WHERE settings_hash = ?)
    ORDER BY t.trace_id
"""

ORPHAN_TRACE_COUNT = """
    SELECT count(*) FROM traces t ANTI JOIN prompts p USING (prompt_id)
"""

MODEL_STATS = """
    SELECT role, model,
           count(*) AS traces,
           count(DISTINCT prompt_id) AS prompts,
           count(correct) AS graded,
           round(avg(CASE WHEN correct THEN 1.0 WHEN correct = false THEN 0.0 END), 4) AS accuracy,
           count(*) FILTER (WHERE status IS NULL) AS unscored,
           count(*) FILTER (WHERE status = 'no_answer') AS no_answer,
           count(*) FILTER (WHERE status IN ('parse_error', 'timeout', 'error')) AS ungradable,
           round(avg(num_tokens), 1) AS mean_tokens,
           round(avg(length(completion)), 1) AS mean_chars
    FROM scored_traces
    GROUP BY role, model
    ORDER BY role, model
"""

SOURCE_STATS = """
    SELECT prompt_source AS source, role,
           count(*) AS traces,
           round(avg(CASE WHEN correct THEN 1.0 WHEN correct = false THEN 0.0 END), 4) AS accuracy
    FROM scored_traces
    GROUP BY prompt_source, role
    ORDER BY prompt_source, role
"""

TIER_STATS = """
    SELECT model, policy_version,
           count(*) AS groups,
           count(*) FILTER (WHERE tier = 'easy') AS easy,
           count(*) FILTER (WHERE tier = 'mid') AS mid,
           count(*) FILTER (WHERE tier = 'hard') AS hard,
           count(*) FILTER (WHERE tier = 'unscored') AS unscored,
           round(avg(k), 2) AS mean_k,
           round(avg(mean_reward), 4) AS mean_reward
    FROM groups
    GROUP BY model, policy_version
    ORDER BY model, policy_version
"""

HARD_PROMPTS_WITH_TEACHER = """
    SELECT count(DISTINCT g.prompt_id) FILTER (WHERE g.tier = 'hard') AS hard_prompts,
           count(DISTINCT g.prompt_id) FILTER (
               WHERE g.tier = 'hard' AND g.prompt_id IN (SELECT prompt_id FROM teacher_pool)
           ) AS hard_with_teacher_trace
    FROM groups g
"""

STATUS_COUNTS = """
    SELECT status, count(*) AS n FROM latest_verdicts GROUP BY status ORDER BY status
"""


def fetch_arrow(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> pa.Table:
    """All rows of `query` (with `?` parameters) as an Arrow table.

    DuckDB 2 reads Arrow from a relation (`con.sql(...).to_arrow_table()`; the cursor's
    `fetch_arrow_table` is gone); older releases read it from the cursor.
    """
    if hasattr(duckdb.DuckDBPyRelation, "to_arrow_table"):
        relation = con.sql(query, params=params)
        return relation.to_arrow_table() if relation is not None else pa.table({})  # None: a statement, no rows
    return con.execute(query, params or []).fetch_arrow_table()


def unscored_traces(con: duckdb.DuckDBPyConnection, verifier_settings_hash: str) -> pa.Table:
    """Traces (with their gold answer) that have no verdict under these verifier settings."""
    return fetch_arrow(con, UNSCORED_TRACES, [verifier_settings_hash])


def orphan_trace_count(con: duckdb.DuckDBPyConnection) -> int:
    """Traces whose prompt is not in the store (they cannot be verified)."""
    return int(con.execute(ORPHAN_TRACE_COUNT).fetchall()[0][0])


def model_stats(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return fetch_arrow(con, MODEL_STATS)


def source_stats(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return fetch_arrow(con, SOURCE_STATS)


def tier_stats(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return fetch_arrow(con, TIER_STATS)


def hard_prompt_coverage(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(hard prompts, hard prompts that have at least one verified teacher trace)."""
    hard, covered = con.execute(HARD_PROMPTS_WITH_TEACHER).fetchall()[0]
    return int(hard or 0), int(covered or 0)


def status_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {status: int(n) for status, n in con.execute(STATUS_COUNTS).fetchall()}
