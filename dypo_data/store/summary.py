"""The store's summary (`dypo-data stats`) from one deduplicating pass over its traces.

The summary asks several questions of `scored_traces`, `groups` and `teacher_pool`; asked of the
views, each would deduplicate every trace again (the views' QUALIFY over all shards). Here the
columns those questions read (a completion's length, never its text) are copied once into an
in-memory database beside the store's views, the derived views are defined there over the copy
with the views' own SQL, and the questions run unchanged against them.

    with reading(root) as con, summary_views(con):
        fetch_arrow(con, TIER_STATS)      # reads the copy, not the shards

Memory: one row of ids, flags and numbers per trace (about 150 bytes; ~150 MB for a million traces).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from dypo_data.store.views import DERIVED_VIEWS

SUMMARY_DB = "store_summary"
# What the summary's questions read of scored_traces (queries.py: MODEL_STATS, SOURCE_STATS, TIER_STATS,
# HARD_PROMPTS_WITH_TEACHER), and the groups and teacher_pool views' own SQL.
_COPIED = ("role, model, prompt_id, group_id, policy_version, settings_hash, prompt_source, num_tokens, "
           "status, correct, reward, length(completion) AS completion_chars")


@contextmanager
def summary_views(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Within: `scored_traces`, `groups` and `teacher_pool` (with only the columns above, and
    `completion_chars` in place of `completion`) read one in-memory copy; `latest_verdicts` and the
    raw tables are the store's views. `con` must be a connection from `views.connect`."""
    home = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"ATTACH ':memory:' AS {SUMMARY_DB}")
    try:
        con.execute(f"CREATE TABLE {SUMMARY_DB}.scored_traces AS SELECT {_COPIED} FROM {home}.main.scored_traces")
        con.execute(f"USE {SUMMARY_DB}")
        for name in ("groups", "teacher_pool"):
            con.execute(f"CREATE VIEW {name} AS {DERIVED_VIEWS[name]}")
        con.execute(f"CREATE VIEW latest_verdicts AS SELECT * FROM {home}.main.latest_verdicts")
        yield
    finally:
        con.execute(f"USE {home}")
        con.execute(f"DETACH {SUMMARY_DB}")
