"""The named queries behind `dypo-data view`'s pages, over the store's views (see views.py).

Each query is a `NamedQuery`: a name, one SQL text with `?` parameters, and the order of its
parameters. Values from a request are only ever bound, never formatted into the SQL.
`NamedQuery.reproducible(params)` writes the same SQL with the values as literals, for display
only: a page shows it so a user can paste it into `dypo-data sql` and get the same rows.

Optional filters are lines `AND (? IS NULL OR column = ?)` (or `AND (NOT ? OR ...)` for a flag),
so one SQL text serves every combination of filters; the displayed SQL leaves out the lines of
filters that are off, which is the same query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dypo_data.store.queries import MODEL_STATS, SOURCE_STATS, TIER_STATS


@dataclass(frozen=True)
class NamedQuery:
    """One parameterised query: `params` names its `?` placeholders in order."""

    name: str
    sql: str
    params: tuple[str, ...] = ()

    def bind(self, values: dict[str, Any]) -> list[Any]:
        """The positional parameters for `values` (a dict keyed by parameter name)."""
        return [values[p] for p in self.params]

    def reproducible(self, values: dict[str, Any]) -> str:
        """The SQL with each `?` replaced by its value as a literal (display only, never executed here)."""
        literals = iter(sql_literal(v) for v in self.bind(values))
        text = re.sub(r"\?", lambda _m: next(literals), self.sql)
        return _dedent(_OFF_FILTER.sub("", text))


# A filter line whose value is NULL (or a flag that is false): always true, so it can be dropped.
_OFF_FILTER = re.compile(r"^[ \t]*AND \((NULL IS NULL|NOT false) OR .*\)\n", re.MULTILINE)


def sql_literal(value: Any) -> str:
    """A DuckDB literal for a bound value (strings quoted with doubled quotes)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _dedent(sql: str) -> str:
    lines = [line.rstrip() for line in sql.strip("\n").splitlines()]
    indent = min((len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()), default=0)
    return "\n".join([lines[0].strip(), *(line[indent:] for line in lines[1:])])


# -- overview --------------------------------------------------------------------------------------

STORE_COUNTS = NamedQuery("store_counts", """
    SELECT (SELECT count(*) FROM prompts) AS prompts,
           (SELECT count(*) FROM traces) AS traces,
           (SELECT count(*) FROM latest_verdicts) AS verified_traces,
           (SELECT count(*) FROM groups) AS rollout_groups,
           (SELECT count(*) FROM teacher_pool) AS teacher_pool,
           (SELECT count(DISTINCT run_id) FROM train_metrics) AS training_runs,
           (SELECT count(*) FROM eval_results) AS eval_results
""")

MODELS = NamedQuery("models_and_roles", MODEL_STATS)
SOURCES = NamedQuery("accuracy_per_source", SOURCE_STATS)
TIERS = NamedQuery("tiers_per_policy_version", TIER_STATS)
STATUSES = NamedQuery("verdict_statuses", """
    SELECT status, count(*) AS traces FROM latest_verdicts GROUP BY status ORDER BY traces DESC, status
""")
RUNS = NamedQuery("training_runs", """
    SELECT run_id, count(DISTINCT step) AS steps, min(step) AS first_step, max(step) AS last_step,
           min(created_at) AS started, max(created_at) AS last_logged
    FROM train_metrics
    GROUP BY run_id
    ORDER BY started, run_id
""")

# -- groups ----------------------------------------------------------------------------------------

GROUP_CHOICES = NamedQuery("group_filter_choices", """
    SELECT (SELECT list(DISTINCT model ORDER BY model) FROM groups) AS models,
           (SELECT list(DISTINCT policy_version ORDER BY policy_version) FROM groups) AS policy_versions,
           (SELECT list(DISTINCT source ORDER BY source) FROM prompts) AS sources,
           (SELECT list(DISTINCT status ORDER BY status) FROM latest_verdicts) AS statuses
""")

GROUP_PAGE = NamedQuery("groups_page", """
    SELECT g.group_id, g.prompt_id, g.model, g.policy_version, p.source, g.tier, g.k, g.n_graded, g.n_correct,
           round(g.mean_reward, 3) AS mean_reward, round(g.mean_tokens, 1) AS mean_tokens,
           left(p.problem, 160) AS problem, count(*) OVER () AS matching
    FROM groups g JOIN prompts p USING (prompt_id)
    WHERE true
      AND (? IS NULL OR g.tier = ?)
      AND (? IS NULL OR g.model = ?)
      AND (? IS NULL OR g.policy_version = ?)
      AND (? IS NULL OR p.source = ?)
      AND (? IS NULL OR g.group_id IN (SELECT group_id FROM scored_traces WHERE role = 'policy' AND status = ?))
      AND (NOT ? OR (g.tier = 'hard' AND g.prompt_id NOT IN (SELECT prompt_id FROM teacher_pool)))
      AND (? IS NULL OR contains(lower(p.problem), lower(?)))
    ORDER BY g.model, g.policy_version, p.source, g.prompt_id, g.group_id
    LIMIT ? OFFSET ?
""", ("tier", "tier", "model", "model", "policy_version", "policy_version", "source", "source",
      "status", "status", "hard_without_teacher", "q", "q", "limit", "offset"))

# -- one prompt ------------------------------------------------------------------------------------

PROMPT = NamedQuery("prompt", """
    SELECT prompt_id, source, split, problem, answer AS gold_answer, metadata, origin
    FROM prompts WHERE prompt_id = ?
""", ("prompt_id",))

PROMPT_GROUPS = NamedQuery("prompt_groups", """
    SELECT group_id, model, policy_version, tier, k, n_graded, n_correct, round(mean_reward, 3) AS mean_reward
    FROM groups WHERE prompt_id = ?
    ORDER BY model, policy_version, group_id
""", ("prompt_id",))

PROMPT_TRACES = NamedQuery("prompt_traces", """
    SELECT trace_id, role, model, group_id, policy_version, sample_idx, completion, num_tokens, finish_reason,
           status, correct, reward, extracted_answer
    FROM scored_traces WHERE prompt_id = ? AND role IN ('policy', 'teacher')
    ORDER BY role, model, policy_version, group_id, sample_idx, trace_id
""", ("prompt_id",))

PROMPT_TRAINING = NamedQuery("prompt_training_steps", """
    SELECT s.run_id, s.step, s.tier, s.route, s.group_id, s.n_rollouts, s.n_correct, s.teacher_trace_id,
           t.model AS teacher_model, t.sample_idx AS teacher_sample, t.status AS teacher_status,
           t.correct AS teacher_correct
    FROM train_samples s LEFT JOIN scored_traces t ON t.trace_id = s.teacher_trace_id
    WHERE s.prompt_id = ?
    ORDER BY s.run_id, s.step
""", ("prompt_id",))

# -- runs ------------------------------------------------------------------------------------------

RUN_METRICS = NamedQuery("run_metrics", """
    SELECT run_id, step, name, value
    FROM train_metrics
    WHERE list_contains(?::VARCHAR[], run_id) AND value IS NOT NULL AND isfinite(value)
    ORDER BY name, run_id, step
""", ("runs",))

SKIPS_PER_STEP = NamedQuery("skipped_prompts_per_step", """
    SELECT run_id, step, substr(route, 6) AS reason, count(*) AS prompts
    FROM train_samples
    WHERE list_contains(?::VARCHAR[], run_id) AND starts_with(route, 'skip:')
    GROUP BY run_id, step, reason
    ORDER BY run_id, step, reason
""", ("runs",))

SKIPPED_PROMPTS = NamedQuery("skipped_prompts", """
    SELECT s.run_id, s.step, substr(s.route, 6) AS reason, s.tier, s.prompt_id, s.n_rollouts, s.n_correct,
           left(p.problem, 160) AS problem, count(*) OVER () AS matching
    FROM train_samples s LEFT JOIN prompts p USING (prompt_id)
    WHERE s.run_id = ? AND starts_with(s.route, 'skip:')
      AND (? IS NULL OR s.step = ?)
      AND (? IS NULL OR s.route = 'skip:' || ?)
    ORDER BY s.step, reason, s.prompt_id
    LIMIT ? OFFSET ?
""", ("run", "step", "step", "reason", "reason", "limit", "offset"))

SKIP_REASONS = NamedQuery("skip_reasons", """
    SELECT list(DISTINCT substr(route, 6) ORDER BY substr(route, 6)) AS reasons
    FROM train_samples WHERE starts_with(route, 'skip:')
""")

# -- eval ------------------------------------------------------------------------------------------

EVAL_CHOICES = NamedQuery("eval_filter_choices", """
    SELECT list(DISTINCT model ORDER BY model) AS models, list(DISTINCT benchmark ORDER BY benchmark) AS benchmarks
    FROM eval_results
""")

# The newest setting evaluated per (model, policy version, benchmark), as `dypo-data eval-report`.
EVAL_TABLE = NamedQuery("eval_results", """
    WITH newest AS (
        SELECT model, policy_version, benchmark, arg_max(settings_hash, created_at) AS settings_hash
        FROM eval_results GROUP BY model, policy_version, benchmark
    )
    SELECT r.benchmark, r.model, r.policy_version, TRY_CAST(r.policy_version AS BIGINT) AS step, r.metric,
           r.value, r.low, r.high, r.n_problems, r.k, r.run_id
    FROM eval_results r JOIN newest USING (model, policy_version, benchmark, settings_hash)
    WHERE true
      AND (? IS NULL OR r.model = ?)
      AND (? IS NULL OR r.benchmark = ?)
    ORDER BY r.benchmark, r.model, step NULLS FIRST, r.policy_version, r.metric
""", ("model", "model", "benchmark", "benchmark"))

EVAL_SAMPLES_OF_PROMPT = NamedQuery("prompt_eval_samples", """
    SELECT model, policy_version, sample_idx, completion, num_tokens, finish_reason, status, correct,
           extracted_answer
    FROM scored_traces WHERE prompt_id = ? AND role = 'eval'
    ORDER BY model, policy_version, sample_idx
""", ("prompt_id",))
