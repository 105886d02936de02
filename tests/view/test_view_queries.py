"""The SQL each page shows reproduces its rows on the store itself, through `dypo-data sql`'s path."""

from __future__ import annotations

import pytest

from dypo_data.jobs.inspect import run_sql
from dypo_data.store import view_queries as q
from dypo_data.view.snapshot import Snapshot


def _cases(fs):
    pid = fs.prompts[0]["prompt_id"]
    no_filter = dict(tier=None, model=None, policy_version=None, source=None, status=None, hard_without_teacher=False,
                     q=None, limit=50, offset=0)
    return [
        (q.STORE_COUNTS, {}), (q.MODELS, {}), (q.SOURCES, {}), (q.TIERS, {}), (q.STATUSES, {}), (q.RUNS, {}),
        (q.GROUP_CHOICES, {}), (q.GROUP_PAGE, no_filter),
        (q.GROUP_PAGE, {**no_filter, "tier": "mid", "source": "math", "status": "timeout", "limit": 2}),
        (q.GROUP_PAGE, {**no_filter, "hard_without_teacher": True, "q": "it's 100% \"quoted\" ?"}),
        (q.GROUP_PAGE, {**no_filter, "q": "muffins", "offset": 1, "limit": 1}),
        (q.PROMPT, {"prompt_id": pid}), (q.PROMPT_GROUPS, {"prompt_id": pid}), (q.PROMPT_TRACES, {"prompt_id": pid}),
        (q.PROMPT_TRAINING, {"prompt_id": pid}), (q.EVAL_SAMPLES_OF_PROMPT, {"prompt_id": pid}),
        (q.RUN_METRICS, {"runs": ["dypo-a", "dypo-b"]}), (q.SKIPS_PER_STEP, {"runs": ["dypo-b"]}),
        (q.SKIPPED_PROMPTS, {"run": "dypo-a", "step": 3, "reason": "easy", "limit": 50, "offset": 0}),
        (q.SKIP_REASONS, {}), (q.EVAL_CHOICES, {}), (q.EVAL_TABLE, {"model": None, "benchmark": "held-out"}),
    ]


def test_displayed_sql_reproduces_every_query(view_store):
    snap = Snapshot(view_store.root)
    with_rows = set()
    for query, values in _cases(view_store):
        shown = snap.run(query, values)
        again = run_sql(str(view_store.root), shown.sql).to_pylist()
        assert again == shown.rows, query.name
        with_rows |= {query.name} if shown.rows else set()
    # a check of empty results proves little: every query has a case that returns rows
    assert with_rows == {query.name for query, _ in _cases(view_store)}


def test_the_displayed_sql_drops_filters_that_are_off_and_quotes_values():
    values = dict(tier="hard", model=None, policy_version=None, source=None, status=None, hard_without_teacher=False,
                  q="it's", limit=50, offset=0)
    sql = q.GROUP_PAGE.reproducible(values)
    assert "g.tier = 'hard'" in sql and "lower('it''s')" in sql
    assert "NULL IS NULL" not in sql and "NOT false" not in sql and "?" not in sql


@pytest.mark.parametrize("value, literal", [(None, "NULL"), (True, "true"), (3, "3"), ("a'b", "'a''b'"),
                                            (["x", "y'"], "['x', 'y''']")])
def test_sql_literal(value, literal):
    assert q.sql_literal(value) == literal


def test_every_query_binds_exactly_its_placeholders():
    for query in vars(q).values():
        if isinstance(query, q.NamedQuery):
            assert query.sql.count("?") == len(query.params), query.name
