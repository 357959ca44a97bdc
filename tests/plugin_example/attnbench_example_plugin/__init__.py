"""An example third-party variant: cosine-similarity attention (QK-norm, Henry et al. 2020).

It is a plain `nn.Module` with a `spec` class attribute, to show the smallest contract an
entry-point plugin must meet; `reference_forward` lets `bench check` compare it against naive math.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from attnbench import UnsupportedError, VariantSpec


class CosineAttention(nn.Module):
    """softmax(τ · cos(q, k)) v over h heads, with a fixed temperature τ."""

    spec = VariantSpec(
        complexity="n^2",
        supports_cross=False,
        returns_weights=False,
        description="cosine-similarity attention with a fixed temperature",
    )

    def __init__(self, d_model: int, n_heads: int, temperature: float = 10.0) -> None:
        super().__init__()
        self.n_heads, self.temperature = n_heads, temperature
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x):
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.n_heads)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def _check(self, context, need_weights):
        if context is not None:
            raise UnsupportedError("cosine does not support cross-attention")
        if need_weights:
            raise UnsupportedError("cosine does not return attention weights")

    def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
        self._check(context, need_weights)
        q, k, v = self._heads(x)
        mask = None
        if key_padding_mask is not None:
            visible = ~key_padding_mask[:, None, None, :]
            mask = visible & torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril() if causal else visible
            causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.temperature)
        return self.out(rearrange(out, "b h n d -> b n (h d)")), None

    def reference_forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
        """Naive fp32 math: explicit scores, mask, softmax."""
        self._check(context, need_weights)
        q, k, v = self._heads(x)
        scores = self.temperature * q @ k.transpose(-2, -1)
        n = x.shape[1]
        if causal:
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        out = scores.softmax(dim=-1) @ v
        return self.out(rearrange(out, "b h n d -> b n (h d)")), None
