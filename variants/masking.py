"""Masks shared by the fast paths and the references: which keys a query may not see."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def dense_hidden(
    n: int,
    m: int,
    *,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    window: int | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Bool (b|1, 1, n, m), True where query i may not see key j; None when nothing is hidden.

    causal hides j > i; window w hides |i − j| ≥ w (and, with causal, i − j ≥ w).
    """
    hidden = None
    if causal or window is not None:
        i = torch.arange(n, device=device)[:, None]
        j = torch.arange(m, device=device)[None, :]
        band = torch.zeros(n, m, dtype=torch.bool, device=device)
        if causal:
            band |= j > i
        if window is not None:
            band |= (i - j).abs() >= window
        hidden = band[None, None]
    if key_padding_mask is not None:
        pad = rearrange(key_padding_mask, "b m -> b 1 1 m")
        hidden = pad if hidden is None else hidden | pad
    return hidden


def masked_softmax(scores: Tensor, hidden: Tensor | None) -> Tensor:
    """Softmax over the last axis ignoring hidden keys; a row with every key hidden gets zeros.

    The zero row (instead of NaN) keeps padded queries harmless, the same convention as torch's
    `scaled_dot_product_attention`.
    """
    if hidden is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(hidden, float("-inf"))
    empty = hidden.all(dim=-1, keepdim=True)
    return scores.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)
