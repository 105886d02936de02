"""Per-token log-probabilities and entropies from logits, chunked over rows.

`token_logprobs` upcasts one chunk of rows to float32 at a time and, through a custom autograd
function, keeps nothing of vocabulary size for the backward pass except the logits themselves
(which the model's graph holds anyway): the softmax of each chunk is recomputed in backward. So no
full float32 (N, T, V) copy exists at any time, in forward or backward. Temperature scaling, if any,
is applied to the logits by the caller.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

DEFAULT_CHUNK_ROWS = 1024  # rows of the flattened (N * T, V) logits upcast at once


def _out_dtype(logits: Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for float64 logits


def _check(logits: Tensor, chunk_rows: int) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, T, V), got shape {tuple(logits.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be >= 1")


class _TargetLogprob(torch.autograd.Function):
    """logp[r] = x[r, y[r]] - logsumexp(x[r]) for rows r of x (R, V); softmax recomputed in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, chunk_rows: int, with_entropy: bool = False):  # x (R, V), y (R,)
        dtype = _out_dtype(x)
        out = torch.empty(x.shape[0], dtype=dtype, device=x.device)  # (R,)
        lse = torch.empty_like(out)  # (R,) logsumexp per row, kept for backward
        ent = torch.empty_like(out) if with_entropy else None  # (R,) entropy, from the same upcast chunk
        for i in range(0, x.shape[0], chunk_rows):
            sl = slice(i, i + chunk_rows)
            xc = x[sl].to(dtype)  # (r, V) one upcast chunk
            lse[sl] = xc.logsumexp(dim=1)
            out[sl] = xc.gather(1, y[sl].unsqueeze(1)).squeeze(1) - lse[sl]
            if ent is not None:
                ent[sl] = _entropy_of(xc, lse[sl])
        ctx.save_for_backward(x, y, lse)
        ctx.chunk_rows = chunk_rows
        if ent is None:
            return out
        ctx.mark_non_differentiable(ent)
        return out, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, *_: Tensor):  # grad_out (R,); the entropy output has no gradient
        x, y, lse = ctx.saved_tensors
        grad_x = torch.empty_like(x)  # (R, V), logits' dtype
        for i in range(0, x.shape[0], ctx.chunk_rows):
            sl = slice(i, i + ctx.chunk_rows)
            g = -(x[sl].to(lse.dtype) - lse[sl].unsqueeze(1)).exp()  # (r, V) -softmax
            g.scatter_add_(1, y[sl].unsqueeze(1), torch.ones_like(lse[sl]).unsqueeze(1))  # one-hot - softmax
            grad_x[sl] = (g * grad_out[sl].to(lse.dtype).unsqueeze(1)).to(x.dtype)
        return grad_x, None, None, None


def _entropy_of(xc: Tensor, lse: Tensor) -> Tensor:
    """-sum_v p log p of rows xc (r, V) whose logsumexp is lse (r,); 0 log 0 = 0 for -inf logits."""
    logp = xc - lse.unsqueeze(1)  # (r, V)
    p = logp.exp()
    return -torch.linalg.vecdot(p, torch.where(p > 0, logp, 0.0))  # (r,): a fused multiply-sum, no (r, V) product


def token_logprobs(logits: Tensor, targets: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """log softmax(logits)[target] per position, computed chunk by chunk in float32.

    Equal to `logits.float().log_softmax(-1).gather(-1, targets[..., None])[..., 0]` (and so is its
    gradient), without holding that float32 (N, T, V) tensor. Targets must be valid token ids
    everywhere (put the pad id at padded positions, not -100); mask the result afterwards.

    Shapes:
        logits:  (N, T, V) any float dtype
        targets: (N, T) long
        returns: (N, T) float32 (float64 for float64 logits)
    """
    _check(logits, chunk_rows)
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets {tuple(targets.shape)} must match logits (N, T) {tuple(logits.shape[:2])}")
    n, t, v = logits.shape
    flat = _TargetLogprob.apply(logits.reshape(n * t, v), targets.reshape(n * t).long(), chunk_rows)  # (N*T,)
    return flat.view(n, t)


def token_logprobs_and_entropy(logits: Tensor, targets: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[Tensor, Tensor]:
    """`token_logprobs` and `token_entropy` in one pass over the logits (each chunk upcast once).

    The log-probabilities carry gradients exactly as `token_logprobs`'s; the entropies carry none.

    Shapes:
        logits:  (N, T, V) any float dtype
        targets: (N, T) long
        returns: (N, T) logprobs, (N, T) entropy, float32 (float64 for float64 logits)
    """
    _check(logits, chunk_rows)
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets {tuple(targets.shape)} must match logits (N, T) {tuple(logits.shape[:2])}")
    n, t, v = logits.shape
    flat, ent = _TargetLogprob.apply(logits.reshape(n * t, v), targets.reshape(n * t).long(), chunk_rows, True)
    return flat.view(n, t), ent.view(n, t)


@torch.no_grad()
def token_entropy(logits: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Entropy of the next-token distribution per position, -sum_v p log p, in float32, no gradient.

    Shapes:
        logits:  (N, T, V) any float dtype
        returns: (N, T) float32 (float64 for float64 logits)
    """
    _check(logits, chunk_rows)
    n, t, v = logits.shape
    flat = logits.detach().reshape(n * t, v)  # (N*T, V)
    out = torch.empty(n * t, dtype=_out_dtype(logits), device=logits.device)
    for i in range(0, n * t, chunk_rows):
        xc = flat[i : i + chunk_rows].to(out.dtype)  # (r, V)
        out[i : i + chunk_rows] = _entropy_of(xc, xc.logsumexp(dim=1))
    return out.view(n, t)
