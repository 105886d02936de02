"""Page times of `dypo-data view` on a 20k-prompt store (target: every page within 300 ms).

The store is built once with the tests' factory (`tests/view_store_factory.build_large_store`:
20,000 prompts, 2 teachers x 2 traces and a group of k = 8 rollouts per prompt, i.e. 240,000
traces with verdicts; two 200-step training runs of 64 prompts per step; eval results) and cached
under `--cache` (deterministic for a seed, so a cached copy is the same store). Each page is fetched
`--repeats` times through the app in process (Starlette's test client: routing, queries,
templates; no network); the first fetch is reported apart (cold), then the median and the worst of
the rest. The snapshot build (reading the shards into memory at start) is timed too.

    python benchmarks/bench_view.py                    # 20k prompts
    python benchmarks/bench_view.py --prompts 2000     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

TARGET_MS = 300.0
CACHE_VERSION = 1


def cached_store(cache: Path, n_prompts: int, seed: int) -> tuple[Path, float]:
    """The store for (n_prompts, seed), built into the cache unless already there; (path, build seconds)."""
    from bench_common import cached_build
    from view_store_factory import build_large_store

    return cached_build(cache, f"view-store-v{CACHE_VERSION}-n{n_prompts}-s{seed}",
                        lambda tmp: build_large_store(tmp, n_prompts=n_prompts, seed=seed))


def page_urls(client) -> dict[str, str]:
    """The pages to time, with ids taken from the store itself."""
    groups = client.get("/groups").text
    prompt_id = re.search(r"/prompt/([0-9a-f]{16})", groups).group(1)
    hard = client.get("/groups?tier=hard").text
    hard_prompt = re.search(r"/prompt/([0-9a-f]{16})", hard).group(1)
    last = re.search(r"page \S+ of ([\d,]+)", groups).group(1).replace(",", "")
    return {
        "overview": "/",
        "groups": "/groups",
        "groups: tier + source + text": "/groups?tier=mid&source=gsm8k&q=muffins",
        "groups: status + tier": "/groups?status=ok&tier=hard",
        "groups: hard without teacher": "/groups?hard_without_teacher=1",
        "groups: last page": f"/groups?page={last}",
        "prompt": f"/prompt/{prompt_id}",
        "prompt (hard, trained on)": f"/prompt/{hard_prompt}",
        "runs (2 overlaid)": "/runs",
        "skipped prompts": "/runs/dypo-a/skipped?reason=easy",
        "eval": "/eval",
    }


def time_pages(client, urls: dict[str, str], repeats: int) -> list[dict]:
    rows = []
    for name, url in urls.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
        warm = times[1:] or times
        rows.append({"page": name, "url": url, "cold_ms": round(times[0], 1), "median_ms": round(statistics.median(warm), 1),
                     "max_ms": round(max(warm), 1), "bytes": len(response.content)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20_000, help="Prompts in the store.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the store's contents.")
    parser.add_argument("--repeats", type=int, default=6, help="Fetches per page (the first is reported as cold).")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dypo" / "bench",
                        help="Where the built store is kept between runs.")
    args = parser.parse_args()

    from starlette.testclient import TestClient

    from dypo_data.view.app import create_app
    from dypo_data.view.snapshot import Snapshot

    store, built_s = cached_store(args.cache, args.prompts, args.seed)
    snapshot = Snapshot(store)
    snapshot.refresh(force=True)
    client = TestClient(create_app(store, snapshot=snapshot))
    rows = time_pages(client, page_urls(client), args.repeats)

    print(f"store {store} ({args.prompts:,} prompts{'' if built_s == 0 else f', built in {built_s:.1f} s'}); "
          f"snapshot read in {snapshot.build_seconds:.2f} s")
    print(f"{'page':32} {'cold ms':>9} {'median ms':>10} {'max ms':>8} {'KiB':>7}")
    for r in rows:
        flag = "" if r["max_ms"] <= TARGET_MS else "  over target"
        print(f"{r['page']:32} {r['cold_ms']:9.1f} {r['median_ms']:10.1f} {r['max_ms']:8.1f} {r['bytes'] / 1024:7.1f}{flag}")
    worst = max(r["max_ms"] for r in rows)
    print(f"worst warm page: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")
    import duckdb

    print(json.dumps(dict(
        metrics={"pages": rows, "worst_warm_ms": worst, "snapshot_seconds": round(snapshot.build_seconds, 3),
                 "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
        device={"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        versions={"python": platform.python_version(), "duckdb": duckdb.__version__},
        config={"prompts": args.prompts, "seed": args.seed, "repeats": args.repeats},
    )))


if __name__ == "__main__":
    main()
