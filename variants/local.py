"""Sliding-window (local) attention (Child et al. 2019; Beltagy et al. 2020), computed block-wise.

Query i sees key j when |i − j| < window (causal: 0 ≤ i − j < window). The sequence is cut into
blocks of `window` positions; a query block only needs its own key block and its neighbours
(the previous one if causal, previous and next otherwise), so each block attends to at most
3·window keys: time and memory are O(n·w) and no (n × n) tensor is formed. The per-block
attention is an explicit matmul + softmax with the band as an additive −inf bias, a group of
blocks at a time (on CPU this beats the fused kernel's masked path, see benchmarks/); when the
window covers the whole sequence (window ≥ n) it is full attention, computed in one fused call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.options import Option
from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant
from attnbench.variants.masking import dense_hidden
from attnbench.variants.reference import full_attention

GROUP_ELEMENTS = 1 << 22  # score entries formed at once (16 MiB in fp32): blocks are grouped to fit


@register_variant("local", aliases=("sliding-window", "window"))
class LocalAttention(ProjectedAttention):
    """Softmax attention restricted to a sliding window of `window` positions."""

    spec = VariantSpec(
        complexity="n*w",
        supports_cross=False,
        description="sliding-window softmax attention, block-wise O(n·w)",
        options=(Option("window", int, 128, minimum=1, help="keys seen on each side of a query"),),
    )

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        window = self.options["window"]
        out = sliding_window_attention(
            q, k, v, window=window, causal=causal, key_padding_mask=key_padding_mask
        )
        weights = None
        if need_weights:  # asked for explicitly: the dense (n × n) weights, for inspection only
            _, weights = full_attention(
                q, k, v, key_padding_mask=key_padding_mask, causal=causal, window=window
            )
        return out, weights

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return full_attention(
            q, k, v, key_padding_mask=key_padding_mask, causal=causal, window=self.options["window"]
        )


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """(b h n d) → (b h n d): softmax attention over keys with |i − j| < window, block by block."""
    n = q.shape[-2]
    if window >= n:  # the window covers the sequence: plain full attention, one fused call
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        hidden = dense_hidden(n, n, key_padding_mask=key_padding_mask, causal=causal, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~hidden)
    size = min(window, n)  # block size; a window reaches at most one block to each side
    n_blocks = math.ceil(n / size)
    pad = n_blocks * size - n
    offsets = (-1, 0) if causal else (-1, 0, 1)  # which neighbouring key blocks a query block needs

    def blocks(t: Tensor) -> Tensor:  # b h (nb s) d → b h nb s d
        return rearrange(F.pad(t, (0, 0, 0, pad)), "b h (nb s) d -> b h nb s d", s=size)

    def neighbours(t: Tensor) -> Tensor:  # b h nb s d → b h nb (o s) d, o = len(offsets)
        padded = F.pad(t, (0, 0, 0, 0, 1, 1))  # one empty block before the first, one after the last
        return torch.cat([padded[:, :, 1 + o : 1 + o + n_blocks] for o in offsets], dim=-2)

    q_blocks = blocks(q) * q.shape[-1] ** -0.5
    k_near, v_near = neighbours(blocks(k)), neighbours(blocks(v))

    # which (query, key) pairs of each block fall outside the window or the sequence: nb s (o s)
    block = torch.arange(n_blocks, device=q.device)[:, None, None]
    q_pos = block * size + torch.arange(size, device=q.device)[None, :, None]
    k_pos = torch.cat(
        [(block + o) * size + torch.arange(size, device=q.device)[None, None, :] for o in offsets],
        dim=-1,
    )
    distance = q_pos - k_pos
    hidden = (k_pos < 0) | (k_pos >= n) | (distance.abs() >= window)
    if causal:
        hidden = hidden | (distance < 0)
    hidden = hidden[None, None]  # 1 1 nb s (o s)
    if key_padding_mask is not None:
        pad_blocks = rearrange(
            F.pad(key_padding_mask, (0, pad), value=True), "b (nb s) -> b 1 nb s 1", s=size
        )
        pad_near = neighbours(pad_blocks)  # b 1 nb (o s) 1
        hidden = hidden | rearrange(pad_near, "b 1 nb k 1 -> b 1 nb 1 k")
    # an additive bias (0 or −inf) instead of a boolean mask: explicit matmul + softmax on the
    # blocks is faster on CPU than the fused kernel's masked path, and memory stays O(n·w)
    bias = torch.zeros(hidden.shape, dtype=q.dtype, device=q.device).masked_fill_(hidden, float("-inf"))
    empty = None
    if key_padding_mask is not None:  # rows with every key hidden: a finite bias, zeroed below
        empty = hidden.all(dim=-1, keepdim=True)
        bias = bias.masked_fill(empty, 0.0)

    # a group of blocks at a time, so the (s × o·s) scores stay small: b h g s (o s)
    b, h = q.shape[:2]
    group = max(1, GROUP_ELEMENTS // (b * h * size * size * len(offsets)))
    outs = []
    for start in range(0, n_blocks, group):
        part = slice(start, start + group)
        scores = torch.matmul(q_blocks[:, :, part], k_near[:, :, part].transpose(-1, -2))
        scores += bias[:, :, part]  # the matmul's output is not saved for backward
        weights = torch.softmax(scores, dim=-1)
        if empty is not None:  # a query whose every key is hidden gets zeros, not NaN (as SDPA)
            weights = weights.masked_fill(empty[:, :, part], 0.0)
        outs.append(torch.matmul(weights, v_near[:, :, part]))
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return rearrange(out, "b h nb s d -> b h (nb s) d")[:, :, :n]
