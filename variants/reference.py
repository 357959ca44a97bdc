"""Naive fp32 references in plain torch ops: the ground truth every fast path is tested against.

Each takes per-head q (b h n d), k and v (b h m d) and returns (out (b h n d), weights (b h n m)).
They materialize every (n × m) matrix on purpose: slow, obvious, correct.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.variants.masking import dense_hidden, masked_softmax


def full_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ · scale, hidden keys removed) v, with scale = 1/√d by default."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # b h n m
    hidden = dense_hidden(
        q.shape[-2],
        k.shape[-2],
        key_padding_mask=key_padding_mask,
        causal=causal,
        window=window,
        device=q.device,
    )
    weights = masked_softmax(scores, hidden)
    return weights @ v, weights


def additive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    score_vector: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """Bahdanau: score(i, j) = wᵀ tanh(q_i + k_j), score_vector w (h d); softmax; weights @ v."""
    hidden_state = torch.tanh(q[:, :, :, None, :] + k[:, :, None, :, :])  # b h n m d
    scores = torch.einsum("bhnmd,hd->bhnm", hidden_state, score_vector)
    hidden = dense_hidden(
        q.shape[-2], k.shape[-2], key_padding_mask=key_padding_mask, causal=causal, device=q.device
    )
    weights = masked_softmax(scores, hidden)
    return weights @ v, weights


def feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 (Katharopoulos et al. 2020): positive, so the normaliser never vanishes."""
    return F.elu(x) + 1.0


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Kernelized attention in its quadratic form: A = φ(q) φ(k)ᵀ, hidden entries 0, out = A v / (A 1 + eps)."""
    scores = feature_map(q) @ feature_map(k).transpose(-2, -1)  # b h n m
    hidden = dense_hidden(
        q.shape[-2], k.shape[-2], key_padding_mask=key_padding_mask, causal=causal, device=q.device
    )
    if hidden is not None:
        scores = scores.masked_fill(hidden, 0.0)
    weights = scores / (scores.sum(dim=-1, keepdim=True) + eps)
    return weights @ v, weights


def linear_attention_recurrent(
    q: Tensor, k: Tensor, v: Tensor, *, key_padding_mask: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """Causal linear attention as an RNN: S_i = S_{i−1} + φ(k_i) v_iᵀ, z_i = z_{i−1} + φ(k_i)."""
    fq, fk = feature_map(q), feature_map(k)
    if key_padding_mask is not None:
        fk = fk.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    b, h, n, d = q.shape
    state = q.new_zeros(b, h, d, v.shape[-1])  # Σ φ(k) vᵀ so far
    norm = q.new_zeros(b, h, d)  # Σ φ(k) so far
    outs = []
    for i in range(n):
        state = state + fk[:, :, i, :, None] * v[:, :, i, None, :]
        norm = norm + fk[:, :, i]
        numerator = torch.einsum("bhd,bhde->bhe", fq[:, :, i], state)
        denominator = torch.einsum("bhd,bhd->bh", fq[:, :, i], norm)[..., None] + eps
        outs.append(numerator / denominator)
    return torch.stack(outs, dim=2)
