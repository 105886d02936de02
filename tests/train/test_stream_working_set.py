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


def _plan_in_a_process(root, started, release, out) -> None:
    """A process planning the same run: reports whether it built the working set and what a step reads."""
    stream = StoreStream(root, unit_kind="group", teachers=["teacher-r1-7b"])
    started.wait()  # every process has planned before any closes
    out.put((stream.rows.built, str(stream.rows.dir.path), stream_groups(stream, stream.units_for_step(1, 3))))
    release.wait()
    stream.close()


def test_processes_planning_the_same_rows_share_one_working_set(store):
    """The ranks of a run on one machine: one copies the rows, the others wait and map the same files."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    started, release, out = ctx.Barrier(3), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_plan_in_a_process, args=(str(store.root), started, release, out)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        started.wait(timeout=120)
        reports = [out.get(timeout=60) for _ in procs]
    finally:
        release.set()
        for p in procs:
            p.join(timeout=60)
    assert sorted(built for built, _, _ in reports) == [False, True]
    assert len({path for _, path, _ in reports}) == 1
    assert reports[0][2] == reports[1][2] and reports[0][2]
    assert all(p.exitcode == 0 for p in procs)
    from pathlib import Path

    assert not Path(reports[0][1]).exists()  # the last to close removed it


def test_streams_of_one_process_share_until_the_last_closes(store):
    first = StoreStream(store.root, unit_kind="group")
    second = StoreStream(store.root, unit_kind="group")
    try:
        assert first.rows.built and not second.rows.built and first.rows.dir.path == second.rows.dir.path
        units = first.plan.units
        expected = view_groups(store.root, units, "group", first.plan.teachers)
        assert stream_groups(second, units) == stream_groups(first, units) == expected
        first.close()
        assert second.rows.dir.path.exists() and stream_groups(second, units[:2])
    finally:
        second.close()
    assert not first.rows.dir.path.exists()


def test_a_store_that_changed_is_copied_again(store):
    import pyarrow as pa

    from dypo_data.contracts import VERDICTS

    first = StoreStream(store.root, unit_kind="group")
    try:
        import datetime as dt

        later = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)  # the newest verdict of a trace counts
        policy = {t["trace_id"] for t in store.traces if t["role"] == "policy"}
        regraded = [dict(v, verdict_id=v["verdict_id"] + "-again", correct=not v["correct"], reward=1.0 - v["reward"],
                         created_at=later) for v in store.verdicts if v["correct"] is not None and v["trace_id"] in policy][:4]
        ShardWriter(store.root, "regrade").write("verdicts", pa.Table.from_pylist(regraded, schema=VERDICTS))
        second = StoreStream(store.root, unit_kind="group")
        try:
            assert second.rows.built and second.rows.dir.path != first.rows.dir.path
            units = second.plan.units
            assert stream_groups(second, units) == view_groups(store.root, units, "group", second.plan.teachers)
            assert stream_groups(first, units) != stream_groups(second, units)  # the first keeps its own rows
        finally:
            second.close()
    finally:
        first.close()


def test_a_working_set_left_half_written_is_built_again(store):
    stream = StoreStream(store.root, unit_kind="group")
    folder, units = stream.rows.dir.path, stream.plan.units
    expected = stream_groups(stream, units)
    stream.close()
    folder.mkdir()  # as a builder killed mid-copy leaves it: the lock file and a partial file, not ready
    (folder / ".lock").touch()
    (folder / "rollouts.arrow").write_bytes(b"partial")
    again = StoreStream(store.root, unit_kind="group")
    try:
        assert again.rows.built and again.rows.dir.path == folder
        assert stream_groups(again, units) == expected
    finally:
        again.close()
