"""VerifierPool with the real math-verify: benchmark golds, real hangs, killed workers, parity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from grading_cases import POWER_TOWER, benchmark_golds

from dypo_data.contracts import VerdictStatus
from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool, grade_one

# Benchmark golds that `\boxed{gold}` does not match, with the reason. A new failure, or one of
# these starting to pass, fails the test below: update this list with the reason.
KNOWN_GOLD_FAILURES = {
    ("minervamath.jsonl", 73): "the gold holds a stray '$ $' inside ('x_{0} \\cos (\\omega t)+$ $\\dot{x}_{0} ...'), "
                               "so it is read as delimited text and math-verify parses only its second half",
}


def normal_items(n: int, prefix: str = "n") -> list[GradeItem]:
    return [GradeItem(f"{prefix}{i}", str(i), f"Summing up, the total is \\boxed{{{i}}}.") for i in range(n)]


def wait_until_dead(pid: int, limit_s: float = 10.0) -> None:
    """Until `pid` and all its threads have exited, so that its parent can reap it (Linux /proc)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
            if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still running")


def test_every_benchmark_gold_matches_its_own_box(pool):
    golds = benchmark_golds()
    items = [GradeItem(f"{name}:{line}", gold, "\\boxed{" + gold + "}") for name, line, gold in golds]
    grades = list(pool.grade(items))
    assert sorted(g.key for g in grades) == sorted(i.key for i in items)
    failed = {tuple(g.key.rsplit(":", 1)) for g in grades if g.correct is not True}
    failed = {(name, int(line)) for name, line in failed}
    assert failed == set(KNOWN_GOLD_FAILURES), {g for g in grades if g.correct is not True}
    assert len(golds) - len(failed) >= 871


def test_pool_equals_grade_one_on_a_mixed_sample(pool):
    golds = [gold for _, _, gold in benchmark_golds()[::29]]
    items = []
    for i, gold in enumerate(golds):
        items += [
            GradeItem(f"right{i}", gold, f"Working it out step by step, the result is $\\boxed{{{gold}}}$."),
            GradeItem(f"wrong{i}", gold, f"I get \\boxed{{{gold}}}. Wait, I am off by one: \\boxed{{{i} + 1}}."),
            GradeItem(f"plain{i}", gold, f"The answer is {i * 7}."),
            GradeItem(f"none{i}", gold, "I cannot finish this."),
        ]
    items.append(GradeItem("malformed", "5", "\\boxed{\\frac{}{}}"))
    in_process = {it.key: grade_one(it.gold, it.completion, pool.config) for it in items}
    for grade in pool.grade(items):
        expected = in_process[grade.key]
        assert (grade.status, grade.correct, grade.reward, grade.extracted_answer) == \
               (expected.status, expected.correct, expected.reward, expected.extracted_answer), grade.key
    statuses = {g.status for g in in_process.values()}
    assert {VerdictStatus.OK, VerdictStatus.NO_ANSWER, VerdictStatus.PARSE_ERROR} <= statuses


def test_items_are_pulled_lazily_and_every_item_comes_back(pool):
    pulled = []

    def source():
        for item in normal_items(30):
            pulled.append(item.key)
            yield item

    grades = pool.grade(source())
    first = next(grades)
    assert len(pulled) < 30  # streaming: not everything was taken before the first result
    rest = list(grades)
    assert sorted(g.key for g in [first, *rest]) == sorted(f"n{i}" for i in range(30))
    assert all(g.correct for g in [first, *rest])


def test_stopping_early_leaves_the_pool_usable(pool):
    for grade in pool.grade(normal_items(20, "early")):
        break
    grades = list(pool.grade(normal_items(6, "again")))
    assert sorted(g.key for g in grades) == [f"again{i}" for i in range(6)]
    assert all(g.correct for g in grades)


def test_one_grade_at_a_time(pool):
    first = pool.grade(normal_items(5, "one"))
    next(first)
    with pytest.raises(RuntimeError, match="already running"):
        next(pool.grade(normal_items(1, "two")))
    assert len(list(first)) == 4


def test_a_real_hang_times_out_and_its_neighbours_are_graded():
    items = normal_items(8, "before") + [GradeItem("tower", "3", POWER_TOWER)] + normal_items(8, "after")
    started = time.monotonic()
    with VerifierPool(VerifierConfig(workers=2, timeout_s=2.0)) as pool:
        pids = pool.worker_pids()
        grades = {g.key: g for g in pool.grade(items)}
        assert pool.counters["killed_timeout"] == 0  # the worker stopped the item itself...
        assert pool.counters["recycled_after_timeout"] == 1  # ...and was then replaced by a fresh one
        assert len(set(pids) - set(pool.worker_pids())) == 1
    tower = grades.pop("tower")
    assert (tower.status, tower.correct, tower.reward) == (VerdictStatus.TIMEOUT, None, None)
    assert tower.extracted_answer == "9^{9^{9^{9}}}"
    assert 1.9 <= tower.seconds < 3.0
    assert len(grades) == 16
    assert all(g.status is VerdictStatus.OK and g.correct for g in grades.values()), \
        [g for g in grades.values() if not g.correct]
    assert time.monotonic() - started < 20


def test_a_worker_that_stops_answering_is_killed_at_the_hard_limit():
    # SIGSTOP freezes the worker in the middle of the power tower, as a computation stuck inside C
    # code would: its own timer cannot fire, so only the parent's hard limit ends the item.
    items = [GradeItem("tower", "3", POWER_TOWER)] + normal_items(5)
    with VerifierPool(VerifierConfig(workers=1, timeout_s=2.0)) as pool:
        (pid,) = pool.worker_pids()
        grades = pool.grade(items)
        freezer = threading.Timer(0.3, os.kill, (pid, signal.SIGSTOP))
        freezer.start()
        started = time.monotonic()
        results = {g.key: g for g in grades}
        freezer.join()
        assert pool.counters["killed_timeout"] == 1 and pool.worker_pids() != [pid]
    tower = results.pop("tower")
    assert tower.status is VerdictStatus.TIMEOUT and tower.correct is None
    assert pool.hard_timeout_s <= tower.seconds < pool.hard_timeout_s + 1.0
    assert sorted(results) == [f"n{i}" for i in range(5)] and all(g.correct for g in results.values())
    assert time.monotonic() - started < 20


def grade_killing_the_worker(items: list[GradeItem], after_s: float, config: VerifierConfig) -> dict:
    """Grade `items` on a one-worker pool whose worker gets SIGKILL (what the kernel's OOM killer
    sends) `after_s` into the run; the grades by key. Asserts the death was counted once."""
    with VerifierPool(config) as pool:
        (pid,) = pool.worker_pids()
        killer = threading.Timer(after_s, os.kill, (pid, signal.SIGKILL))
        killer.start()
        results = {g.key: g for g in pool.grade(items)}
        killer.join()
        assert pool.counters["worker_died"] == 1
    return results


def test_a_killed_worker_is_replaced_and_only_its_item_is_lost():
    # SIGKILL while the worker grades the tower
    items = [GradeItem("tower", "3", POWER_TOWER)] + normal_items(5)
    results = grade_killing_the_worker(items, 0.3, VerifierConfig(workers=1, timeout_s=30.0))
    tower = results.pop("tower")
    assert (tower.status, tower.correct, tower.reward) == (VerdictStatus.ERROR, None, None)
    assert sorted(results) == [f"n{i}" for i in range(5)] and all(g.correct for g in results.values())


def test_a_killed_worker_loses_only_its_item_not_the_results_it_held():
    # The worker sends results in groups: the three items before the tower are done but not yet
    # sent when the kill comes. The worker's shared progress names the tower as the item it was
    # grading, so only the tower is lost; the three are graded again by the fresh worker.
    items = normal_items(3, "held") + [GradeItem("tower", "3", POWER_TOWER)] + normal_items(3, "queued")
    results = grade_killing_the_worker(items, 0.5, VerifierConfig(workers=1, timeout_s=30.0, queue_depth=8))
    tower = results.pop("tower")
    assert (tower.status, tower.correct) == (VerdictStatus.ERROR, None)
    assert 0.4 <= tower.seconds < 5.0  # timed from when the worker started the tower
    assert sorted(results) == [f"held{i}" for i in range(3)] + [f"queued{i}" for i in range(3)]
    assert all(g.correct for g in results.values())


def test_an_idle_worker_killed_between_runs_is_replaced():
    with VerifierPool(VerifierConfig(workers=2)) as pool:
        victim = pool.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until_dead(victim)
        grades = list(pool.grade(normal_items(10)))
        assert pool.counters["respawns"] >= 1 and victim not in pool.worker_pids()
    assert sorted(g.key for g in grades) == sorted(f"n{i}" for i in range(10))
    assert all(g.correct for g in grades), [g for g in grades if not g.correct]  # nothing was in flight


def test_importing_grading_does_not_import_math_verify():
    code = "import sys, dypo_data.grading; sys.exit('math_verify' in sys.modules or 'sympy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_closed_pool_refuses_work():
    pool = VerifierPool(VerifierConfig(workers=1))
    pids = pool.worker_pids()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(pool.grade(normal_items(1)))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
