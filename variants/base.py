"""The variant contract: `VariantSpec`, the `AttentionLayer` base class, and the variant registry.

A variant is an `nn.Module` attention layer (projections included) called as

    out, weights = layer(x, context=None, *, key_padding_mask=None, causal=False, need_weights=False)

x: (b, n, d_model); context: (b, m, d_model) for cross-attention (m = n without it);
key_padding_mask: (b, m) bool, True = ignore that key; out: (b, n, d_model);
weights: (b, h, n, m) when asked for and supported, else None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from attnbench.errors import AttnbenchError, OptionError, PluginError, UnsupportedError
from attnbench.options import Option, resolve_options
from attnbench.registry import Registry, check_spec_class, class_or_module

COMPLEXITIES = ("n^2", "n*w", "n*log(n)", "n")


@dataclass(frozen=True)
class VariantSpec:
    """What a variant can do, frozen: the runner skips impossible cells instead of crashing."""

    complexity: str
    supports_causal: bool = True
    supports_padding_mask: bool = True
    supports_cross: bool = True
    returns_weights: bool = True
    options: tuple[Option, ...] = ()
    own_positions: bool = False  # the layer encodes positions itself; the model adds none
    description: str = ""

    def capabilities(self) -> list[str]:
        """Short names of the supported features."""
        flags = {
            "causal": self.supports_causal,
            "padding": self.supports_padding_mask,
            "cross": self.supports_cross,
            "weights": self.returns_weights,
        }
        return [name for name, on in flags.items() if on]

    def resolve(self, owner: str, given: dict[str, Any], *, from_text: bool = False) -> dict:
        """All options of this variant, `given` validated, the rest at their defaults."""
        return resolve_options(owner, self.options, given, from_text=from_text)


class AttentionLayer(nn.Module):
    """Base class of the built-in variants: input validation against `spec` at the edge."""

    spec: ClassVar[VariantSpec]
    variant_name: str = ""

    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        super().__init__()
        name = self.variant_name or type(self).__name__
        for label, value in (("d_model", d_model), ("n_heads", n_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OptionError(f"{name}: {label} must be a positive int, got {value!r}")
        self.d_model, self.n_heads = d_model, n_heads
        self.options = self.spec.resolve(name, options)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self.check_call(x, context, key_padding_mask, causal, need_weights)
        return self.attend(
            x, context, key_padding_mask=key_padding_mask, causal=causal, need_weights=need_weights
        )

    def attend(
        self,
        x: Tensor,
        context: Tensor | None,
        *,
        key_padding_mask: Tensor | None,
        causal: bool,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        raise self._missing(
            "AttentionLayer", "attend(x, context, *, key_padding_mask, causal, need_weights)",
            "the attention itself (or subclass ProjectedAttention and implement core)",
        )

    def _missing(self, base: str, signature: str, role: str) -> NotImplementedError:
        """The error for a method a subclass must implement: which one, its signature, its role."""
        name = self.variant_name or type(self).__name__
        return NotImplementedError(
            f"{name}: {base} subclasses implement {signature} -> (out, weights|None), {role}"
        )

    def check_call(
        self,
        x: Tensor,
        context: Tensor | None,
        key_padding_mask: Tensor | None,
        causal: bool,
        need_weights: bool,
    ) -> None:
        """Raise a clear error for a call the spec does not allow or shapes that do not fit."""
        name, spec, d = self.variant_name or type(self).__name__, self.spec, self.d_model
        if x.dim() != 3 or x.shape[-1] != d:
            raise AttnbenchError(f"{name}: x must be (b, n, {d}), got {tuple(x.shape)}")
        if context is not None:
            if not spec.supports_cross:
                raise UnsupportedError(f"{name} does not support cross-attention (context=...)")
            if causal:
                raise UnsupportedError(f"{name}: causal=True applies to self-attention, not context")
            if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != d:
                raise AttnbenchError(
                    f"{name}: context must be ({x.shape[0]}, m, {d}), got {tuple(context.shape)}"
                )
        if causal and not spec.supports_causal:
            raise UnsupportedError(f"{name} does not support causal=True")
        if key_padding_mask is not None:
            if not spec.supports_padding_mask:
                raise UnsupportedError(f"{name} does not support key_padding_mask")
            m = (context if context is not None else x).shape[1]
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (
                x.shape[0],
                m,
            ):
                raise AttnbenchError(
                    f"{name}: key_padding_mask must be a bool tensor of shape ({x.shape[0]}, {m}),"
                    f" got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
                )
        if need_weights and not spec.returns_weights:
            raise UnsupportedError(f"{name} does not return attention weights (need_weights=True)")


class ProjectedAttention(AttentionLayer):
    """q, k, v and output projections around a core that works on per-head (b h n d) tensors.

    Subclasses implement `core` (the fast path) and `reference_core` (naive fp32 math); the
    contract checks compare `forward` against `reference_forward`, outputs and gradients.
    """

    def __init__(self, d_model: int, n_heads: int, **options: Any) -> None:
        super().__init__(d_model, n_heads, **options)
        self.heads = self.head_count()
        if d_model % self.heads:
            name = self.variant_name or type(self).__name__
            raise OptionError(f"{name}: d_model={d_model} must be divisible by heads={self.heads}")
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def head_count(self) -> int:
        """Number of heads the projections are split into (n_heads unless a variant says)."""
        return self.n_heads

    def attend(self, x, context, *, key_padding_mask, causal, need_weights):
        q, k, v = self.project(x, context)
        out, weights = self._pair(self.core(q, k, v, key_padding_mask, causal, need_weights), "core")
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)")), weights

    def _pair(self, result: Any, method: str) -> tuple[Tensor, Tensor | None]:
        """`result` if it is (out, weights): a bare tensor would unpack along its batch axis into
        two tensors of the wrong shape, and fail later in words about einops."""
        if is_pair(result):
            return result[0], result[1]
        name = self.variant_name or type(self).__name__
        raise PluginError(f"{name}: {method} must return (out, weights|None), got {returned(result)}")

    def reference_forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The same layer (same parameters) computed with the naive reference core."""
        self.check_call(x, context, key_padding_mask, causal, need_weights)
        q, k, v = self.project(x, context)
        out, weights = self._pair(self.reference_core(q, k, v, key_padding_mask, causal), "reference_core")
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)")), weights

    def project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(b n d_model) → q (b h n d), k and v (b h m d)."""
        source = x if context is None else context
        split = lambda t: rearrange(t, "b n (h d) -> b h n d", h=self.heads)  # noqa: E731
        return split(self.q_proj(x)), split(self.k_proj(source)), split(self.v_proj(source))

    def core(self, q, k, v, key_padding_mask, causal, need_weights) -> tuple[Tensor, Tensor | None]:
        raise self._missing(
            "ProjectedAttention", "core(q, k, v, key_padding_mask, causal, need_weights)",
            "the fast path that forward runs",
        )

    def reference_core(self, q, k, v, key_padding_mask, causal) -> tuple[Tensor, Tensor]:
        raise self._missing(
            "ProjectedAttention", "reference_core(q, k, v, key_padding_mask, causal)",
            "the naive reference the checks compare core against",
        )


# ---------------------------------------------------------------------------- the registry
def has_reference(layer: nn.Module) -> bool:
    """Whether `layer` has a naive reference of its own to be compared with: a `reference_forward`,
    and for a ProjectedAttention a `reference_core` of its own (the base's raises)."""
    if not callable(getattr(layer, "reference_forward", None)):
        return False
    return not (isinstance(layer, ProjectedAttention) and type(layer).reference_core is ProjectedAttention.reference_core)


def is_pair(result: Any) -> bool:
    """Whether a forward's or core's `result` is (out, weights): two items, a tensor first (a tuple
    or a list: every caller unpacks either)."""
    return isinstance(result, (tuple, list)) and len(result) == 2 and torch.is_tensor(result[0])


def returned(result: Any) -> str:
    """What a forward or core returned, for a message: 'a Tensor of shape (2, 4)', '(tuple, NoneType)'
    (a pair nested in a pair), '[Tensor]' (a list), 'dict'."""
    if torch.is_tensor(result):
        return f"a Tensor of shape {tuple(result.shape)}"
    if isinstance(result, (tuple, list)) and 0 < len(result) <= 3:
        items = ", ".join(type(item).__name__ for item in result)
        return f"({items})" if isinstance(result, tuple) else f"[{items}]"
    return type(result).__name__


def wants_grad(*tensors: Tensor) -> bool:
    """Whether autograd records ops on these tensors: grad mode is on and one of them needs a
    gradient. Fast paths skip what only a backward needs (an autograd Function's call, checkpoints)
    where it does not."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def check_layer_class(name: str, obj: object) -> type[nn.Module]:
    """`obj` if it is a valid variant class (an nn.Module subclass with `spec: VariantSpec`)."""
    return check_spec_class(
        "variant", name, obj, base=nn.Module, base_text="an nn.Module subclass",
        spec_type=VariantSpec, choices={"complexity": COMPLEXITIES},
        reserved=dict.fromkeys(("d_model", "n_heads"), "every layer is built with d_model and n_heads, "
                                                       "build_variant's own arguments"),
    )


VARIANTS: Registry[type[nn.Module]] = Registry(
    "variant", entry_point_group="attnbench.variants", adapt=class_or_module(check_layer_class)
)


def register_variant(name: str, cls: type[nn.Module] | None = None, *, aliases: tuple[str, ...] = ()):
    """Register a variant class: `@register_variant("mine")` or `register_variant("mine", Cls)`."""

    def wrap(layer_cls: type[nn.Module]) -> type[nn.Module]:
        VARIANTS.register(name, check_layer_class(name, layer_cls), aliases=aliases)
        if issubclass(layer_cls, AttentionLayer) and "variant_name" not in vars(layer_cls):
            layer_cls.variant_name = name  # so that the layer's own messages use its name
        return layer_cls

    return wrap if cls is None else wrap(cls)


def get_variant_spec(name: str) -> VariantSpec:
    """The `VariantSpec` of a registered variant (name or alias)."""
    return VARIANTS[name].spec


def list_variants(pattern: str | None = None) -> list[str]:
    """Registered variant names, optionally filtered by a glob such as 'lin*'."""
    return VARIANTS.names(pattern)


def build_variant(name: str, d_model: int = 64, n_heads: int = 4, **options: Any) -> nn.Module:
    """A new layer of variant `name` with validated options (fresh parameters)."""
    entry = VARIANTS.get(name)
    resolved = entry.obj.spec.resolve(entry.name, options)
    try:
        layer = entry.obj(d_model, n_heads, **resolved)
    except AttnbenchError:
        raise
    except (Exception, SystemExit) as exc:
        raise PluginError(f"{entry.name}: building the layer failed: {type(exc).__name__}: {exc}")
    layer.variant_name = entry.name
    return layer
