"""Named queries over a store connection (see views.py). Parameters are bound with `?`, never formatted in."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from dypo_data.store.shards import read_located
from dypo_data.store.views import has_shards, located_source

# Where the traces without a verdict under the settings lie; their completions are then read there
# (shards.read_located), so no completion passes through the deduplication of every trace.
UNSCORED_TRACES = f"""
    SELECT t.trace_id, p.answer AS gold, t.filename, t.file_row_number
    FROM ({located_source("traces")}) t JOIN prompts p USING (prompt_id)
    WHERE t.trace_id NOT IN (SELECT trace_id FROM verdicts WHERE settings_hash = ?)
    ORDER BY t.trace_id
"""

ORPHAN_TRACE_COUNT = """
    SELECT count(*) FROM traces t ANTI JOIN prompts p USING (prompt_id)
"""

def _model_stats_sql(chars: str) -> str:
    """Per (role, model) counts; `chars` is the SQL of a trace's completion length in characters."""
    return f"""
    SELECT role, model,
           count(*) AS traces,
           count(DISTINCT prompt_id) AS prompts,
           count(correct) AS graded,
           round(avg(CASE WHEN correct THEN 1.0 WHEN correct = false THEN 0.0 END), 4) AS accuracy,
           count(*) FILTER (WHERE status IS NULL) AS unscored,
           count(*) FILTER (WHERE status = 'no_answer') AS no_answer,
           count(*) FILTER (WHERE status IN ('parse_error', 'timeout', 'error')) AS ungradable,
           round(avg(num_tokens), 1) AS mean_tokens,
           round(avg({chars}), 1) AS mean_chars
    FROM scored_traces
    GROUP BY role, model
    ORDER BY role, model
"""


MODEL_STATS = _model_stats_sql("length(completion)")

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
    """Traces (trace_id, completion, gold) that have no verdict under these verifier settings, by trace id."""
    if not has_shards(con, "traces"):
        return pa.table({"trace_id": pa.array([], pa.string()), "completion": pa.array([], pa.string()),
                         "gold": pa.array([], pa.string())})
    located = fetch_arrow(con, UNSCORED_TRACES, [verifier_settings_hash])
    completions = read_located(located, "traces", ["completion"]).column("completion")
    return pa.table({"trace_id": located.column("trace_id"), "completion": completions, "gold": located.column("gold")})


def orphan_trace_count(con: duckdb.DuckDBPyConnection) -> int:
    """Traces whose prompt is not in the store (they cannot be verified)."""
    return int(con.execute(ORPHAN_TRACE_COUNT).fetchall()[0][0])


def model_stats(con: duckdb.DuckDBPyConnection, *, summary: bool = False) -> pa.Table:
    """Per (role, model) counts; `summary`: within `summary.summary_views` (its copy has each
    completion's length, not its text)."""
    return fetch_arrow(con, _model_stats_sql("completion_chars") if summary else MODEL_STATS)


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


# -- evaluation ------------------------------------------------------------------------------------

UNSCORED_TRACES_AMONG = """
    SELECT t.trace_id, t.completion, p.answer AS gold
    FROM traces t JOIN prompts p USING (prompt_id)
    WHERE list_contains(?::VARCHAR[], t.trace_id)
      AND t.trace_id NOT IN (SELECT trace_id FROM verdicts WHERE settings_hash = ?)
    ORDER BY t.trace_id
"""

# One row per eval sample of one model, version and sampling setting, on the given prompts, with its
# newest verdict under the given verifier settings (NULL columns when it has none yet).
EVAL_SAMPLES = """
    SELECT t.prompt_id, t.sample_idx, t.finish_reason, t.num_tokens, v.status, v.correct, v.extracted_answer
    FROM traces t
    LEFT JOIN (
        SELECT trace_id, status, correct, extracted_answer FROM verdicts WHERE settings_hash = ?
        QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY created_at DESC, verdict_id) = 1
    ) v USING (trace_id)
    WHERE t.role = 'eval' AND t.model = ? AND t.policy_version = ? AND t.settings_hash = ?
      AND t.sample_idx < ? AND list_contains(?::VARCHAR[], t.prompt_id)
    ORDER BY t.prompt_id, t.sample_idx
"""

# The newest evaluation of each (model, policy version, benchmark): every metric of the setting
# evaluated last. An empty filter list means no filter.
EVAL_REPORT = """
    WITH newest AS (
        SELECT model, policy_version, benchmark, arg_max(settings_hash, created_at) AS settings_hash
        FROM eval_results GROUP BY model, policy_version, benchmark
    )
    SELECT r.model, r.policy_version, TRY_CAST(r.policy_version AS BIGINT) AS step, r.benchmark, r.metric,
           r.value, r.low, r.high, r.n_problems, r.k, r.settings, r.settings_hash, r.run_id, r.created_at
    FROM eval_results r JOIN newest USING (model, policy_version, benchmark, settings_hash)
    WHERE (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], r.model))
      AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], r.benchmark))
    ORDER BY r.benchmark, r.model, step NULLS FIRST, r.policy_version, r.metric
"""

EVAL_NAMES = """
    SELECT list(DISTINCT model ORDER BY model), list(DISTINCT benchmark ORDER BY benchmark) FROM eval_results
"""


def stored_prompt_ids(con: duckdb.DuckDBPyConnection, prompt_ids: list[str]) -> set[str]:
    """Those of `prompt_ids` the store already holds (looked up by id, not by reading every prompt)."""
    return {row[0] for row in con.execute("SELECT prompt_id FROM prompts WHERE list_contains(?::VARCHAR[], prompt_id)",
                                          [prompt_ids]).fetchall()}


def unscored_traces_among(con: duckdb.DuckDBPyConnection, trace_ids: list[str], verifier_settings_hash: str) -> pa.Table:
    """Those of `trace_ids` (with their gold answer) that have no verdict under these verifier settings."""
    return fetch_arrow(con, UNSCORED_TRACES_AMONG, [trace_ids, verifier_settings_hash])


def eval_samples(con: duckdb.DuckDBPyConnection, *, model: str, policy_version: str, trace_settings_hash: str,
                 verifier_settings_hash: str, k: int, prompt_ids: list[str]) -> pa.Table:
    """Samples 0..k-1 of one model and version on `prompt_ids`, with their verdicts (see EVAL_SAMPLES)."""
    params = [verifier_settings_hash, model, policy_version, trace_settings_hash, k, prompt_ids]
    return fetch_arrow(con, EVAL_SAMPLES, params)


def eval_report(con: duckdb.DuckDBPyConnection, *, models: list[str], benchmarks: list[str]) -> pa.Table:
    """eval_results of the newest setting per (model, version, benchmark), filtered (empty: all)."""
    return fetch_arrow(con, EVAL_REPORT, [models, models, benchmarks, benchmarks])


def eval_names(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """(models, benchmarks) that have eval results."""
    models, benchmarks = con.execute(EVAL_NAMES).fetchall()[0]
    return list(models or []), list(benchmarks or [])


# -- a training run's rows, located once at plan time ------------------------------------------------
# Each query joins a registered Arrow table of the run's ids (`run_units`: column unit) and returns
# small columns plus where each row lies (filename, file_row_number), ordered as the trainer reads
# them; the large columns are then read by location (shards.read_shard_rows), one pass in all.

def _with_units(con: duckdb.DuckDBPyConnection, units: list[str], query: str, params: list | None = None) -> pa.Table:
    con.register("run_units", pa.table({"unit": pa.array(units, pa.string())}))
    try:
        return fetch_arrow(con, query, params)
    finally:
        con.unregister("run_units")


def rollout_locations(con: duckdb.DuckDBPyConnection, group_ids: list[str]) -> pa.Table:
    """The policy rollouts of `group_ids` with their latest verdict, by group, sample index and trace id."""
    query = f"""
        SELECT t.group_id, t.prompt_id, t.trace_id, t.sample_idx, v.reward, v.correct, t.filename, t.file_row_number
        FROM ({located_source("traces")}) t
        JOIN run_units u ON t.group_id = u.unit
        LEFT JOIN latest_verdicts v USING (trace_id)
        WHERE t.role = 'policy'
        ORDER BY t.group_id, t.sample_idx, t.trace_id
    """
    return _with_units(con, group_ids, query)


def teacher_locations(con: duckdb.DuckDBPyConnection, prompt_ids: list[str], teachers: list[str]) -> pa.Table:
    """The teacher pool (verified-correct teacher traces) of `prompt_ids` by the teachers named, by prompt, model and trace id."""
    query = f"""
        SELECT t.prompt_id, t.trace_id, t.model, t.filename, t.file_row_number
        FROM ({located_source("traces")}) t
        JOIN run_units u ON t.prompt_id = u.unit
        JOIN latest_verdicts v USING (trace_id)
        WHERE t.role = 'teacher' AND v.correct AND list_contains(?, t.model)
        ORDER BY t.prompt_id, t.model, t.trace_id
    """
    return _with_units(con, prompt_ids, query, [teachers])


def prompts_of(con: duckdb.DuckDBPyConnection, prompt_ids: list[str]) -> pa.Table:
    """prompt_id, messages and gold answer of `prompt_ids`, by prompt id."""
    query = "SELECT p.prompt_id, p.messages, p.answer FROM prompts p JOIN run_units u ON p.prompt_id = u.unit ORDER BY p.prompt_id"
    return _with_units(con, prompt_ids, query)
