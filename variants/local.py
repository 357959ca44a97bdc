"""Sliding-window (local) attention (Child et al. 2019; Beltagy et al. 2020), computed block-wise.

Query i sees key j when |i − j| < window (causal: 0 ≤ i − j < window). Queries are cut into
blocks of `size = min(max(window, MIN_BLOCK), BLOCK)` positions; the keys a block can see are one
contiguous span of `size + 2·(window − 1)` positions (causal: `size + window − 1`), taken as an
overlapping view of the keys (`unfold`), not a copy (only the two ends of the sequence are
zero-padded, a group of blocks at a time), whose backward adds a block-wide column at a time. So
each query meets about 2·window keys (causal: window) plus the block, rather than the 3·window of
whole neighbouring blocks: time and memory are O(n·w) and no (n × n) tensor is formed. The
per-block attention is one fused SDPA call over a group of blocks (each block one batch entry of
the fused kernel) with the band as an additive −inf mask; on CPU this beat an explicit matmul +
softmax on the same blocks, most with small heads and in training (benchmarks/). The mask is built
a group at a time, and a group is bounded by its mask's entries and by its scores' (on CPU
tighter where gradients are needed: its backward holds them in span-shaped key and value
gradients). On CUDA, where a group costs its launches more than its arithmetic, the bounds are far
larger (one group at every length `bench perf` times, and in training too: its span-shaped
gradients, about 3× the keys and values, are not bounded further there) and the band's bias,
without key padding, is built once per shape and kept (variants/caches.py drops it).

Short sequences take one fused call over the whole sequence: full attention when the window
covers it (window ≥ n), else the band as one (n × n) mask when n ≤ DENSE_MAX_N, or n ≤ 2·DENSE_MAX_N
and the window spans half of it (n ≤ 2·window): where that was faster than the blocks. That mask is
bounded like a group's.

`kernel=compiled` runs FlexAttention over the band's tiles instead (variants/local_flex.py): the
fused path for CUDA; on CPU forward only.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.options import Option
from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant, wants_grad
from attnbench.variants.caches import register_cache
from attnbench.variants.compiled import COMPILED, check_kernel, kernel_option
from attnbench.variants.local_flex import flex_window_attention, require_flex
from attnbench.variants.masking import dense_hidden
from attnbench.variants.reference import full_attention

MIN_BLOCK = 16  # query positions per block at least: below it per-block work outweighs the keys that
# smaller blocks skip (forward + backward, batch 32, 4 heads of 16, 2 threads: 0.60× the time of
# blocks of `window` at window 2, 0.61–0.70× at 4, 0.92–0.98× at 8; forward, b=1, h=8, d=64, window 4:
# 0.69–0.76×; blocks of 32 were slower than 16 at each; scratch timings)
BLOCK = 128  # query positions per block at most: smaller blocks waste less of the span, larger ones
# make better matmuls; 128 was fastest for windows 128 and 256 (benchmarks/, 1 thread)
GROUP_ELEMENTS = 1 << 20  # entries of one SDPA call's band mask (blocks·size·span, times b·h with a key
# padding mask): at b=1, h=8, d=64, 2 threads 0.87–0.96× the time of a bound of 1 << 20 on all
# b·h·blocks·size·span score entries (n = 2048 to 16384, windows 128 and 256), and no faster with 4×
GROUP_SCORES = 8 << 20  # and its score entries (b·h·blocks·size·span): 0.88–0.96× the time of 2 << 20 at
# b=1, h=8, d=64 (n = 4096, 16384; scratch timings). Where gradients are needed, TRAINING_GROUP_SCORES:
TRAINING_GROUP_SCORES = 1 << 20  # a group's backward holds its span-shaped key and value gradients,
# about 3× the keys it covers: at 8 << 20 training at b=1, h=8, d=64, n = 4096 peaked at 81 MiB, not 57
CUDA_GROUP_ELEMENTS, CUDA_GROUP_SCORES = 1 << 24, 1 << 28  # the bounds on CUDA, where each group costs
# its launches (about 25 ops: on an H200 the blocked path took 0.83 ms at n = 4096, window 128, in two
# groups, 1.6x local-attention's time): one group up to n = 32768 at window 128, b = 1, h = 8; the mask
# at most 32 MiB in bf16, and fused kernels hold no scores (SDPA's math path, for a dtype or head size
# no fused kernel takes, would: up to 1 GiB of them). Its band bias is cached there (`_cached_bias`)
DENSE_MAX_N = 128  # up to this length, or up to twice it while the window spans half the sequence,
# the band is one (n × n) mask over the whole sequence (`_banded_dense`): there the blocks' per-block
# work costs more than the keys they skip (2 threads, batch 32, 4 heads of 16, forward + backward:
# 0.29× the blocks' time at n = 32, window 4; 0.78× at 128, window 16; 0.50–0.76× at 256, window 128;
# but 1.43× at 256, window 16). Past 256 always the blocks: efficiency cells verify the kernel at
# n = 300 (runner.measure), which must be the path they time at long n. Bounded by GROUP_ELEMENTS.


@register_variant("local", aliases=("sliding-window", "window"))
class LocalAttention(ProjectedAttention):
    """Softmax attention restricted to a sliding window of `window` positions."""

    spec = VariantSpec(
        complexity="n*w",
        supports_cross=False,
        description="sliding-window softmax attention, block-wise O(n·w)",
        options=(
            Option("window", int, 128, minimum=1, help="query i sees key j where |i - j| < window"),
            kernel_option(
                "block-wise, each group of blocks one fused SDPA call with the band as its mask",
                "FlexAttention over the band's tiles, by torch.compile: the fast path on CUDA (0.05-0.12x "
                "local-attention's time on an H200, eager 0.17-0.47x), a call without gradients replayed from a "
                "CUDA graph; needs Triton or a C++ compiler; no backward on CPU",
            ),
        ),
    )

    def __init__(self, d_model: int, n_heads: int, **options) -> None:
        super().__init__(d_model, n_heads, **options)
        if self.options["kernel"] == COMPILED:  # first: no compiler helps an older torch
            require_flex("local: kernel=compiled")
        check_kernel("local", self.options)

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        window = self.options["window"]
        attend = flex_window_attention if self.options["kernel"] == COMPILED else sliding_window_attention
        out = attend(q, k, v, window=window, causal=causal, key_padding_mask=key_padding_mask)
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
    if window >= n or 0 in q.shape[:2]:  # the window covers the sequence (or the batch is empty):
        # plain full attention, one fused call
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        hidden = dense_hidden(n, n, key_padding_mask=key_padding_mask, causal=causal, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~hidden)
    b, h = q.shape[:2]
    mask_batch = 1 if key_padding_mask is None else b * h  # copies of a mask SDPA takes
    short = n <= DENSE_MAX_N or (n <= 2 * window and n <= 2 * DENSE_MAX_N)
    if short and mask_batch * n * n <= GROUP_ELEMENTS:
        return _banded_dense(q, k, v, window=window, causal=causal, key_padding_mask=key_padding_mask)
    size = min(max(window, MIN_BLOCK), BLOCK)  # query positions per block
    n_blocks = math.ceil(n / size)
    behind, ahead = window - 1, (0 if causal else window - 1)  # how far a query sees back / ahead
    span = behind + size + ahead  # keys seen by one query block: i·size − behind + [0, span)

    key_hidden = None  # b nb span: the padded keys of each block's span (a view)
    if key_padding_mask is not None:
        key_hidden = F.pad(key_padding_mask, (behind, n_blocks * size - n + ahead), value=True).unfold(-1, span, size)

    # a group of blocks at a time, its band mask and scores bounded. Inputs are sliced per group
    # (views, padded only at the two ends): no full-size copies of q, k, v. Each block is one
    # batch entry of SDPA's fused kernel, with its band as the additive mask: ((b h) g s d)
    block_entries = size * span
    on_cuda = q.device.type == "cuda"
    if on_cuda:
        elements, scores = CUDA_GROUP_ELEMENTS, CUDA_GROUP_SCORES
    else:
        elements, scores = GROUP_ELEMENTS, (TRAINING_GROUP_SCORES if wants_grad(q, k, v) else GROUP_SCORES)
    group = max(1, min(elements // (mask_batch * block_entries), scores // (b * h * block_entries)))
    outs = []
    for first in range(0, n_blocks, group):
        last = min(first + group, n_blocks)
        start, stop = first * size, last * size  # the query positions of these blocks
        if on_cuda and key_hidden is None:
            bias, empty = _cached_bias(n, first, last, size, behind, ahead, q.dtype, q.device), None
        else:
            bias, empty = _band_bias(n, first, last, size, behind, ahead, key_hidden, q.dtype, q.device)
        queries = rearrange(_positions(q, start, stop), "b h (g s) d -> (b h) g s d", s=size)
        keys, values = (_spans(t, start, stop, size, behind, ahead) for t in (k, v))
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=_per_batch(bias, h))
        out = rearrange(out, "(b h) g s d -> b h g s d", b=b)
        if empty is not None:  # a query whose every key is hidden gets zeros, not NaN (as SDPA)
            out = out.masked_fill(empty, 0.0)
        out = rearrange(out, "b h g s d -> b h (g s) d")
        outs.append(out[:, :, : n - start])  # the last group drops its padded queries
    return torch.cat(outs, dim=-2) if len(outs) > 1 else outs[0]


def _banded_dense(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool, key_padding_mask: Tensor | None
) -> Tensor:
    """The band as an additive (n × n) mask over the whole sequence, one fused SDPA call: for
    short sequences, where it beats the blocks (see DENSE_MAX_N)."""
    n = q.shape[-2]
    hidden = dense_hidden(n, n, key_padding_mask=key_padding_mask, causal=causal, window=window, device=q.device)
    bias, empty = _additive(hidden, key_padding_mask is not None, q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out if empty is None else out.masked_fill(empty, 0.0)


def _per_batch(bias: Tensor, h: int) -> Tensor:
    """A group's bias (b|1 1 g s c) as SDPA's mask for ((b h) g s d) blocks: shared by every
    batch entry without a key padding mask, else one per (b h) (at most GROUP_ELEMENTS entries)."""
    if bias.shape[0] == 1:
        return bias[0]
    return rearrange(bias.expand(-1, h, -1, -1, -1), "b h g s c -> (b h) g s c")


def _spans(t: Tensor, start: int, stop: int, size: int, behind: int, ahead: int) -> Tensor:
    """The keys (or values) each query block of positions [start, stop) sees: ((b h) g span d),
    block i's span being positions start + i·size − behind + [0, span): an overlapping view
    (through `_Spans` only where a gradient is wanted: calling it costs tens of µs)."""
    x, span = _positions(t, start - behind, stop + ahead), behind + size + ahead
    if wants_grad(x):
        return _Spans.apply(x, span, size)
    return _Spans.forward(x, span, size)


class _Spans(torch.autograd.Function):
    """(b h L d) → ((b h) g span d): the windows of `span` positions every `size` positions, as an
    overlapping view (`unfold`, no copy: SDPA takes it as it is).

    Its backward adds the gradient into one buffer a `size`-wide column of the windows at a time
    (ceil(span / size) strided adds), where `unfold`'s own backward scatters element by element:
    that cost as much as the fused kernel's own backward at window 16 (batch 32, n = 128).
    """

    generate_vmap_rule = True  # torch.func's transforms (vmap, grad) go through it as through unfold

    @staticmethod
    def forward(x: Tensor, span: int, size: int) -> Tensor:
        return rearrange(x.unfold(-2, span, size), "b h g d c -> (b h) g c d")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, ctx.size = inputs
        ctx.shape = x.shape

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (b, _, length, d), size = ctx.shape, ctx.size
        bh, g, span, _ = grad.shape
        columns = -(-span // size)
        out = grad.new_zeros(bh, (g + columns) * size, d)  # whole blocks; cut to `length` below
        for first in range(0, span, size):
            last = min(first + size, span)
            windows = out[:, first : first + g * size].view(bh, g, size, d)
            windows[:, :, : last - first] += grad[:, :, first:last]
        return rearrange(out[:, :length], "(b h) n d -> b h n d", b=b), None, None


def _positions(t: Tensor, start: int, stop: int) -> Tensor:
    """Positions [start, stop) of a (b h n d) tensor, zero rows where the range leaves [0, n).

    A view when the range lies inside the sequence; otherwise a copy of just that range.
    """
    n = t.shape[-2]
    inside = t[:, :, max(start, 0) : min(stop, n)]
    before, after = max(0, -start), max(0, stop - n)
    return F.pad(inside, (0, 0, before, after)) if before or after else inside


def _band_bias(
    n: int,
    first: int,
    last: int,
    size: int,
    behind: int,
    ahead: int,
    key_hidden: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor | None]:
    """The additive bias (0 or −inf) of the (size × span) scores of blocks [first, last):
    b|1 1 g s span; `key_hidden` (b nb span): each block's padded keys, or None.

    Also the rows whose every key is hidden (only possible with a key padding mask), else None.
    """
    span = behind + size + ahead
    row = torch.arange(size, device=device)[:, None]  # query r of a block
    col = torch.arange(span, device=device)[None, :]  # key c of its span
    offset = col - behind - row  # j − i
    block_start = torch.arange(first, last, device=device)[:, None, None] * size
    key_pos = block_start - behind + col  # g 1 span
    hidden = (offset < -behind) | (offset > ahead) | (key_pos < 0) | (key_pos >= n)  # g s span
    hidden = hidden[None, None]
    if key_hidden is not None:
        hidden = hidden | rearrange(key_hidden[:, first:last], "b g c -> b 1 g 1 c")
    return _additive(hidden, key_hidden is not None, dtype)


@functools.lru_cache(maxsize=16)  # dropped by variants/caches.py forget_caches
def _cached_bias(
    n: int, first: int, last: int, size: int, behind: int, ahead: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """`_band_bias` without key padding, built once per shape (on CUDA: its dozen small ops cost
    more than the attention at short n), outside inference mode so that a backward may save it."""
    with torch.inference_mode(False):
        return _band_bias(n, first, last, size, behind, ahead, None, dtype, device)[0]


register_cache(_cached_bias.cache_clear)


def _additive(hidden: Tensor, padded: bool, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """A boolean mask (True: hidden) as an additive bias (0 or −inf: the form SDPA's fused CPU
    kernel takes as it is), and, with key padding (`padded`), the rows whose every key is hidden:
    their bias is left finite, and the caller zeroes their outputs (as SDPA would). Without key
    padding every query sees at least itself: None."""
    bias = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device).masked_fill_(hidden, float("-inf"))
    if not padded:
        return bias, None
    empty = hidden.all(dim=-1, keepdim=True)
    return bias.masked_fill_(empty, 0.0), empty
