"""Multi-head scaled dot-product attention (Vaswani et al. 2017) on torch's fused SDPA kernel."""

from __future__ import annotations

import torch.nn.functional as F

from attnbench.variants.base import ProjectedAttention, VariantSpec, register_variant
from attnbench.variants.masking import dense_hidden
from attnbench.variants.reference import full_attention


@register_variant("multi-head", aliases=("mha", "softmax"))
class MultiHeadAttention(ProjectedAttention):
    """h heads of softmax(q kᵀ/√d) v; `scaled_dot_product_attention` unless weights are asked for."""

    spec = VariantSpec(
        complexity="n^2",
        description="h heads of scaled dot-product attention on torch's fused SDPA",
    )

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        if need_weights:  # the fused kernel never forms the weights: take the explicit path
            return full_attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal)
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal), None
        hidden = dense_hidden(
            q.shape[-2], k.shape[-2], key_padding_mask=key_padding_mask, causal=causal, device=q.device
        )
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~hidden), None

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return full_attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal)
