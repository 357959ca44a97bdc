"""Sliding-window attention by FlexAttention (`local` with `kernel=compiled`): one fused kernel
that visits only the (128 × 128) tiles the band crosses.

The band's tiles are listed from the window (`window_block_mask`): one comparison per pair of
tiles, (n/128)² of them (16 K at n = 16384), instead of evaluating the mask at every one of the
n² (query, key) pairs as `create_block_mask` does. Tiles wholly inside the band (and the
sequence) are marked full, and their mask is not evaluated; the others evaluate `mask_mod` per
entry. With a key padding mask every tile is partial, so the padding is applied everywhere. A
query whose every key is hidden gets zeros, as in the blocked path and SDPA.

torch.compile turns `flex_attention` into Triton on CUDA and C++ on CPU. On CUDA a call without
gradients or a key padding mask replays a CUDA graph of the compiled call (variants/graphs.py):
a call's host work (dynamo's guards, the wrappers, the launch) kept it at 0.09–0.13 ms on an
H200 at every n from 2048 to 16384, against 0.079 ms for dense SDPA's whole call at n = 4096;
replayed, the call took 0.041 ms there. On CPU torch has no
backward for it: a call that needs gradients there raises NoBackwardError (kernel=eager trains
on CPU). Where a compiled kernel cannot run (under a dispatch mode such as the FLOP counter, on meta tensors; see
variants/compiled.py) `tiled_window_attention` runs the same maths over the same tiles, one
query tile at a time by SDPA against the run of key tiles it crosses: so what is counted is what
the flex kernel multiplies. (The blocked path, counted before, spans more keys: 1.19× and 1.42×
the tiles' FLOPs at window 128 and 256 at n = 512, 1.04× and 1.08× at 2048; b = 1, h = 8, d = 64,
which read as more than the matmul peak.)
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from attnbench.errors import NoBackwardError, UnsupportedError
from attnbench.variants.base import wants_grad
from attnbench.variants.caches import register_cache
from attnbench.variants.compiled import compile_kernel, runs_eager
from attnbench.variants.graphs import replayed

TILE = 128  # FlexAttention's default block size (queries and keys)
MIN_HEAD_DIM = 16  # the narrowest head FlexAttention's CUDA (Triton) kernel takes
# a block mask states its sequence lengths (`from_kv_blocks(seq_lengths=)`) from torch 2.6; before,
# it claimed whole tiles, which a length not a multiple of TILE contradicts (and CPU had no flex kernel)
HAS_SEQ_LENGTHS = "seq_lengths" in inspect.signature(BlockMask.from_kv_blocks).parameters


def require_flex(owner: str) -> None:
    """UnsupportedError, in one line, where this torch's FlexAttention lacks what this module uses."""
    if not HAS_SEQ_LENGTHS:
        raise UnsupportedError(
            f"{owner} needs FlexAttention from torch >= 2.6 (this is {torch.__version__}); kernel=eager needs none"
        )


def flex_window_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool = False, key_padding_mask: Tensor | None = None
) -> Tensor:
    """(b h n d) → (b h n d): softmax attention over keys with |i − j| < window (causal:
    0 ≤ i − j < window), by compiled FlexAttention with the band's block mask."""
    if not torch.compiler.is_compiling() and runs_eager(q, k, v):  # the same maths over the same tiles
        return tiled_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=key_padding_mask)
    if q.device.type == "cpu" and wants_grad(q, k, v):
        raise NoBackwardError(
            f"local: kernel=compiled (FlexAttention) has no backward on CPU in torch {torch.__version__}; "
            "kernel=eager trains on CPU"
        )
    if q.device.type == "cpu" and q.dtype == torch.float64:  # else inductor's lowering error, pages long
        raise UnsupportedError(f"local: kernel=compiled (FlexAttention) takes fp32, fp16 and bf16 on CPU in torch "
                               f"{torch.__version__}, not float64; kernel=eager computes in float64")
    n = q.shape[-2]
    kernel = compile_kernel(_flex, dynamic=False)
    if key_padding_mask is None:  # a cached block mask: on CUDA without gradients, a graph's replay
        return replayed(kernel, q, k, v, _cached_block_mask(n, window, causal, q.device))
    return kernel(q, k, v, window_block_mask(n, window, causal, q.device, key_padding_mask))


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask) -> Tensor:
    """FlexAttention with the usual 1/√d scale; heads narrower than MIN_HEAD_DIM (which its CUDA
    kernel refuses) are zero-padded to it, which changes no score, and cut back after."""
    d, e = q.shape[-1], v.shape[-1]
    if min(d, e) >= MIN_HEAD_DIM:
        return flex_attention(q, k, v, block_mask=block_mask)
    widen = lambda t: F.pad(t, (0, MIN_HEAD_DIM - t.shape[-1])) if t.shape[-1] < MIN_HEAD_DIM else t  # noqa: E731
    out = flex_attention(widen(q), widen(k), widen(v), block_mask=block_mask, scale=d**-0.5)
    return out[..., :e]


@functools.lru_cache(maxsize=32)
def _cached_block_mask(n: int, window: int, causal: bool, device: torch.device) -> BlockMask:
    """Shared by every later call, with or without gradients: built outside inference mode, whose
    tensors a backward could not save (`bench run` times a forward in inference mode, then a
    forward and backward at the same shape)."""
    with torch.inference_mode(False):
        return window_block_mask(n, window, causal, device)


register_cache(_cached_block_mask.cache_clear)  # variants/caches.py forget_caches drops it


def window_block_mask(
    n: int, window: int, causal: bool, device: torch.device, key_padding_mask: Tensor | None = None
) -> BlockMask:
    """The band |i − j| < window (causal: 0 ≤ i − j < window) of an (n × n) score matrix as a
    FlexAttention BlockMask of TILE-sized tiles, listed from the window; `key_padding_mask`
    (b m, True = hidden) hides keys too."""
    lo, hi = _offsets(window, causal)
    first, smallest, largest, touched = _band_tiles(n, lo, hi, device)
    whole = first + TILE <= n  # a tile cut by the sequence's end is never full (as create_block_mask)
    full = (smallest >= lo) & (largest <= hi) & whole[:, None] & whole[None, :]
    if key_padding_mask is not None:  # the padding is a per-entry mask: no tile is full
        full = torch.zeros_like(full)
    partial = touched & ~full

    def mask_mod(b, h, q_idx, kv_idx):
        offset = q_idx - kv_idx
        seen = (offset >= lo) & (offset <= hi)
        return seen if key_padding_mask is None else seen & ~key_padding_mask[b, kv_idx]

    counts, indices = _ordered(partial)
    full_counts, full_indices = _ordered(full)
    return BlockMask.from_kv_blocks(
        counts, indices, full_counts, full_indices, BLOCK_SIZE=TILE, mask_mod=mask_mod, seq_lengths=(n, n)
    )


def tiled_window_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool = False, key_padding_mask: Tensor | None = None
) -> Tensor:
    """`flex_window_attention`'s maths in plain ops, over its tiles: for each query tile, SDPA against
    the keys of the tiles the band crosses there (a contiguous run, `_key_tiles`; a view), with the
    band (and padding) as its mask. The eager form where the compiled kernel cannot run (a dispatch
    mode, meta tensors): a FLOP counter sees the products the flex kernel computes. A query whose
    every key is hidden gets zeros, as in the kernel."""
    n = q.shape[-2]
    lo, hi = _offsets(window, causal)
    out = []
    for start, (first, stop) in zip(range(0, n, TILE), _key_tiles(n, lo, hi)):
        end = min(start + TILE, n)
        offset = torch.arange(start, end, device=q.device)[:, None] - torch.arange(first, stop, device=q.device)[None, :]
        seen = (offset >= lo) & (offset <= hi)  # r c
        if key_padding_mask is not None:
            seen = seen & ~rearrange(key_padding_mask[:, first:stop], "b c -> b 1 1 c")  # b 1 r c
        part = F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, first:stop], v[:, :, first:stop], attn_mask=seen)
        out.append(part.masked_fill(~seen.any(dim=-1, keepdim=True), 0.0))  # all hidden: NaN → 0
    return torch.cat(out, dim=-2) if out else v[:, :, :0].clone()  # n = 0: no tile


def _offsets(window: int, causal: bool) -> tuple[int, int]:
    """The offsets i − j a query sees, [lo, hi]: |i − j| < window (causal: 0 ≤ i − j < window)."""
    return (0 if causal else 1 - window), window - 1


def _band_tiles(n: int, lo: int, hi: int, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The band's TILE-sized tiles of an (n × n) score matrix: each tile's first position, the
    smallest and largest offset i − j over query tile a and key tile b (q_tiles × kv_tiles), and
    which tiles those offsets meet [lo, hi] in (the tiles the band crosses)."""
    first = torch.arange(-(-n // TILE), device=device) * TILE
    last = torch.clamp(first + TILE, max=n) - 1  # the last position of each tile
    # offsets i − j over query tile a and key tile b span [first_a − last_b, last_a − first_b]
    smallest, largest = first[:, None] - last[None, :], last[:, None] - first[None, :]
    return first, smallest, largest, (smallest <= hi) & (largest >= lo)


def _key_tiles(n: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """For each query tile, the [first, stop) key positions of the tiles the band crosses there
    (`_band_tiles`; a contiguous run: the band is)."""
    *_, touched = _band_tiles(n, lo, hi, "cpu")
    runs = []
    for row in touched:  # every row holds its diagonal tile: offset 0 is in [lo, hi]
        crossed = row.nonzero().flatten()
        runs.append((int(crossed[0]) * TILE, min(n, (int(crossed[-1]) + 1) * TILE)))
    return runs


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """(q_tiles × kv_tiles) booleans → each query tile's count of kv tiles and their indices (the
    marked ones first, in order), as (1 1 q_tiles) and (1 1 q_tiles kv_tiles) int32."""
    counts = tiles.sum(dim=-1, dtype=torch.int32)
    indices = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return rearrange(counts, "q -> 1 1 q"), rearrange(indices, "q k -> 1 1 q k")
