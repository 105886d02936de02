"""The trainer's weights as a stream: what every weight sync sends, gathered a bounded bucket at a time.

    for name, tensor in stream_weights(model.state_dict(), dtype=torch.float32, bucket_bytes=1 << 30):
        ...  # full (unsharded) tensors, Hugging Face names, in state_dict order

A sharded model (FSDP2 / `fully_shard`, as Accelerate's FSDP plugin with fsdp_version 2 prepares it) has
DTensor values in its `state_dict()`: each holds this rank's shard, and its `.shape` is the full shape, so
names and shapes are known without gathering. `stream_weights` gathers them with `full_tensor()` (a
collective: every rank must iterate the same names in the same order, as the state_dict order is) a bucket
of at most `bucket_bytes` at a time (a tensor larger than the bucket is a bucket of its own), casts them to
the receiver's dtype and hands them on; the bucket is dropped before the next is gathered. So a weight sync
holds at most about one bucket (or one parameter) of full weights beside the shards, never a second whole
model. Plain and DDP models hold full tensors already: they are passed on as they are (cast if needed).

Send `state_dict()`, not `named_parameters()`: with tied embeddings vLLM keeps its own output head, which
changes only when `lm_head.weight` is sent (DESIGN.md), and `state_dict()` has both names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor's shards gathered (`full_tensor()`, a collective), any other tensor as it is."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if callable(gather) else tensor


def nbytes(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    """Bytes of the full tensor (a DTensor's global shape), in `dtype` when it is floating point and given."""
    size = dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
    return tensor.numel() * size


def bucket_names(sizes: Iterable[tuple[str, int]], bucket_bytes: int) -> list[list[str]]:
    """Names cut, in order, into consecutive buckets of at most `bucket_bytes` (one larger name: its own bucket).

    Every name lands in exactly one bucket and the order is kept: flattening the buckets gives `sizes`' names.
    """
    buckets: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name, size in sizes:
        if current and used + size > bucket_bytes:
            buckets.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        buckets.append(current)
    return buckets


def stream_weights(state_dict: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None,
                   bucket_bytes: int = 1 << 30, device: torch.device | str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every entry of `state_dict`, in its order, gathered a bucket at a time.

    Tensors come detached and contiguous; floating-point ones in `dtype` (when given), all on `device` (when
    given, else where the gather put them). A yielded tensor may share storage with the model: copy it to keep it.
    """
    sizes = [(name, nbytes(t, dtype)) for name, t in state_dict.items()]
    for names in bucket_names(sizes, bucket_bytes):
        gathered = [(name, full_tensor(state_dict[name])) for name in names]  # this bucket's gathers (a plain tensor: itself)
        for name, tensor in gathered:
            yield name, _wire(tensor, dtype, device)  # cast one at a time: one converted copy alive, not a bucket's
        del gathered


def weight_shapes(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every entry's full shape (a DTensor's global one), without gathering."""
    return {name: tuple(t.shape) for name, t in state_dict.items()}


def _wire(tensor: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:
    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype=dtype)
    if device is not None:
        tensor = tensor.to(device=device)
    return tensor.contiguous()
