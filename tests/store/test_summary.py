"""`dypo-data stats` reads one copy of the traces' small columns: the same answers as the views."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from dypo_data.contracts import TRACES, VERDICTS
from dypo_data.jobs.inspect import collect_stats
from dypo_data.store import ShardWriter, connect, queries
from dypo_data.store.summary import summary_views
from tests.store_factory import build_store


def _from_views(root):
    con = connect(root)
    try:
        hard, covered = queries.hard_prompt_coverage(con)
        return (queries.model_stats(con), queries.source_stats(con), queries.tier_stats(con),
                queries.status_counts(con), hard, covered)
    finally:
        con.close()


def test_stats_equal_the_views_and_the_ground_truth(tmp_path):
    fs = build_store(tmp_path)
    again = ShardWriter(fs.root, "again")  # a resumed run wrote some rows a second time
    again.write("traces", pa.Table.from_pylist(fs.traces[:7], schema=TRACES))
    again.write("verdicts", pa.Table.from_pylist(fs.verdicts[:3], schema=VERDICTS))
    stats = collect_stats(str(fs.root))
    models, sources, tiers, statuses, hard, covered = _from_views(fs.root)
    assert stats.models.equals(models) and stats.sources.equals(sources) and stats.tiers.equals(tiers)
    assert (stats.statuses, stats.hard_prompts, stats.hard_with_teacher) == (statuses, hard, covered)
    # and against the store's ground truth, computed without SQL
    rows = {r["role"] + "/" + r["model"]: r for r in stats.models.to_pylist()}
    for key, n in Counter(t["role"] + "/" + t["model"] for t in fs.traces).items():
        assert rows[key]["traces"] == n
    chars = [len(t["completion"]) for t in fs.traces if t["role"] == "policy"]
    assert rows[f"policy/{fs.traces[-1]['model']}"]["mean_chars"] == round(sum(chars) / len(chars), 1)
    tier_row = stats.tiers.to_pylist()[0]
    for tier, n in Counter(fs.tiers.values()).items():
        assert tier_row[tier] == n
    assert stats.hard_prompts == Counter(fs.tiers.values())["hard"]
    assert stats.hard_with_teacher == stats.hard_prompts - 1  # one hard prompt has no correct teacher trace


def test_the_connection_reads_the_store_again_after_the_summary(tmp_path):
    fs = build_store(tmp_path)
    con = connect(fs.root)
    try:
        with summary_views(con):
            copied = con.execute("SELECT count(*) FROM groups").fetchone()[0]
            assert "completion" not in [c[0] for c in con.execute("DESCRIBE scored_traces").fetchall()]
        assert con.execute("SELECT count(*) FROM groups").fetchone()[0] == copied == len(fs.tiers)
        assert "completion" in [c[0] for c in con.execute("DESCRIBE scored_traces").fetchall()]
        with summary_views(con):  # twice on one connection
            assert con.execute("SELECT count(*) FROM teacher_pool").fetchone()[0] == len(fs.teacher_pool)
    finally:
        con.close()


def test_stats_of_an_empty_store(tmp_path):
    stats = collect_stats(str(tmp_path))
    assert stats.models.num_rows == 0 and stats.statuses == {} and stats.hard_prompts == 0
