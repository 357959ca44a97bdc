"""Scaled dot-product attention with a single head of width d_model (Luong et al. 2015; Vaswani et al. 2017)."""

from __future__ import annotations

from attnbench.variants.base import VariantSpec, register_variant
from attnbench.variants.multi_head import MultiHeadAttention


@register_variant("dot-product", aliases=("dot", "single-head"))
class DotProductAttention(MultiHeadAttention):
    """softmax(q kᵀ/√d_model) v with one head; the layer's `n_heads` argument is ignored."""

    spec = VariantSpec(
        complexity="n^2",
        description="one head of scaled dot-product attention (n_heads is ignored)",
    )

    def head_count(self) -> int:
        return 1
