"""Run by test_weights_stream_on_cpu under torch.distributed.run (2 processes, gloo): shard a tiny Llama with
FSDP2 (`fully_shard` per decoder layer and the root), stream its weights with `stream_weights` and compare
each with the unsharded model's state dict. Writes `ok <sharded weights> <buckets>` to OUT/rank<r>.txt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from dypo_train.online import weights


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    expected = {name: t.clone() for name, t in model.state_dict().items()}
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    state = model.state_dict()
    sharded = sum(1 for t in state.values() if hasattr(t, "full_tensor"))
    buckets = len(weights.bucket_names([(n, weights.nbytes(t)) for n, t in state.items()], 20_000))
    streamed = list(weights.stream_weights(state, dtype=torch.float32, bucket_bytes=20_000))
    assert [n for n, _ in streamed] == list(expected), "names or order differ"
    for name, tensor in streamed:
        assert not hasattr(tensor, "full_tensor") and tensor.shape == expected[name].shape, name
        assert torch.equal(tensor, expected[name]), f"{name} differs"
    (out / f"rank{rank}.txt").write_text(f"ok {sharded} {buckets}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
