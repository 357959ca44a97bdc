"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): φ(x) = elu(x) + 1.

Non-causal: out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), O(n·d²).
Causal, chunked: the sequence is cut into chunks of `chunk_size`; inside a chunk the masked
quadratic form is used, across chunks one (d × d) state per chunk carries Σ φ(k) vᵀ of every
earlier chunk. Both forms walk the sequence `segment` positions at a time (carrying the state),
so their temporaries stay small and in cache: memory is O(n·c + (segment/c)·d²) per head, never
the O(n·d²) of a per-position cumulative sum. Computed in fp32 even for fp16/bf16 inputs, whose
range the sums would overflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.options import Option
from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant
from attnbench.variants.reference import linear_attention

EPS = 1e-6
# positions per step of the scans, so their temporaries stay small: the causal form's per-chunk
# states are the larger, so it takes shorter steps (the fastest of 512–4096 on CPU, benchmarks/)
SEGMENT, CAUSAL_SEGMENT = 2048, 512


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
    fk = _features(k)
    if key_padding_mask is not None:
        fk = fk.masked_fill(rearrange(key_padding_mask, "b m -> b 1 m 1"), 0.0)
    return fk


def _features(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 as `reference.feature_map`, with the + 1 in place (elu's backward reads its input)."""
    return F.elu(x).add_(1.0)


def _segments(n: int, segment: int) -> list[slice]:
    return [slice(start, min(start + segment, n)) for start in range(0, n, segment)]


def _mask_part(key_padding_mask: Tensor | None, part: slice) -> Tensor | None:
    return None if key_padding_mask is None else key_padding_mask[:, part]


def _with_ones(v: Tensor) -> Tensor:
    """(… n e) → (… n e+1): a column of ones, so one matmul gives numerator and normaliser."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)


def _normalise(out: Tensor, e: int) -> Tensor:
    """(… e+1) → (… e): the numerator columns divided by the normaliser column (+ EPS, in place:
    `out` is a fresh matmul result that nothing has saved)."""
    return out[..., :e] / out[..., e:].add_(EPS)


def global_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    segment: int = SEGMENT,
) -> Tensor:
    """Non-causal linear attention, (b h n d) → (b h n e), in O(n·d·e).

    One scan over the keys sums the state [Σ φ(k_j) v_jᵀ | Σ φ(k_j)] (b h d e+1); a second
    applies it to the queries. Both go `segment` positions at a time.
    """
    e = v.shape[-1]
    state = 0
    for part in _segments(k.shape[-2], segment):
        fk = _key_features(k[:, :, part], _mask_part(key_padding_mask, part))
        state = state + torch.cat([fk.transpose(-2, -1) @ v[:, :, part], fk.sum(dim=-2)[..., None]], dim=-1)
    outs = [_normalise(_features(q[:, :, part]) @ state, e) for part in _segments(q.shape[-2], segment)]
    return torch.cat(outs, dim=-2) if len(outs) > 1 else outs[0]


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int = 64,
    key_padding_mask: Tensor | None = None,
    segment: int = CAUSAL_SEGMENT,
) -> Tensor:
    """Causal linear attention, chunk-parallel: masked quadratic inside chunks, states across.

    Goes `segment` positions (whole chunks) at a time, carrying the state of every earlier
    segment, so the per-chunk states of only one segment exist at once.
    """
    n, e = q.shape[-2], v.shape[-1]
    size = min(chunk_size, n)
    segment = max(size, segment // size * size)
    tril = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    carried = None  # Σ φ(k_j) [v_j 1]ᵀ over the earlier segments: b h d (e+1)
    outs = []
    for part in _segments(n, segment):
        fq = _features(q[:, :, part])
        fk = _key_features(k[:, :, part], _mask_part(key_padding_mask, part))
        out, carried = _causal_segment(fq, fk, _with_ones(v[:, :, part]), tril, carried)
        outs.append(_normalise(out, e))
    return torch.cat(outs, dim=-2) if len(outs) > 1 else outs[0]


def _causal_segment(
    fq: Tensor, fk: Tensor, v1: Tensor, tril: Tensor, carried: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One segment of the causal form: (b h m e+1) outputs and the state carried past it."""
    m, size = fq.shape[-2], tril.shape[0]
    pad = math.ceil(m / size) * size - m  # padded positions come last: no real query sees them
    chunked = lambda t: rearrange(F.pad(t, (0, 0, 0, pad)) if pad else t, "b h (c s) d -> b h c s d", s=size)  # noqa: E731
    fq, fk, v1 = chunked(fq), chunked(fk), chunked(v1)

    # inside each chunk: the quadratic form with the causal mask (b h c s s); the ones column
    # of v1 makes the last output column the normaliser Σ_j φ(q_i)·φ(k_j)
    out = (fq @ fk.transpose(-2, -1)).mul_(tril) @ v1  # b h c s (e+1); matmul keeps no output for backward

    # across chunks: the state of every earlier chunk of this segment and of earlier segments
    chunk_state = fk.transpose(-2, -1) @ v1  # b h c d (e+1)
    through = chunk_state.cumsum(dim=2)  # inclusive prefix sum over c
    earlier = F.pad(through, (0, 0, 0, 0, 1, -1))  # exclusive: shifted by one chunk, not a difference
    if carried is not None:
        earlier = earlier + carried[:, :, None]
    total = through[:, :, -1] if carried is None else carried + through[:, :, -1]
    out = torch.baddbmm(out.flatten(0, 2), fq.flatten(0, 2), earlier.flatten(0, 2)).view(out.shape)  # out + fq @ earlier
    return rearrange(out, "b h c s e -> b h (c s) e")[:, :, :m], total
