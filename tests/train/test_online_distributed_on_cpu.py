"""dypo_train.online.distributed without engines: how a step's prompts are dealt to ranks and put back in order,
how the data phase's metrics merge, how cores are split per local rank, and the all-gather of the shares over a
real two-process gloo group."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch.multiprocessing as mp

from dypo_train.online.distributed import exchange, local_share, merge_shares, merge_timings, rank_cores


@pytest.mark.parametrize("n, world", [(7, 2), (8, 2), (1, 2), (5, 3), (0, 2), (4, 1)])
def test_shares_deal_round_robin_and_merge_back(n, world):
    units = [f"p{i}" for i in range(n)]
    shares = [local_share(units, r, world) for r in range(world)]
    assert sorted(u for s in shares for u in s) == sorted(units)  # every prompt once
    assert merge_shares(shares) == units  # step order
    assert local_share(units, 0, 2)[:2] == units[0:4:2]


def test_merge_timings_sums_counts_and_takes_the_slowest():
    merged = merge_timings([
        {"time/generate": 2.0, "time/verify": 0.5, "rollout/tokens": 100.0, "rollout/staleness": 1.0},
        {"time/generate": 4.0, "time/verify": 0.25, "rollout/tokens": 300.0, "rollout/staleness": 1.0},
    ])
    assert merged == {"time/generate": 4.0, "time/verify": 0.5, "rollout/tokens": 400.0, "rollout/staleness": 1.0,
                      "perf/rollout_tokens_per_s": 100.0}  # 400 tokens / 4 s
    assert merge_timings([{"rollout/tokens": 0.0, "rollout/staleness": 0.0}]) == {"rollout/tokens": 0.0,
                                                                                  "rollout/staleness": 0.0}


@pytest.mark.parametrize("local, world, cpus, expected", [
    (0, 2, [0, 1], [0]), (1, 2, [0, 1], [1]),
    (0, 2, [0, 1, 2], [0, 1]), (1, 2, [0, 1, 2], [2]),
    (1, 4, [4, 5, 6, 7, 8, 9, 10, 11], [6, 7]),
    (2, 3, [0, 1], [0]),  # more ranks than cores: shared, never empty
    (0, 1, [3, 1], [1, 3]),
])
def test_rank_cores(local, world, cpus, expected):
    assert rank_cores(local, world, cpus) == expected


def _rank(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        units = [f"p{i}" for i in range(5)]
        mine = local_share(units, rank, 2)
        shares = exchange((mine, {"rollout/tokens": float(10 * (rank + 1))}), SimpleNamespace(num_processes=2))
        out.put((rank, merge_shares([s for s, _ in shares]), merge_timings([t for _, t in shares])))
    finally:
        dist.destroy_process_group()


def test_exchange_over_two_gloo_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, units, timings in results:
        assert units == [f"p{i}" for i in range(5)]
        assert timings == {"rollout/tokens": 30.0}
    assert exchange("x", SimpleNamespace(num_processes=1)) == ["x"]
