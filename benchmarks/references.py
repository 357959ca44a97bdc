"""Naive references evaluated on a sample of query rows, for verifying outputs at lengths where the
full (n × m) reference would not fit in memory.

Query rows are independent of each other in every attention here, so the reference restricted to
rows R is the reference's rows R. Each function takes per-head q (b h n d), k, v (b h m d) and
`rows` (a 1-d index tensor of query positions) and returns (b h |R| e). They are the same formulas
as `attnbench.variants.reference` with the masks written from explicit positions;
`tests/test_benchmarks.py` checks that they equal the project's references row for row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnbench.variants.masking import masked_softmax
from attnbench.variants.reference import feature_map

LINEAR_EPS = 1e-6  # attnbench.variants.linear.EPS
PEER_LINEAR_EPS = 1e-3  # linear_attention_transformer.causal_linear_attn's default


def sample_rows(n: int, block: int = 64) -> Tensor:
    """The first, a middle and the last `block` query positions (all of them when n ≤ 3·block)."""
    if n <= 3 * block:
        return torch.arange(n)
    middle = n // 2 - block // 2
    return torch.cat([torch.arange(block), torch.arange(middle, middle + block), torch.arange(n - block, n)])


def _hidden(rows: Tensor, m: int, *, causal: bool, window: int | None, device) -> Tensor | None:
    """Bool (|R|, m), True where query rows[i] may not see key j (same rule as masking.dense_hidden)."""
    if not causal and window is None:
        return None
    i = rows.to(device)[:, None]
    j = torch.arange(m, device=device)[None, :]
    hidden = torch.zeros(len(rows), m, dtype=torch.bool, device=device)
    if causal:
        hidden |= j > i
    if window is not None:
        hidden |= (i - j).abs() >= window
    return hidden


def softmax_rows(q, k, v, rows, *, causal=False, window=None, scale=None) -> Tensor:
    """Rows of softmax(q kᵀ·scale, hidden removed) v (reference.full_attention)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q[:, :, rows.to(q.device)] @ k.transpose(-2, -1) * scale  # b h r m
    hidden = _hidden(rows, k.shape[-2], causal=causal, window=window, device=q.device)
    return masked_softmax(scores, hidden) @ v


def linear_rows(q, k, v, rows, *, causal=False, eps=LINEAR_EPS) -> Tensor:
    """Rows of the quadratic form of φ(x)=elu(x)+1 linear attention (reference.linear_attention)."""
    scores = feature_map(q[:, :, rows.to(q.device)]) @ feature_map(k).transpose(-2, -1)  # b h r m
    hidden = _hidden(rows, k.shape[-2], causal=causal, window=None, device=q.device)
    if hidden is not None:
        scores = scores.masked_fill(hidden, 0.0)
    return (scores / (scores.sum(dim=-1, keepdim=True) + eps)) @ v


def additive_rows(q, k, v, rows, score_vector, *, causal=False, chunk: int = 16) -> Tensor:
    """Rows of Bahdanau attention (reference.additive_attention), `chunk` rows at a time."""
    outs = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        hidden_state = torch.tanh(q[:, :, part.to(q.device), None, :] + k[:, :, None, :, :])  # b h r m d
        scores = torch.einsum("bhnmd,hd->bhnm", hidden_state, score_vector)
        hidden = _hidden(part, k.shape[-2], causal=causal, window=None, device=q.device)
        outs.append(masked_softmax(scores, hidden) @ v)
    return torch.cat(outs, dim=2)


# ------------------------------------------------------------------- peers' own definitions
def peer_linear_rows(q, k, v, rows, *, causal=False, bucket_size: int = 64) -> Tensor:
    """Rows of linear-attention-transformer's linear attention, written in quadratic form.

    Its kernel is not φ = elu + 1: q' = softmax(q over d)·d^-½; non-causal k' = softmax(k over
    the sequence), out = q' (k'ᵀ v), unnormalised; causal k' = exp(k), and query i sees only the
    keys of *earlier* buckets of `bucket_size` (its own bucket is a blind spot), normalised by
    max(q'·Σk', 1e-3).
    """
    d = q.shape[-1]
    q_rows = q[:, :, rows.to(q.device)].softmax(dim=-1) * d**-0.5
    if not causal:
        return (q_rows @ k.softmax(dim=-2).transpose(-2, -1)) @ v
    scores = q_rows @ k.exp().transpose(-2, -1)  # b h r m
    j = torch.arange(k.shape[-2], device=q.device)
    visible = (j[None, :] // bucket_size) < (rows.to(q.device)[:, None] // bucket_size)
    scores = scores * visible
    return (scores @ v) / scores.sum(dim=-1, keepdim=True).clamp(min=PEER_LINEAR_EPS)
