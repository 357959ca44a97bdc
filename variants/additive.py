"""Additive attention (Bahdanau, Cho & Bengio 2015): score(q, k) = vᵀ tanh(W_q q + W_k k).

Memory: the tanh argument is a (b, h, n, m, d_head) tensor if formed at once. This layer forms it
one chunk of query rows at a time (`chunk_size` rows; by default as many as fit in about 4M
elements) and, when gradients are needed and there is more than one chunk, recomputes each chunk in
the backward pass (`torch.utils.checkpoint`) instead of storing it. Peak extra memory is one chunk
(a block that fits in one chunk is stored, not recomputed), and the scores are the same numbers the
unchunked form gives (each entry is computed by the same ops).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attnbench.options import Option
from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant
from attnbench.variants.masking import dense_hidden, masked_softmax
from attnbench.variants.reference import additive_attention

CHUNK_ELEMENTS = 1 << 22  # elements of one (b, h, chunk, m, d_head) tanh block


@register_variant("additive", aliases=("bahdanau", "concat"))
class AdditiveAttention(ProjectedAttention):
    """Bahdanau attention, optionally in several heads; the layer's `n_heads` argument is ignored."""

    spec = VariantSpec(
        complexity="n^2",
        description="Bahdanau additive attention v·tanh(Wq q + Wk k), chunked over queries",
        options=(
            Option("heads", int, 1, minimum=1, help="heads, each with its own score vector"),
            Option("chunk_size", int, 0, minimum=0, help="query rows per chunk; 0 = automatic"),
        ),
    )

    def __init__(self, d_model: int, n_heads: int, **options) -> None:
        super().__init__(d_model, n_heads, **options)
        d_head = d_model // self.heads
        bound = 1.0 / math.sqrt(d_head)
        self.score_vector = nn.Parameter(torch.empty(self.heads, d_head).uniform_(-bound, bound))

    def head_count(self) -> int:
        return self.options["heads"]

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        b, h, n, d = q.shape
        m = k.shape[-2]
        rows = self.options["chunk_size"] or max(1, CHUNK_ELEMENTS // max(1, b * h * m * d))
        # recompute in backward only when the block is chunked: one chunk is the memory bound anyway
        recompute = rows < n and torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, self.score_vector)
        )
        chunks = []
        for start in range(0, n, rows):
            q_rows = q[:, :, start : start + rows]
            if recompute:
                chunks.append(checkpoint(_scores, q_rows, k, self.score_vector, use_reentrant=False))
            else:
                chunks.append(_scores(q_rows, k, self.score_vector))
        scores = torch.cat(chunks, dim=2)  # b h n m
        hidden = dense_hidden(n, m, key_padding_mask=key_padding_mask, causal=causal, device=q.device)
        weights = masked_softmax(scores, hidden)
        return weights @ v, (weights if need_weights else None)

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return additive_attention(
            q, k, v, self.score_vector, key_padding_mask=key_padding_mask, causal=causal
        )


def _scores(q_rows: Tensor, k: Tensor, score_vector: Tensor) -> Tensor:
    """(b h c d), (b h m d), (h d) → (b h c m): wᵀ tanh(q_i + k_j) for one chunk of rows.

    In fp32 and fp64 through tanh(x) = 2σ(2x) − 1, as (2w)ᵀ σ(2q_i + 2k_j) − Σ_d w_d: on CPU ATen's
    sigmoid takes a tenth of its tanh's time (0.11 against 1.09 ms for 2²⁰ floats, 2 threads here),
    and that tanh was nine tenths of this function's. fp16 and bf16 keep tanh: near 0 the identity's
    absolute error is a unit in the last place of 1, which half precision cannot spare.
    """
    b = q_rows.shape[0]
    if q_rows.dtype in (torch.float32, torch.float64):
        hidden_state = ((2 * q_rows)[:, :, :, None, :] + (2 * k)[:, :, None, :, :]).sigmoid_()
        weights, offset = 2 * score_vector, score_vector.sum(dim=-1)
    else:
        hidden_state = torch.tanh(q_rows[:, :, :, None, :] + k[:, :, None, :, :])
        weights, offset = score_vector, None
    scores = _weighted_sum(hidden_state, weights, b)
    return scores if offset is None else scores - rearrange(offset, "h -> 1 h 1 1")


def _weighted_sum(hidden_state: Tensor, weights: Tensor, b: int) -> Tensor:
    """(b h c m d), (h d) → (b h c m): Σ_d w_hd · hidden[…, d], as one batched (1 × d)(d × c·m)
    product per (b h) entry on views of the block. `einsum` copies the block into its own layout
    when b > 1 (9× the time at b = 4, 15× at b = 32, the same at b = 1: scratch timings, 2 threads)."""
    c, m = hidden_state.shape[2:4]
    rows = repeat(weights, "h d -> (b h) 1 d", b=b)
    columns = rearrange(hidden_state, "b h c m d -> (b h) d (c m)")
    return rearrange(torch.bmm(rows, columns), "(b h) 1 (c m) -> b h c m", b=b, c=c)
