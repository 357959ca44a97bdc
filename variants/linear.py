"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): φ(x) = elu(x) + 1.

Non-causal: out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), O(n·d²).
Causal, chunked: the sequence is cut into chunks of `chunk_size`; inside a chunk the masked
quadratic form is used, across chunks one (d × d) state per chunk carries Σ φ(k) vᵀ of every
earlier chunk; it walks the sequence `segment` positions at a time (carrying the state), so the
per-chunk states of one segment exist at once: memory is O(n·c + (segment/c)·d²) per head, never
the O(n·d²) of a per-position cumulative sum; on CPU in inference it scans a cache-sized group of
(batch, head) pairs at a time. The non-causal form walks the sequence in
cache-sized segments on CPU in inference, and takes it in one step where gradients are wanted or
on CUDA (temporaries O(n·d), like q). Computed in fp32 even for fp16/bf16 inputs, whose range the
sums would overflow; fp64 inputs in fp64.

`kernel=compiled` runs the same step functions fused by torch.compile (variants/compiled.py);
on CUDA, a call that needs no gradients replays a CUDA graph of the compiled step
(variants/graphs.py).
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
from attnbench.variants.compiled import COMPILED, check_kernel, compile_kernel, kernel_option
from attnbench.variants.graphs import replayed
from attnbench.variants.reference import linear_attention

EPS = 1e-6
LOG2_E = 1 / math.log(2)  # eˣ = 2^(x·log₂e)
# The causal form's chunk and step on CPU (`default_causal_chunk`, `default_causal_segment`),
# timed at 2 threads, b = 1 and 4, n = 512–16384 (scratch timings; `bench perf` in
# results/benchmarks/README.md). Without gradients a 32-position chunk, whose two in-chunk
# products cost half of a 64-position one's for twice the chunk-state prefix: eager in 512-position
# steps 0.92–0.97× the time of 64, compiled in 256-position ones 0.80–0.90× of 64 in 2048. With
# gradients, where each step adds autograd nodes, fewer steps: 64 in 2048 took 0.75–0.91× the time
# of 64 in 512 eager from n = 2048 (1.02× at 512), and stays fastest compiled (32: 1.08–1.12×).
# On CUDA the 64 it was timed at (below). Compiled, each new n compiles up to three static graphs
# (the first, middle and last steps: a step's slices keep the sequence's strides, which the
# graphs guard on; contiguous copies would share two across lengths for 1.04-1.08x the time).
CPU_CHUNK, CHUNK = 32, 64
CAUSAL_SEGMENT, FUSED_CAUSAL_SEGMENT, GRAD_CAUSAL_SEGMENT = 512, 256, 2048
# In inference the scan takes as many (batch, head) pairs at a time as keep a step's (pairs,
# segment, d) inputs within these (8 heads of 512 positions at d = 64, 1 MiB in fp32, eager; 8 of
# 256 compiled), the rest in later scans: at b = 4, h = 8 the eager form took 0.77–0.93× the time
# of all 32 pairs in each step at n = 512–4096 (`bench perf`, results/benchmarks/README.md), the
# compiled 0.89–0.90× (scratch timings; 16 pairs 0.91–0.93×); with gradients, groups were slower
# (`default_causal_pairs`).
CAUSAL_STEP_ELEMENTS, FUSED_CAUSAL_STEP_ELEMENTS = 1 << 18, 1 << 17
# On CUDA a step costs its ~30 kernel launches, not its arithmetic: about 0.4 ms a step eager and
# compiled alike on an H200 at b=1, h=8, d=64 (13.4 ms for the 32 steps of n = 16384 eager, 0.36 ms
# for the one fused step of n = 2048; results/benchmarks/2026-11-28-h200-bf16-b8013b1.md), so it
# takes up to 256 chunks a step (16384 positions at the default chunk of 64), and up to 2048 chunk
# states of d × e a step over the batch and heads (34 MB at d = 64): b = 1, h = 8 gets 256
# chunks a step, b = 32, h = 8 gets 8 (512 positions, as on CPU). Timed on an H200 at f8fe909: eager
# 0.58 / 0.61 / 0.70 ms at n = 2048 / 4096 / 16384, where it took 1.60 / 3.88 / 13.4 ms in 512-position steps.
CUDA_CHUNKS_PER_STEP, CUDA_STATES_PER_STEP = 256, 2048
# The non-causal form on CPU goes a segment at a time in inference, each (b h segment d) temporary
# at most 2¹⁹ elements eager (1024 positions at b=1, h=8, d=64; 2 MiB in fp32, this CPU's L2), 2²⁰
# compiled (whose steps leave fewer temporaries): with the feature map's exp cheap
# (`_feature_values`) its passes are bound by memory traffic. Beside the whole sequence in one
# step, eager 1024-position segments took 0.65× the time at n = 16384 and 256-position ones 0.71×
# at b=4, n=4096; compiled 2048-position ones 0.82× at 16384, where 1024 took 0.86× (scratch
# timings, 2 threads; `bench perf` in results/benchmarks/README.md).
GLOBAL_SEGMENT_ELEMENTS, FUSED_GLOBAL_SEGMENT_ELEMENTS, MIN_GLOBAL_SEGMENT = 1 << 19, 1 << 20, 256


@register_variant("linear", aliases=("linear-attention", "katharopoulos"))
class LinearAttention(ProjectedAttention):
    """Kernelized attention with φ(x) = elu(x) + 1, O(n) in time and memory."""

    spec = VariantSpec(
        complexity="n",
        description="kernelized attention φ(x)=elu(x)+1; chunked causal form",
        options=(
            Option(
                "chunk_size", int, 0, minimum=0,
                help="chunk length of the causal form; 0 = automatic: 32 on CPU without gradients, else 64",
            ),
            kernel_option(
                "ATen ops",
                "fused by torch.compile (needs a C++ compiler; compiles on first use, seconds per shape on CPU)",
            ),
        ),
    )

    def __init__(self, d_model: int, n_heads: int, **options) -> None:
        super().__init__(d_model, n_heads, **options)
        check_kernel("linear", self.options)

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        dtype = q.dtype
        compute = torch.promote_types(dtype, torch.float32)  # half precision up to fp32; fp64 stays fp64
        q, k, v = q.to(compute), k.to(compute), v.to(compute)
        fused = self.options["kernel"] == COMPILED
        if causal:
            out = causal_linear_attention(
                q, k, v, chunk_size=self.options["chunk_size"] or None, key_padding_mask=key_padding_mask,
                fused=fused,
            )
        else:
            out = global_linear_attention(q, k, v, key_padding_mask=key_padding_mask, fused=fused)
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


class _FeatureMap(torch.autograd.Function):
    """φ(x) = elu(x) + 1, computed as exp(min(x, 0)) + max(x, 0), with the derivative read from
    the output: φ′(x) = min(φ(x), 1), since φ = 1 + x > 1 where φ′ = 1, and φ = eˣ ≤ 1 where
    φ′ = eˣ.

    Equal to `reference.feature_map` up to rounding, and faster on CPU, where ATen's elu evaluates
    expm1 (b=1, h=8, n=2048, d=64, one thread here: `F.elu(x) + 1` 1.7 ms, this 1.1 ms, and half
    that since it computes eˣ as 2^(x·log₂e): `_feature_values`). Saves only the output for backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = _feature_values(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad * out.clamp(max=1.0)


def _features(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 (see `_FeatureMap`): through the autograd Function only where a gradient
    is wanted; calling it costs about 50 µs, which at n = 512 (b=1, h=8, d=64) is half the map's time."""
    if wants_grad(x):
        return _FeatureMap.apply(x)
    return _feature_values(x)


def _feature_values(x: Tensor) -> Tensor:
    """exp(min(x, 0)) + max(x, 0), no gradient.

    Eager on CPU in fp32 and fp64 as 2^(min(x, 0)·log₂e): ATen's exp2 there takes a quarter of its
    exp's time (0.075 against 0.32 ms for 2²⁰ floats, 2 threads, AVX-512; 0.14 against 0.33 under
    AVX2), so the map takes half the time, one more pass included (0.23 against 0.45 ms at b=1,
    h=8, n=2048, d=64), within (1 + |x|)·1e-7 relative of eˣ (x·log₂e rounds first; in bf16 that
    rounding would cost 4 %, so half precision keeps exp). Compiled, inductor writes its own exp
    (no faster as exp2 in `bench perf`); on CUDA both are one instruction and the extra pass would
    be one more launch.
    """
    if torch.compiler.is_compiling():  # fused either way; torch 2.11 compiles the in-place chain
        return x.clamp(max=0.0).exp() + x.relu()  # into zero gradients for x (2.13 does not)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return x.clamp(max=0.0).mul_(LOG2_E).exp2_().add_(x.relu())
    return x.clamp(max=0.0).exp_().add_(x.relu())


def _segments(n: int, segment: int) -> list[slice]:
    return [slice(start, min(start + segment, n)) for start in range(0, n, segment)]


def _mask_part(key_padding_mask: Tensor | None, part: slice) -> Tensor | None:
    return None if key_padding_mask is None else key_padding_mask[:, part]


def _by_segment(fn, q: Tensor, e: int, segment: int, out: Tensor | None = None) -> Tensor:
    """(b h n ·) → (b h n e) by `fn(part)` for each segment: written into one output, not
    concatenated; into `out` where given, else a new tensor (or the one segment's own output)."""
    parts = _segments(q.shape[-2], segment)
    if out is None:
        if len(parts) == 1:
            return fn(parts[0])
        out = q.new_empty(*q.shape[:-1], e)
    for part in parts:
        out[:, :, part] = fn(part)
    return out


def global_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    segment: int | None = None,
    fused: bool = False,
) -> Tensor:
    """Non-causal linear attention, (b h n d) → (b h n e), in O(n·d·e).

    One pass over the keys sums the state Σ φ(k_j) v_jᵀ (b h d e) and the normaliser's Σ φ(k_j)
    (b h d); a second applies them to the queries. `segment`: both go that many positions at a
    time, carrying the sums, so the temporaries are O(segment·d) rather than O(n·d); None (the
    default): `default_global_segment`. The segments' outputs are copied into one tensor (writing
    them in place, `out=`, was no faster in a scratch timing). `fused`: the same steps compiled
    (`_whole` as one graph, or `_key_state` and `_query_rows` a segment at a time), their
    element-wise work fused into the products' neighbours.
    """
    if segment is None:
        segment = default_global_segment(q, k, v, fused=fused)
    if segment >= max(q.shape[-2], k.shape[-2]):
        if fused:  # on CUDA without gradients, a graph's replay (variants/graphs.py)
            return replayed(compile_kernel(_whole, dynamic=None), q, k, v, key_padding_mask)
        return _whole(q, k, v, key_padding_mask)
    # compiled: full segments one static graph each, other lengths (the last segment) one with
    # dynamic sizes, so many sequence lengths do not run into the recompile limit
    key_state = compile_kernel(_key_state, dynamic=None) if fused else _key_state
    query_rows = compile_kernel(_query_rows, dynamic=None) if fused else _query_rows
    kv = ks = None
    for part in _segments(k.shape[-2], segment):
        part_kv, part_ks = key_state(k[:, :, part], v[:, :, part], _mask_part(key_padding_mask, part))
        kv, ks = (part_kv, part_ks) if kv is None else (kv + part_kv, ks + part_ks)
    return _by_segment(lambda part: query_rows(q[:, :, part], kv, ks), q, v.shape[-1], segment)


def default_global_segment(q: Tensor, k: Tensor, v: Tensor, *, fused: bool = False) -> int:
    """Positions per step of the non-causal form. On CPU without gradients, as many as keep one
    (b h segment d) temporary within GLOBAL_SEGMENT_ELEMENTS (FUSED_GLOBAL_SEGMENT_ELEMENTS
    compiled; at least MIN_GLOBAL_SEGMENT), so a step's passes over φ(k) and φ(q) stay in cache.
    Otherwise the whole sequence: where a step costs its launches (CUDA), and where gradients are
    wanted, whose backward through the segments' sums was slower (eager, b=16, h=8, n=2048, d=16:
    46 ms in 512-position segments, 33 ms whole)."""
    b, h, n, d = q.shape
    whole = max(n, k.shape[-2])
    if q.device.type != "cpu" or wants_grad(q, k, v):
        return whole
    budget = FUSED_GLOBAL_SEGMENT_ELEMENTS if fused else GLOBAL_SEGMENT_ELEMENTS
    return max(MIN_GLOBAL_SEGMENT, budget // max(1, b * h * d))


def _whole(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """The non-causal form in one step (one graph, compiled)."""
    return _query_rows(q, *_key_state(k, v, key_padding_mask))


def _key_state(k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """One segment's Σ φ(k_j) v_jᵀ (b h d e) and Σ φ(k_j) (b h d 1)."""
    fk = _key_features(k, key_padding_mask)
    return fk.transpose(-2, -1) @ v, rearrange(fk.sum(dim=-2), "b h d -> b h d 1")


def _query_rows(q: Tensor, kv: Tensor, ks: Tensor) -> Tensor:
    """One segment's outputs φ(q)ᵀ kv / (φ(q)ᵀ ks + eps), (b h m e).

    The normaliser is taken as the row ksᵀ φ(q)ᵀ (1 × m), a view of the column φ(q) ks: on CPU the
    (1 × d)(d × m) product takes a sixth of the (m × d)(d × 1) one's time (44 against 271 µs at
    b=1, h=8, m=2048, d=64, 2 threads), same numbers up to rounding.
    """
    fq = _features(q)
    normaliser = rearrange(ks.transpose(-2, -1) @ fq.transpose(-2, -1), "b h 1 m -> b h m 1")
    return (fq @ kv).div_(normaliser.add_(EPS))  # fresh matmul results: safe to change in place


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int | None = None,
    key_padding_mask: Tensor | None = None,
    segment: int | None = None,
    pairs: int | None = None,
    fused: bool = False,
) -> Tensor:
    """Causal linear attention, chunk-parallel: masked quadratic inside chunks, states across.

    Goes `segment` positions (whole chunks) at a time, carrying the state of every earlier
    segment, so the per-chunk states of only one segment exist at once; each step is one call of
    `_causal_step`. `pairs`: the scan takes at most that many of the b·h (batch, head) pairs at a
    time, in groups of one shape (`_pair_groups`), so a step's temporaries stay the same size at
    any batch. `fused`: that step compiled, static shapes: the segments share one length, the
    groups one shape. None: `default_causal_chunk`, `default_causal_segment`, `default_causal_pairs`.
    """
    (b, h, n, _) = q.shape
    if n == 0:  # no position: no chunk to cut; v's empty rows keep the output in the graph
        return v[:, :, :0] * 0.0
    grad = wants_grad(q, k, v)
    if chunk_size is None:
        chunk_size = default_causal_chunk(q.device, grad)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 (None: automatic), got {chunk_size}")
    size = min(chunk_size, n)
    if segment is None:
        segment = default_causal_segment(q.device, fused, size, b * h, grad=grad)
    segment = max(size, segment // size * size)
    if pairs is None:
        pairs = default_causal_pairs(q, k, v, positions=min(segment, n), fused=fused)
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    tril = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    step = functools.partial(replayed, compile_kernel(_causal_step, dynamic=False)) if fused else _causal_step
    groups = _pair_groups(b, h, pairs)
    if len(groups) == 1:
        return _scan(step, q, k, v, key_padding_mask, tril, segment)
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.expand(b, -1)  # a broadcast (1, n) mask: each group its rows
    out = q.new_empty(b, h, n, v.shape[-1])
    for rows, cols in groups:
        mask = None if key_padding_mask is None else key_padding_mask[rows]
        _scan(step, q[rows, cols], k[rows, cols], v[rows, cols], mask, tril, segment, out=out[rows, cols])
    return out


def _scan(
    step, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, tril: Tensor, segment: int,
    out: Tensor | None = None,
) -> Tensor:
    """The causal form over one group of pairs: `step` a segment at a time, each carrying the sums
    of the segments before it, the outputs written into `out` (None: a new tensor)."""
    carried = None  # (Σ φ(k_j) v_jᵀ, Σ φ(k_j)) over the earlier segments: (b h d e), (b h d)

    def one_segment(part: slice) -> Tensor:
        nonlocal carried
        result, carried = step(
            q[:, :, part], k[:, :, part], v[:, :, part], _mask_part(key_padding_mask, part), tril, carried
        )
        return result

    return _by_segment(one_segment, q, v.shape[-1], segment, out=out)


def default_causal_chunk(device: torch.device, grad: bool) -> int:
    """Chunk length of the causal form: CPU_CHUNK on CPU without gradients (`grad`), else CHUNK."""
    return CPU_CHUNK if device.type == "cpu" and not grad else CHUNK


def default_causal_segment(
    device: torch.device, fused: bool, chunk_size: int, batch_heads: int, *, grad: bool = False
) -> int:
    """Positions per step of the causal scan: on CUDA, where a step's cost is its launches, up to
    CUDA_CHUNKS_PER_STEP chunks and CUDA_STATES_PER_STEP chunk states over the `batch_heads` (b·h)
    entries; on CPU, where it is its memory traffic, CAUSAL_SEGMENT eager and FUSED_CAUSAL_SEGMENT
    fused, or GRAD_CAUSAL_SEGMENT where a gradient is wanted (`grad`): each step adds autograd nodes."""
    if device.type == "cuda":
        return max(1, min(CUDA_CHUNKS_PER_STEP, CUDA_STATES_PER_STEP // batch_heads)) * chunk_size
    if grad:
        return GRAD_CAUSAL_SEGMENT
    return FUSED_CAUSAL_SEGMENT if fused else CAUSAL_SEGMENT


def default_causal_pairs(q: Tensor, k: Tensor, v: Tensor, *, positions: int, fused: bool = False) -> int:
    """(batch, head) pairs per causal scan. On CPU without gradients, as many as keep a step's
    (pairs, `positions`, d) inputs within CAUSAL_STEP_ELEMENTS (FUSED_CAUSAL_STEP_ELEMENTS
    compiled), at least one. Otherwise all b·h at once: on CUDA a step costs its launches, and
    where gradients are wanted the groups' backward was slower (b=16, h=8, n=256: 1.56× the time
    in groups of 8 eager; b=4, n=2048: 1.08×)."""
    (b, h, _, d) = q.shape
    if q.device.type != "cpu" or wants_grad(q, k, v):
        return max(1, b * h)
    budget = FUSED_CAUSAL_STEP_ELEMENTS if fused else CAUSAL_STEP_ELEMENTS
    return max(1, budget // max(1, positions * d))


def _pair_groups(b: int, h: int, pairs: int) -> list[tuple[slice, slice]]:
    """(batch rows, heads) slices cutting the b·h pairs into groups of one shape, each at most
    `pairs`: whole batch elements where `pairs` ≥ h, as many as divide b; else as many of one
    element's heads as divide h. One shape, so the compiled step compiles one graph per length."""
    if b * h <= pairs:
        return [(slice(None), slice(None))]
    if pairs >= h:
        rows = _largest_divisor(b, pairs // h)
        return [(slice(i, i + rows), slice(None)) for i in range(0, b, rows)]
    cols = _largest_divisor(h, pairs)
    return [(slice(i, i + 1), slice(j, j + cols)) for i in range(b) for j in range(0, h, cols)]


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _causal_step(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, tril: Tensor,
    carried: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One segment of the causal form from its queries, keys and values (see `_causal_segment`)."""
    return _causal_segment(_features(q), _key_features(k, key_padding_mask), v, tril, carried)


def _causal_segment(
    fq: Tensor, fk: Tensor, v: Tensor, tril: Tensor, carried: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One segment of the causal form: (b h m e) outputs and the sums carried past it, Σ φ(k) vᵀ
    (b h d e) and Σ φ(k) (b h d).

    Works on (b·h·c, s, ·) batches of chunks, so every product is one `bmm` on views. The normaliser
    is summed beside the outputs, not read from a ones column appended to v: on CPU a bmm of width
    e + 1 = 65 took 1.16× the time of width 64, and dividing by a strided column was slower still.
    That is 17 computing ATen ops a step instead of 13 (views aside): untimed on CUDA, where a step
    costs its launches.
    """
    (b, h, m, _), size = fq.shape, tril.shape[0]
    c = -(-m // size)  # chunks, the last zero-padded: padded positions come last, no real query sees them
    pad = c * size - m
    fq, fk, v = (_chunked(t, size, pad) for t in (fq, fk, v))

    # inside each chunk: the quadratic form with the causal mask; its row sums, Σ_j φ(q_i)·φ(k_j)
    scores = torch.bmm(fq, fk.transpose(1, 2)).mul_(tril)  # (b h c) s s; bmm keeps no output for backward
    out = torch.bmm(scores, v)  # (b h c) s e
    normaliser = scores.sum(dim=-1)  # (b h c) s

    # across chunks: the sums of every earlier chunk of this segment and of the earlier segments
    states = rearrange(torch.bmm(fk.transpose(1, 2), v), "(b h c) d e -> b h c d e", b=b, h=h, c=c)
    key_sums = rearrange(fk.sum(dim=1), "(b h c) d -> b h c d", b=b, h=h, c=c)
    lower = torch.ones(c, c, dtype=states.dtype, device=states.device).tril(-1)
    earlier, total = _exclusive_prefix(states, None if carried is None else carried[0], lower)
    earlier_sums, total_sums = _exclusive_prefix(key_sums, None if carried is None else carried[1], lower)
    # + φ(q) earlier, in place: bmm saved its inputs, not `out`
    out = out.baddbmm_(fq, rearrange(earlier, "b h c d e -> (b h c) d e"))
    # + φ(q)·Σ φ(k) as a row times φ(q)ᵀ, the fast orientation (see `_query_rows`)
    rows = torch.bmm(rearrange(earlier_sums, "b h c d -> (b h c) 1 d"), fq.transpose(1, 2))
    normaliser = normaliser + rearrange(rows, "chunks 1 s -> chunks s")
    out = out.div_(rearrange(normaliser.add_(EPS), "chunks s -> chunks s 1"))
    out = rearrange(out, "(b h c) s e -> b h (c s) e", b=b, h=h, c=c)
    return out[:, :, :m], (total, total_sums)


def _chunked(t: Tensor, size: int, pad: int) -> Tensor:
    """(b h m d) → (b·h·c, size, d): zero-padded at the end to whole chunks, then a view."""
    return rearrange(F.pad(t, (0, 0, 0, pad)) if pad else t, "b h (c s) d -> (b h c) s d", s=size)


def _exclusive_prefix(states: Tensor, carried: Tensor | None, lower: Tensor) -> tuple[Tensor, Tensor]:
    """(b h c …) → for each chunk the sum of `carried` (b h …) and every earlier chunk's state, and
    that sum through the last chunk.

    One product with `lower`, the strictly lower-triangular (c × c) ones matrix, over the (b·h, c, ·) view:
    a shift, not `cumsum − x`, which could cancel; and on CPU about 3× faster than a running sum
    of c additions, 6× faster than `cumsum` along this middle dimension (n = 2048, h = 8).
    """
    b, h, c = states.shape[:3]
    flat = states.flatten(3).flatten(0, 1)  # (b·h, c, ·), a view: the states are one contiguous bmm result
    if carried is None:
        earlier = lower @ flat
    else:  # carried + lower @ flat in one op
        earlier = torch.baddbmm(carried.reshape(b * h, 1, -1), lower.expand(b * h, c, c), flat)
    total = earlier[:, -1] + flat[:, -1]
    return earlier.view(states.shape), total.view(states[:, :, -1].shape)
