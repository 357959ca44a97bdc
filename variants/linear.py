"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): φ(x) = elu(x) + 1.

Non-causal: out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), O(n·d²).
Causal, chunked: the sequence is cut into chunks of `chunk_size`; inside a chunk the masked
quadratic form is used, across chunks one (d × d) state per chunk carries Σ φ(k) vᵀ of every
earlier chunk. Memory is O(n·c + (n/c)·d²) per head, never the O(n·d²) of a per-position
cumulative sum. Computed in fp32 even for fp16/bf16 inputs, whose range the sums would overflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.options import Option
from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant
from attnbench.variants.reference import feature_map, linear_attention

EPS = 1e-6


@register_variant("linear", aliases=("linear-attention", "katharopoulos"))
class LinearAttention(ProjectedAttention):
    """Kernelized attention with φ(x) = elu(x) + 1, O(n) in time and memory."""

    spec = VariantSpec(
        complexity="n",
        description="kernelized attention φ(x)=elu(x)+1; chunked causal form",
        options=(Option("chunk_size", int, 64, minimum=1, help="chunk length of the causal form"),),
    )

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        dtype = q.dtype
        q, k, v = q.float(), k.float(), v.float()
        if causal:
            out = causal_linear_attention(
                q, k, v, chunk_size=self.options["chunk_size"], key_padding_mask=key_padding_mask
            )
        else:
            out = global_linear_attention(q, k, v, key_padding_mask=key_padding_mask)
        weights = None
        if need_weights:  # asked for explicitly: the dense (n × m) normalised kernel matrix
            _, weights = linear_attention(
                q, k, v, key_padding_mask=key_padding_mask, causal=causal, eps=EPS
            )
            weights = weights.to(dtype)
        return out.to(dtype), weights

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return linear_attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal, eps=EPS)


def _key_features(k: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """φ(k) with padded keys zeroed, so they add nothing to any sum."""
    fk = feature_map(k)
    if key_padding_mask is not None:
        fk = fk.masked_fill(rearrange(key_padding_mask, "b m -> b 1 m 1"), 0.0)
    return fk


def _with_ones(v: Tensor) -> Tensor:
    """(b h n e) → (b h n e+1): a column of ones, so one matmul gives numerator and normaliser."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)


def global_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Non-causal linear attention, (b h n d) → (b h n e), in O(n·d·e)."""
    fq, fk = feature_map(q), _key_features(k, key_padding_mask)
    state = torch.einsum("bhmd,bhme->bhde", fk, v)  # Σ_j φ(k_j) v_jᵀ
    norm = fk.sum(dim=-2)  # b h d: Σ_j φ(k_j)
    numerator = torch.einsum("bhnd,bhde->bhne", fq, state)
    denominator = torch.einsum("bhnd,bhd->bhn", fq, norm)[..., None] + EPS
    return numerator / denominator


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int = 64,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Causal linear attention, chunk-parallel: masked quadratic inside chunks, states across."""
    n, e = q.shape[-2], v.shape[-1]
    size = min(chunk_size, n)
    pad = math.ceil(n / size) * size - n  # padded positions come last: no real query sees them
    fq, fk = feature_map(q), _key_features(k, key_padding_mask)
    chunked = lambda t: rearrange(F.pad(t, (0, 0, 0, pad)), "b h (c s) d -> b h c s d", s=size)  # noqa: E731
    fq, fk, v1 = chunked(fq), chunked(fk), chunked(_with_ones(v))  # v1: b h c s (e+1)

    # inside each chunk: the quadratic form with the causal mask (b h c s s); the ones column
    # of v1 makes the last output column the normaliser Σ_j φ(q_i)·φ(k_j)
    scores = fq @ fk.transpose(-2, -1)
    scores = scores * torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    out = scores @ v1  # b h c s (e+1)

    # across chunks: the state of every earlier chunk (exclusive prefix sum over c)
    chunk_state = fk.transpose(-2, -1) @ v1  # b h c d (e+1)
    earlier_state = F.pad(chunk_state.cumsum(dim=2), (0, 0, 0, 0, 1, -1))
    out = out + fq @ earlier_state

    out = out[..., :e] / (out[..., e:] + EPS)
    return rearrange(out, "b h c s e -> b h (c s) e")[:, :, :n]
