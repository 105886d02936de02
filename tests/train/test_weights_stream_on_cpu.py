"""dypo_train.online.weights: the weight stream every sync sends. Buckets keep their byte bound and the
state_dict order, every weight comes exactly once; a plain model streams its own tensors (cast, tied names
kept); an FSDP2-sharded model (2 processes, gloo) streams exactly the unsharded state dict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dypo_train.online.weights import bucket_names, nbytes, stream_weights, weight_shapes

PROBE = Path(__file__).with_name("fsdp_stream_probe.py")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bucket_bytes", [1, 7, 40, 10_000])
def test_buckets_keep_the_bound_the_order_and_every_name_once(seed, bucket_bytes):
    gen = torch.Generator().manual_seed(seed)
    sizes = [(f"w{i}", int(s)) for i, s in enumerate(torch.randint(1, 30, (12,), generator=gen))]
    buckets = bucket_names(sizes, bucket_bytes)
    assert [n for b in buckets for n in b] == [n for n, _ in sizes]  # each name once, in order
    size = dict(sizes)
    for bucket in buckets:
        total = sum(size[n] for n in bucket)
        assert total <= bucket_bytes or len(bucket) == 1  # over the bound only alone
    for a, b in zip(buckets, buckets[1:]):  # greedy: the next name did not fit
        assert sum(size[n] for n in a) + size[b[0]] > bucket_bytes


def test_buckets_by_hand():
    sizes = [("a", 4), ("b", 4), ("c", 9), ("d", 1), ("e", 2)]
    assert bucket_names(sizes, 8) == [["a", "b"], ["c"], ["d", "e"]]
    assert bucket_names([], 8) == []


def test_plain_model_streams_its_state_dict_cast_with_tied_names():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as a Llama's embedding and lm_head
    model.register_buffer("steps", torch.tensor(3))
    state = model.state_dict()
    out = list(stream_weights(state, dtype=torch.bfloat16, bucket_bytes=16))
    assert [n for n, _ in out] == list(state)
    for name, tensor in out:
        expected = state[name].to(torch.bfloat16) if state[name].is_floating_point() else state[name]
        assert tensor.dtype == expected.dtype and torch.equal(tensor, expected)
    assert nbytes(state["0.weight"], torch.bfloat16) == 5 * 4 * 2
    assert weight_shapes(state) == {"0.weight": (5, 4), "1.weight": (5, 4), "steps": ()}


def test_fsdp2_sharded_model_streams_the_unsharded_state_dict(tmp_path):
    """Two gloo processes shard a tiny tied Llama with fully_shard; each streams every weight (a bucket at a time)
    and compares it with the state dict of the same model built unsharded."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 str(PROBE), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)  # its own group: a hung run is ended whole
    try:
        output, _ = launcher.communicate(timeout=240)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, output[-4000:]
    for rank in (0, 1):
        report = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert report[0] == "ok", report
        assert int(report[1]) > 0 and int(report[2]) >= 2  # sharded weights seen, several buckets gathered
