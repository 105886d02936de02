"""The store at scale: each operation of a training data path against plain DuckDB over the same files.

Stores of 2k, 20k and 100k prompts in the project's own format and shard sizes (see scale_store.py:
k = 8 policy rollouts of ~400 tokens with token ids and logprobs, 2 teacher traces per prompt, all
verified) are built once and cached under `--cache` (deterministic for a size and seed, so a cached
copy is the same store); `--compacted` sizes are also measured after `dypo-data compact` (on a copy
made of hard links). A store of 10,000 tiny shards times opening alone. Operations:

    open      connect(): the store's views (dypo) / views over `STORE/<table>/*.parquet` (plain)
    tiers     the tier counts of the groups view, after open
    stats     `dypo-data stats` end to end (collect_stats) / the same five questions without the
              views' deduplication, end to end
    plan      the offline trainer's plan (StoreStream: open, teacher names, unit ids, and since the
              working set, copying the run's rows out of the store: one pass) / the unit ids
    step      one training step's read of 64 groups (rollouts with token ids, logprobs and rewards,
              prompts, teacher pool), after the plan, median over `--repeats` steps / the same rows
    unscored  verify's "what has no verdict under these settings", after open

Every (operation, side, store) runs in a fresh process (so its peak memory, VmHWM, is its own);
times are the median of `--repeats` runs inside that process (the first is printed apart when it
differs much: a cold cache). Plain DuckDB returns Arrow tables; dypo's step read returns the
trainer's Python objects. The ratio is dypo / plain (target: stats, tiers and unscored <= 2 at
100k; a step read <= 50 ms at 20k and 100k, the 100k one within 1.5x of the 2k one; a 10k-shard
store opens in <= 1 s).

    python benchmarks/bench_store.py                       # 2k, 20k, 100k (builds what is not cached)
    python benchmarks/bench_store.py --sizes 2000,20000    # skip the 3 GB store
    python benchmarks/bench_store.py --ops step,plan

The last line printed is one JSON object with the metrics, device, versions and config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from bench_common import cached_build, print_result, run_child  # noqa: E402

CACHE_VERSION = 1
OPS = ("open", "tiers", "stats", "plan", "step", "unscored")
STEP_GROUPS = 64
TABLES = ("prompts", "traces", "verdicts", "train_metrics", "train_samples", "eval_results")


# -- stores ----------------------------------------------------------------------------------------

def cached_store(cache: Path, n_prompts: int, seed: int) -> tuple[Path, float]:
    """The store for (n_prompts, seed), built into the cache unless already there; (path, build seconds)."""
    from scale_store import build_scale_store

    return cached_build(cache, f"scale-v{CACHE_VERSION}-n{n_prompts}-s{seed}",
                        lambda tmp: build_scale_store(tmp, n_prompts=n_prompts, seed=seed))


def many_shards_store(cache: Path, n_shards: int) -> Path:
    """A store of `n_shards` one-row prompt shards (a long run's leftovers), built once."""
    import pyarrow as pa

    import store_factory as sf
    from dypo_data.contracts import PROMPTS
    from dypo_data.store import ShardWriter
    from scale_store import _problems

    def build(tmp: Path) -> None:
        row = sf._prompt_row(_problems(1, random.Random(0))[0])
        first = ShardWriter(tmp, "many").write("prompts", pa.Table.from_pylist([row], schema=PROMPTS))
        for i in range(1, n_shards):  # the same bytes under new names: opening cost depends on files, not rows
            shutil.copyfile(first, first.with_name(f"part-many-{i:06d}.parquet"))

    return cached_build(cache, f"shards-v{CACHE_VERSION}-{n_shards}", build)[0]


def compacted_store(cache: Path, root: Path) -> tuple[Path, float]:
    """`root` after `dypo-data compact` (default settings), built once from hard links to its shards
    (compaction only adds files and removes names, so the original store stays as it was)."""
    from dypo_data.jobs.compact import CompactConfig, run_compact

    def build(tmp: Path) -> None:
        for table in TABLES:
            if (root / table).is_dir():
                (tmp / table).mkdir(parents=True)
                for path in (root / table).glob("*.parquet"):
                    os.link(path, tmp / table / path.name)
        run_compact(CompactConfig(store=str(tmp)))

    return cached_build(cache, f"{root.name}-compacted", build)


# -- the operations, in a child process -------------------------------------------------------------

PLAIN_GROUPS = """
    SELECT group_id,
           CASE WHEN count(v.correct) = 0 THEN 'unscored'
                WHEN count(*) FILTER (WHERE v.correct) = count(v.correct) THEN 'easy'
                WHEN count(*) FILTER (WHERE v.correct) = 0 THEN 'hard' ELSE 'mid' END AS tier,
           any_value(t.prompt_id) AS prompt_id, any_value(t.model) AS model, any_value(t.policy_version) AS policy_version,
           count(*) AS k, avg(v.reward) AS mean_reward
    FROM traces t LEFT JOIN verdicts v USING (trace_id) WHERE t.role = 'policy' GROUP BY group_id
"""
PLAIN_SCORED = """
    SELECT t.*, p.source AS prompt_source, v.status, v.correct, v.reward
    FROM traces t LEFT JOIN prompts p USING (prompt_id) LEFT JOIN verdicts v USING (trace_id)
"""
PLAIN_STATS = (
    f"""SELECT role, model, count(*), count(DISTINCT prompt_id), count(correct),
              avg(CASE WHEN correct THEN 1.0 WHEN correct = false THEN 0.0 END),
              count(*) FILTER (WHERE status IS NULL), count(*) FILTER (WHERE status = 'no_answer'),
              count(*) FILTER (WHERE status IN ('parse_error', 'timeout', 'error')), avg(num_tokens), avg(length(completion))
       FROM ({PLAIN_SCORED}) GROUP BY ALL ORDER BY ALL""",
    f"""SELECT prompt_source, role, count(*), avg(CASE WHEN correct THEN 1.0 WHEN correct = false THEN 0.0 END)
       FROM ({PLAIN_SCORED}) GROUP BY ALL ORDER BY ALL""",
    f"""SELECT model, policy_version, count(*), count(*) FILTER (WHERE tier = 'easy'), count(*) FILTER (WHERE tier = 'mid'),
              count(*) FILTER (WHERE tier = 'hard'), count(*) FILTER (WHERE tier = 'unscored'), avg(k), avg(mean_reward)
       FROM ({PLAIN_GROUPS}) GROUP BY ALL ORDER BY ALL""",
    "SELECT status, count(*) FROM verdicts GROUP BY ALL ORDER BY ALL",
    f"""SELECT count(DISTINCT prompt_id) FILTER (WHERE tier = 'hard'),
              count(DISTINCT prompt_id) FILTER (WHERE tier = 'hard' AND prompt_id IN (
                  SELECT t.prompt_id FROM traces t JOIN verdicts v USING (trace_id) WHERE t.role = 'teacher' AND v.correct))
       FROM ({PLAIN_GROUPS})""",
)
PLAIN_ROLLOUTS = """
    SELECT t.group_id, t.prompt_id, t.trace_id, t.sample_idx, t.prompt_token_ids, t.completion_token_ids,
           t.completion_logprobs, v.reward, v.correct
    FROM traces t LEFT JOIN verdicts v USING (trace_id)
    WHERE t.role = 'policy' AND list_contains(?, t.group_id) ORDER BY group_id, sample_idx, trace_id
"""
PLAIN_STEP_PROMPTS = "SELECT prompt_id, messages, answer FROM prompts WHERE list_contains(?, prompt_id)"
PLAIN_TEACHERS = """
    SELECT t.prompt_id, t.trace_id, t.model, t.completion FROM traces t JOIN verdicts v USING (trace_id)
    WHERE t.role = 'teacher' AND v.correct AND list_contains(?, t.prompt_id) ORDER BY ALL
"""
PLAIN_UNSCORED = """
    SELECT t.trace_id, t.completion, p.answer AS gold FROM traces t JOIN prompts p USING (prompt_id)
    WHERE t.trace_id NOT IN (SELECT trace_id FROM verdicts WHERE settings_hash = ?) ORDER BY t.trace_id
"""


def plain_connect(root: Path):
    import duckdb

    con = duckdb.connect()
    for table in TABLES:
        if any((root / table).glob("*.parquet")):
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{root}/{table}/*.parquet')")
    return con


def step_units(unit_ids: list[str], step: int, seed: int = 0) -> list[str]:
    """The units of step `step` as the trainer orders them (dypo_train.stream.reader.StoreStream.units_for_step)."""
    per_epoch = max(1, len(unit_ids) // STEP_GROUPS)
    epoch, index = divmod(step, per_epoch)
    order = list(unit_ids)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[index * STEP_GROUPS:(index + 1) * STEP_GROUPS]


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for i in range(repeats):
        started = time.perf_counter()
        out = fn(i)
        times.append(time.perf_counter() - started)
    return times, out


def child_dypo(op: str, root: Path, repeats: int) -> tuple[list[float], int]:
    from dypo_data.jobs.inspect import collect_stats
    from dypo_data.store import connect
    from dypo_data.store.queries import unscored_traces
    from dypo_train.stream.reader import StoreStream
    from scale_store import VERIFIER_HASH

    if op == "open":
        times, _ = timed(lambda i: connect(root).close(), repeats)
        return times, 0
    if op == "stats":
        times, stats = timed(lambda i: collect_stats(str(root)), repeats)
        return times, stats.models.num_rows
    if op == "plan":
        def plan(i):
            stream = StoreStream(root, unit_kind="group")
            stream.close()
            return stream.plan
        times, plan_ = timed(plan, repeats)
        return times, len(plan_.units)
    if op == "step":
        stream = StoreStream(root, unit_kind="group")
        times, groups = timed(lambda i: stream.read(stream.units_for_step(i, STEP_GROUPS)), repeats)
        stream.close()
        return times, sum(len(g.rollouts) for g in groups)
    con = connect(root)
    if op == "tiers":
        times, rows = timed(lambda i: con.execute("SELECT tier, count(*) FROM groups GROUP BY tier").fetchall(), repeats)
        return times, len(rows)
    times, table = timed(lambda i: unscored_traces(con, VERIFIER_HASH), repeats)
    return times, table.num_rows


def child_plain(op: str, root: Path, repeats: int) -> tuple[list[float], int]:
    from scale_store import VERIFIER_HASH

    if op == "open":
        times, _ = timed(lambda i: plain_connect(root).close(), repeats)
        return times, 0
    if op == "stats":
        times, out = timed(lambda i: [plain_connect(root).execute(q).fetchall() for q in PLAIN_STATS], repeats)
        return times, len(out[0])
    if op == "plan":
        query = "SELECT DISTINCT group_id FROM traces WHERE role = 'policy' ORDER BY group_id"
        times, rows = timed(lambda i: plain_connect(root).execute(query).fetchall(), repeats)
        return times, len(rows)
    con = plain_connect(root)
    if op == "step":
        units = [r[0] for r in con.execute("SELECT DISTINCT group_id FROM traces WHERE role = 'policy' ORDER BY 1").fetchall()]

        def read(i):
            step = step_units(units, i)
            rollouts = con.execute(PLAIN_ROLLOUTS, [step]).to_arrow_table()
            prompt_ids = sorted(set(rollouts["prompt_id"].to_pylist()))
            con.execute(PLAIN_STEP_PROMPTS, [prompt_ids]).to_arrow_table()
            con.execute(PLAIN_TEACHERS, [prompt_ids]).to_arrow_table()
            return rollouts.num_rows
        times, n = timed(read, repeats)
        return times, n
    if op == "tiers":
        times, rows = timed(lambda i: con.execute(f"SELECT tier, count(*) FROM ({PLAIN_GROUPS}) GROUP BY tier").fetchall(), repeats)
        return times, len(rows)
    times, table = timed(lambda i: con.execute(PLAIN_UNSCORED, [VERIFIER_HASH]).to_arrow_table(), repeats)
    return times, table.num_rows


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, args: argparse.Namespace) -> None:
    op, side = mode.split(":")
    run = child_dypo if side == "dypo" else child_plain
    times, rows = run(op, Path(args.store), args.repeats)
    print_result({"op": op, "side": side, "times": times, "median_s": statistics.median(times), "rows": rows,
                  "peak_rss_mib": round(peak_rss_mib(), 1)})


# -- the table ---------------------------------------------------------------------------------------

def store_size(root: Path) -> tuple[float, int]:
    files = [p for p in root.rglob("*.parquet")]
    return sum(p.stat().st_size for p in files) / 2**20, len(files)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def run_store(script: str, root: Path, ops: list[str], repeats: int) -> dict:
    out = {}
    for op in ops:
        sides = {}
        for side in ("dypo", "plain"):
            sides[side] = run_child(script, f"{op}:{side}", ["--store", str(root), "--repeats", str(repeats)])
        sides["ratio"] = sides["dypo"]["median_s"] / max(sides["plain"]["median_s"], 1e-9)
        out[op] = sides
        d, p = sides["dypo"], sides["plain"]
        print(f"  {op:9} dypo {fmt_s(d['median_s']):>9} ({d['peak_rss_mib']:7.0f} MiB)   plain DuckDB {fmt_s(p['median_s']):>9} "
              f"({p['peak_rss_mib']:7.0f} MiB)   ratio {sides['ratio']:5.2f}   first runs {fmt_s(d['times'][0])} / {fmt_s(p['times'][0])}",
              flush=True)
    return out


def cpu_line() -> str:
    from dypo_data.backends.cpu import detect_cpu

    cpu = detect_cpu()
    return f"{cpu.model_name} ({cpu.isa}, {len(cpu.cores)} cores), load average {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000,100000", help="Prompts per store, comma-separated.")
    parser.add_argument("--ops", default=",".join(OPS), help=f"Operations to time, of {', '.join(OPS)}.")
    parser.add_argument("--compacted", default="20000,100000",
                        help="Sizes also measured after `dypo-data compact` (comma-separated; '' for none).")
    parser.add_argument("--shards", type=int, default=10_000, help="Shards of the many-shards store (0: skip it).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each operation per process (the median is reported).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the stores' contents.")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".store-cache",
                        help="Where built stores are kept between runs (gitignored).")
    parser.add_argument("--build-only", action="store_true", help="Build the stores into the cache and stop.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    ops = [o for o in args.ops.split(",") if o]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        raise SystemExit(f"unknown --ops {unknown}; use some of {', '.join(OPS)}")
    args.cache.mkdir(parents=True, exist_ok=True)
    stores = {}
    for n in [int(s) for s in args.sizes.split(",") if s]:
        root, built = cached_store(args.cache, n, args.seed)
        mib, files = store_size(root)
        stores[n] = root
        print(f"store {n:,} prompts: {root} ({mib:,.0f} MiB, {files:,} files{f', built in {built:.0f} s' if built else ''})", flush=True)
    for n in [int(s) for s in args.compacted.split(",") if s]:
        if n in stores:
            root, seconds = compacted_store(args.cache, stores[n])
            mib, files = store_size(root)
            stores[f"{n} compacted"] = root
            print(f"store {n:,} prompts compacted: {root} ({mib:,.0f} MiB, {files:,} files"
                  f"{f', compacted in {seconds:.0f} s' if seconds else ''})", flush=True)
    many = many_shards_store(args.cache, args.shards) if args.shards else None
    if args.build_only:
        return
    print(f"CPU: {cpu_line()}")
    results = {}
    for n, root in stores.items():
        mib, files = store_size(root)
        print(f"{n:,} prompts, {mib:,.0f} MiB, {files:,} files:" if isinstance(n, int) else f"{n}, {mib:,.0f} MiB, {files:,} files:",
              flush=True)
        results[str(n)] = {"mib": round(mib, 1), "files": files, "ops": run_store(__file__, root, ops, args.repeats)}
    if many is not None:
        print(f"{args.shards:,} one-row shards:", flush=True)
        results[f"{args.shards}-shards"] = {"files": args.shards, "ops": run_store(__file__, many, ["open"], args.repeats)}
    import duckdb
    import pyarrow

    print(json.dumps(dict(
        metrics=results,
        device={"cpu": cpu_line(), "machine": platform.machine(), "cores": os.cpu_count(), "load_avg_end": os.getloadavg()},
        versions={"python": platform.python_version(), "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__},
        config={"sizes": args.sizes, "ops": ops, "repeats": args.repeats, "seed": args.seed, "step_groups": STEP_GROUPS},
    )))


if __name__ == "__main__":
    main()
