"""attnbench: a pluggable benchmark suite for attention mechanisms.

Public API:
    register_variant, build_variant, list_variants, get_variant_spec, VariantSpec, Option,
    ProjectedAttention (base class with projections), AttentionLayer (base class)
"""

from attnbench.errors import AttnbenchError, OptionError, PluginError, UnknownNameError, UnsupportedError
from attnbench.options import Option
from attnbench.variants.base import (
    VARIANTS,
    AttentionLayer,
    ProjectedAttention,
    VariantSpec,
    build_variant,
    get_variant_spec,
    list_variants,
    register_variant,
)
import attnbench.variants  # noqa: E402,F401  (registers the built-in variants)

__version__ = "0.1.0"

__all__ = [
    "AttentionLayer",
    "AttnbenchError",
    "Option",
    "OptionError",
    "PluginError",
    "ProjectedAttention",
    "UnknownNameError",
    "UnsupportedError",
    "VARIANTS",
    "VariantSpec",
    "build_variant",
    "get_variant_spec",
    "list_variants",
    "register_variant",
]
