"""Attention variants: importing this package registers the built-in ones."""

from attnbench.variants import additive, dot_product, linear, local, multi_head  # noqa: F401  (registers)
