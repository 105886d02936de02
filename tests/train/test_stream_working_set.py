"""The trainer's store reader: the run's rows are copied once at plan time, and a step reads only its own.

Reference: the rows the store's SQL views give for the same units (the query each step used to run),
so the groups a run trains on are unchanged.
"""

from __future__ import annotations

import shutil

import pytest

from dypo_data.store import ShardWriter, connect
from dypo_data.store.queries import fetch_arrow
from dypo_train.stream.reader import StoreStream
from tests.store_factory import build_store

VIEW_ROLLOUTS = """
    SELECT group_id, trace_id, sample_idx, prompt_token_ids, completion_token_ids, completion_logprobs, reward, correct
    FROM scored_traces WHERE role = 'policy' AND list_contains(?, group_id) ORDER BY group_id, sample_idx, trace_id
"""
VIEW_TEACHERS = """
    SELECT prompt_id, trace_id, model, completion FROM teacher_pool
    WHERE list_contains(?, prompt_id) AND list_contains(?, model) ORDER BY prompt_id, model, trace_id
"""
VIEW_PROMPTS = "SELECT prompt_id, messages, answer FROM prompts WHERE list_contains(?, prompt_id)"


def view_groups(root, units: list[str], unit_kind: str, teachers: list[str]) -> list[tuple]:
    """What the views hold for `units`, in the shape of the stream's PromptGroups."""
    con = connect(root)
    try:
        rollouts: dict[str, list] = {}
        prompt_of = {u: u for u in units}
        if unit_kind == "group":
            prompt_of = {}
            for r in fetch_arrow(con, VIEW_ROLLOUTS.replace("group_id, trace_id", "group_id, prompt_id, trace_id"), [units]).to_pylist():
                reward = None if r["correct"] is None else float(r["reward"])
                rollouts.setdefault(r["group_id"], []).append((r["trace_id"], r["sample_idx"], list(r["prompt_token_ids"] or []),
                                                               list(r["completion_token_ids"] or []), r["completion_logprobs"], reward))
                prompt_of[r["group_id"]] = r["prompt_id"]
        pids = sorted(set(prompt_of.values()))
        prompts = {r["prompt_id"]: r for r in fetch_arrow(con, VIEW_PROMPTS, [pids]).to_pylist()}
        pool: dict[str, list] = {}
        for r in fetch_arrow(con, VIEW_TEACHERS, [pids, teachers]).to_pylist():
            pool.setdefault(r["prompt_id"], []).append((r["trace_id"], r["model"], r["completion"]))
    finally:
        con.close()
    return [(prompt_of[u], prompts[prompt_of[u]]["messages"], prompts[prompt_of[u]]["answer"], rollouts.get(u, []),
             pool.get(prompt_of[u], [])) for u in units]


def stream_groups(stream: StoreStream, units: list[str]) -> list[tuple]:
    return [(g.prompt_id, g.messages, g.answer,
             [(r.trace_id, r.sample_idx, r.prompt_token_ids, r.completion_token_ids, r.logprobs, r.reward) for r in g.rollouts],
             [(t.trace_id, t.model, t.completion) for t in g.teachers]) for g in stream.read(units)]


@pytest.fixture
def store(tmp_path):
    fs = build_store(tmp_path / "st")
    # an interrupted-and-resumed run wrote some rollouts twice: the views (and the stream) count them once
    policy = [r for r in fs.traces if r["role"] == "policy"][:6]
    import pyarrow as pa

    from dypo_data.contracts import TRACES
    ShardWriter(fs.root, "again").write("traces", pa.Table.from_pylist(policy, schema=TRACES))
    return fs


@pytest.mark.parametrize("unit_kind", ["group", "teacher_prompt", "prompt"])
def test_every_step_reads_what_the_views_hold(store, unit_kind):
    stream = StoreStream(store.root, unit_kind=unit_kind, seed=3)
    try:
        units = stream.plan.units
        assert stream_groups(stream, units) == view_groups(store.root, units, unit_kind, stream.plan.teachers)
        for step in range(3):  # shuffled batches, in the order given
            batch = stream.units_for_step(step, 3)
            assert stream_groups(stream, batch) == view_groups(store.root, batch, unit_kind, stream.plan.teachers)
        if unit_kind == "group":
            assert all(len(g.rollouts) == 4 for g in stream.read(units))  # duplicated rows are not read twice
    finally:
        stream.close()


def test_a_step_reads_only_its_rows_and_never_the_store(store, tmp_path):
    stream = StoreStream(store.root, unit_kind="group", teachers=["teacher-r1-7b"])
    try:
        expected = view_groups(store.root, stream.units_for_step(1, 2), "group", ["teacher-r1-7b"])
        moved = tmp_path / "moved"
        shutil.move(store.root, moved)  # planned: no step opens a file of the store
        before = stream.rows.rows_read
        batch = stream.units_for_step(1, 2)
        assert stream_groups(stream, batch) == expected
        rows = sum(len(rollouts) + len(teachers) + 1 for _, _, _, rollouts, teachers in expected)  # + 1: the prompt
        assert stream.rows.rows_read - before == rows == 2 * 4 + 2 + sum(len(e[4]) for e in expected)
    finally:
        stream.close()


def test_the_working_set_is_removed_on_close(store):
    stream = StoreStream(store.root, unit_kind="group")
    folder = stream.rows.dir.path
    assert any(folder.iterdir())
    stream.close()
    assert not folder.exists()


def test_a_planned_run_lets_a_compaction_finish_and_keeps_reading(store):
    from dypo_data.jobs.compact import CompactConfig, run_compact

    stream = StoreStream(store.root, unit_kind="group")
    try:
        expected = stream_groups(stream, stream.plan.units)
        stats = run_compact(CompactConfig(store=str(store.root)))
        assert stats.counts["shards_merged"] > 0
        assert stats.counts["replaced_shards_kept"] == 0  # the stream holds no lock on the store once planned
        assert stream_groups(stream, stream.plan.units) == expected
        assert view_groups(store.root, stream.plan.units, "group", stream.plan.teachers) == expected
    finally:
        stream.close()
