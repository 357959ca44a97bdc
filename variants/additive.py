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
    """(b h c d), (b h m d), (h d) → (b h c m): wᵀ tanh(q_i + k_j) for one chunk of rows."""
    hidden_state = torch.tanh(q_rows[:, :, :, None, :] + k[:, :, None, :, :])  # b h c m d
    return torch.einsum("bhcmd,hd->bhcm", hidden_state, score_vector)
