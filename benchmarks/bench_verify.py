"""Throughput of grading: plain math-verify in one process against VerifierPool with 1 and 2 workers.

The items are the real gold answers of ../shared/benchmarks, each with two or three completions
in a row (as the rollouts of one prompt arrive), short worked solutions ending in one of six ways:
a correct box, a wrong box, a wrong box corrected by a later one, a wrong "Answer:" corrected by
a later "the answer is" (plain math-verify keeps the first, the pool grades the last), an unboxed
"final answer is", or no answer. About 2,000 pairs. Each side is timed over all items `--repeats`
times, the sides taking turns, and the best pass is reported (the one least disturbed by other
work on a shared machine), with the median beside it.

- plain:   `verify(parse(gold), parse(completion))` in a loop, in this process, with math-verify's
           defaults (its own signal timeouts); the gold wrapped in `$...$` as the pool does.
- pool-1, pool-2: `VerifierPool(VerifierConfig(workers=N)).grade(items)`. Every pass starts a
           fresh pool (start-up timed apart), so that no worker has cached a timed item.
- split-2: the machine's ceiling for two processes: two fresh processes, each grading its half
           of the items (split by gold, as the pool routes them) with `grade_one`, no pool, no
           pipes; timed from the moment both start to the moment both are done.

Each side first grades, untimed, `--warmup` pairs over 300 golds that the timed pairs do not use:
a new process is slower on LaTeX it has not met yet (ANTLR builds its prediction tables lazily,
per process), so without it the numbers would mix start-up into the steady state of a long verify
job. That first pass is timed too and reported as "first/s".

    python benchmarks/bench_verify.py
    python benchmarks/bench_verify.py --items 4000 --repeats 5

The last line printed is one JSON object with the metrics, device, versions and config.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool, verifier_version
from dypo_data.grading.extract import gold_latex

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
TARGET_SPEEDUP = 1.8
SIDES = ("plain", "pool-1", "pool-2", "split-2")

_STEPS = [
    "First we restate the problem in terms of the unknown quantity and list what is given.",
    "Substituting the known values and simplifying both sides gives a cleaner expression.",
    "We check the boundary cases separately, since the general formula breaks down there.",
    "Collecting like terms and cancelling the common factor leaves a single equation.",
    "A quick sanity check with small numbers agrees with the general computation.",
]
_SHAPES = {"right": 42, "wrong": 24, "corrected": 10, "reanswered": 6, "unboxed": 12, "none": 6}


def _completion(rng: random.Random, shape: str, gold: str, other: str) -> str:
    ending = {
        "right": f"Therefore, the final answer is $\\boxed{{{gold}}}$.",
        "wrong": f"Therefore, the final answer is $\\boxed{{{other}}}$.",
        "corrected": f"So we get $\\boxed{{{other}}}$. Wait, I dropped a term; redoing it gives $\\boxed{{{gold}}}$.",
        "reanswered": f"Answer: ${other}$. Hmm, that fails the check above; so the answer is ${gold}$.",
        "unboxed": f"The final answer is ${gold}$.",
        "none": "I could not finish the computation in time.",
    }[shape]
    steps = rng.sample(_STEPS, k=rng.randint(2, 4))
    return "Let's think step by step.\n\n" + "\n\n".join(steps) + "\n\n" + ending


def _items(golds: list[str], n: int, seed: int, prefix: str) -> list[GradeItem]:
    """`n` pairs over `golds`: the completions of four golds at a time, shuffled among themselves
    (rollouts of a few prompts arriving interleaved)."""
    rng = random.Random(seed)
    base, extra = divmod(n, len(golds))
    items: list[GradeItem] = []
    for start in range(0, len(golds), 4):
        chunk = []
        for index in range(start, min(start + 4, len(golds))):
            for _ in range(base + (index < extra)):
                shape = rng.choices(list(_SHAPES), weights=list(_SHAPES.values()))[0]
                gold, other = golds[index], rng.choice(golds)
                key = f"{prefix}{len(items) + len(chunk)}-{shape}"
                chunk.append(GradeItem(key, gold, _completion(rng, shape, gold, other)))
        rng.shuffle(chunk)
        items += chunk
    return items


def build_items(n: int, warmup: int, seed: int) -> tuple[list[GradeItem], list[GradeItem]]:
    """(timed, warm-up): about `n` pairs over most benchmark golds, about 60% of them correct, and
    `warmup` pairs over the first 300 golds, which the timed pairs do not use."""
    golds = [json.loads(line)["answer"] for path in sorted(BENCHMARKS.glob("*.jsonl"))
             for line in path.read_text().splitlines() if line.strip()]
    if len(golds) < 400:
        sys.exit(f"expected the benchmark files in {BENCHMARKS}")
    random.Random(seed).shuffle(golds)
    return _items(golds[300:], n, seed, "b"), _items(golds[:300], warmup, seed + 1, "w")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_plain(items: list[GradeItem]) -> tuple[float, dict[str, bool]]:
    from math_verify import parse, verify

    started = time.perf_counter()
    verdicts = {it.key: verify(parse(gold_latex(it.gold)), parse(it.completion)) for it in items}
    return time.perf_counter() - started, verdicts


def run_pool(workers: int, items: list[GradeItem], warmup: list[GradeItem], timeout_s: float) -> dict:
    """One pass on a fresh pool: start-up and warm-up untimed, then the items."""
    t0 = time.perf_counter()
    with VerifierPool(VerifierConfig(workers=workers, timeout_s=timeout_s)) as pool:
        start_s = time.perf_counter() - t0
        first_started = time.perf_counter()
        list(pool.grade(warmup))
        first_s = time.perf_counter() - first_started
        pids = pool.worker_pids()
        workers_cpu, parent_cpu = sum(_cpu_seconds(pid) for pid in pids), time.process_time()
        started = time.perf_counter()
        grades = {g.key: (g.status.value, g.correct) for g in pool.grade(items)}
        seconds = time.perf_counter() - started
        cpu = {"parent": time.process_time() - parent_cpu,
               "workers": sum(_cpu_seconds(pid) for pid in pids) - workers_cpu}
    return {"seconds": seconds, "start_s": start_s, "first_s": first_s, "cpu": cpu, "grades": grades}


def _split_part(part: int, parts: int, n: int, warmup: int, seed: int, barrier, results) -> None:
    from dypo_data.grading import grade_one
    from dypo_data.grading.worker import WARMUP

    config = VerifierConfig()
    items, warm = build_items(n, warmup, seed)
    for gold, completion in WARMUP:
        grade_one(gold, completion, config)
    first_started = time.perf_counter()
    for it in warm:
        grade_one(it.gold, it.completion, config)
    first_s = time.perf_counter() - first_started
    mine = [it for it in items if zlib.crc32(it.gold.encode()) % parts == part]
    barrier.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for it in mine:
        grade_one(it.gold, it.completion, config)
    results.put((started, time.perf_counter(), time.process_time() - cpu, first_s))


def run_split(parts: int, args: argparse.Namespace) -> dict:
    """`parts` independent processes, each grading its share in-process; CPU-bound ceiling of the pool."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(parts), ctx.Queue()
    procs = [ctx.Process(target=_split_part, args=(i, parts, args.items, args.warmup, args.seed, barrier, results))
             for i in range(parts)]
    for proc in procs:
        proc.start()
    done = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    seconds = max(end for _, end, _, _ in done) - min(start for start, _, _, _ in done)
    return {"seconds": seconds, "start_s": 0.0, "first_s": max(f for *_, f in done),
            "cpu": {"parent": 0.0, "workers": sum(c for _, _, c, _ in done)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=2000, help="number of (gold, completion) pairs")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each side, taking turns")
    p.add_argument("--warmup", type=int, default=900, help="pairs over other golds each side grades first")
    p.add_argument("--timeout", type=float, default=5.0, help="per-item timeout of the pool (s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    items, warmup = build_items(args.items, args.warmup, args.seed)
    chars = statistics.mean(len(it.completion) for it in items)
    plain_first_s, _ = run_plain(warmup)
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        seconds, plain_verdicts = run_plain(items)
        runs["plain"].append({"seconds": seconds, "start_s": 0.0, "first_s": plain_first_s,
                              "cpu": {"parent": seconds, "workers": 0.0}})
        for workers in (1, 2):
            runs[f"pool-{workers}"].append(run_pool(workers, items, warmup, args.timeout))
        runs["split-2"].append(run_split(2, args))

    best = {side: min(runs[side], key=lambda r: r["seconds"]) for side in SIDES}
    rate = {side: len(items) / best[side]["seconds"] for side in SIDES}
    median_rate = {side: len(items) / statistics.median(r["seconds"] for r in runs[side]) for side in SIDES}
    first_rate = {side: len(warmup) / min(r["first_s"] for r in runs[side]) for side in SIDES}
    speedup = rate["pool-2"] / rate["pool-1"]
    ceiling = rate["split-2"] / rate["pool-1"]
    results = best["pool-1"]["grades"]
    if best["pool-2"]["grades"] != results:
        print("warning: pool-2 and pool-1 disagree on some items", file=sys.stderr)
    statuses: dict[str, int] = {}
    for status, _ in results.values():
        statuses[status] = statuses.get(status, 0) + 1
    ours = sum(1 for _, correct in results.values() if correct)
    plain = sum(plain_verdicts.values())
    differ = sum(1 for key, (_, correct) in results.items() if bool(correct) != plain_verdicts[key])

    print(f"{len(items)} items, mean completion {chars:.0f} chars, {os.cpu_count()} CPUs, "
          f"best of {args.repeats} passes, load average {os.getloadavg()[0]:.1f}")
    print(f"{'side':<8} {'items/s':>9} {'median/s':>9} {'first/s':>8} {'best s':>8} {'start s':>8} "
          f"{'vs plain':>9} {'ms CPU/item':>12}")
    for side in SIDES:
        r = best[side]
        cpu_ms = 1000 * (r["cpu"]["workers"] + r["cpu"]["parent"]) / len(items)
        print(f"{side:<8} {rate[side]:>9.1f} {median_rate[side]:>9.1f} {first_rate[side]:>8.1f} {r['seconds']:>8.2f} "
              f"{r['start_s']:>8.2f} "
              f"{rate[side] / rate['plain']:>9.2f} {cpu_ms:>12.2f}")
    verdict = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
    print(f"speedup pool-2 / pool-1: {speedup:.2f} (target >= {TARGET_SPEEDUP}: {verdict}); "
          f"two bare processes on this machine: {ceiling:.2f}")
    print(f"correct: pool {ours}, plain {plain}; they differ on {differ} items "
          f"(the pool grades the last stated answer); statuses {statuses}")
    print(json.dumps({
        "metrics": {
            "items": len(items),
            "items_per_s": rate,
            "items_per_s_median": median_rate,
            "items_per_s_first_pass": first_rate,
            "speedup_2_vs_1_first_pass": first_rate["pool-2"] / first_rate["pool-1"],
            "seconds": {side: [r["seconds"] for r in runs[side]] for side in SIDES},
            "start_s": {side: [r["start_s"] for r in runs[side]] for side in SIDES[1:]},
            "cpu_s_best_pass": {side: best[side]["cpu"] for side in SIDES},
            "speedup_2_vs_1": speedup,
            "speedup_split_2_vs_pool_1": ceiling,
            "ratio_to_plain": {side: rate[side] / rate["plain"] for side in SIDES[1:]},
            "target_speedup": TARGET_SPEEDUP,
            "statuses": statuses,
            "correct": {"pool": ours, "plain": plain, "differ": differ},
        },
        "device": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "load_avg_1m": os.getloadavg()[0]},
        "versions": {"verifier": verifier_version(), "python": platform.python_version()},
        "config": {"items": len(items), "repeats": args.repeats, "warmup": args.warmup,
                   "timeout_s": args.timeout, "seed": args.seed, "mean_completion_chars": round(chars)},
    }))


if __name__ == "__main__":
    main()
