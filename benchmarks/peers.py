"""Peer implementations (the `attnbench[peers]` extra), loaded only when installed.

- `local-attention` (lucidrains) `LocalAttention(window_size=w, exact_windowsize=True)`: blocks of
  w, each query block against its own and neighbouring key blocks, like `local`. With
  `exact_windowsize=True` query i sees |i − j| ≤ w, i.e. attnbench's `window = w + 1`; the blocks
  and the work are those of `local(window=w)`, so it is timed against `local(window=w)` and
  verified against the naive reference at window w + 1. No rotary embedding (no `dim` given).
- `linear-attention-transformer` (lucidrains) `linear_attn` / `causal_linear_attn`: O(n·d²)
  kernelized attention with softmax feature maps (not elu + 1; see
  `references.peer_linear_rows`), verified against its own definition in quadratic form.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

LOCAL_ATTENTION = "local-attention"
LINEAR_ATTENTION_TRANSFORMER = "linear-attention-transformer"
MODULES = {LOCAL_ATTENTION: "local_attention", LINEAR_ATTENTION_TRANSFORMER: "linear_attention_transformer"}


class PeerMissing(Exception):
    """The peer's package is not importable."""


@dataclass(frozen=True)
class Peer:
    """A peer implementation: `make(**options)` → a function of (q, k, v) in (b h n d)."""

    name: str
    make: Callable[..., Callable[[Tensor, Tensor, Tensor], Tensor]]


def _import(dist: str):
    try:
        return importlib.import_module(MODULES[dist])
    except ImportError as exc:  # the package or one of its dependencies is absent
        raise PeerMissing(f"{dist} not installed ({exc})") from exc


def version(dist: str) -> str | None:
    """The installed version of a peer distribution, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return None


def local_attention(*, window: int, causal: bool) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """lucidrains' LocalAttention with blocks of `window` (sees |i − j| ≤ window)."""
    module = _import(LOCAL_ATTENTION)
    layer = module.LocalAttention(
        window_size=window, causal=causal, exact_windowsize=True, autopad=True, use_rotary_pos_emb=False
    ).eval()
    return lambda q, k, v: layer(q, k, v)


def linear_attention(*, causal: bool, bucket_size: int = 64) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """linear-attention-transformer's `linear_attn` (non-causal) or `causal_linear_attn`."""
    module = _import(LINEAR_ATTENTION_TRANSFORMER)
    impl = importlib.import_module(f"{module.__name__}.linear_attention_transformer")
    if causal:
        return lambda q, k, v: impl.causal_linear_attn(q, k, v, bucket_size=bucket_size)
    return lambda q, k, v: impl.linear_attn(q, k, v)


PEERS = {
    LOCAL_ATTENTION: Peer(LOCAL_ATTENTION, local_attention),
    LINEAR_ATTENTION_TRANSFORMER: Peer(LINEAR_ATTENTION_TRANSFORMER, linear_attention),
}
