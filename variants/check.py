"""Contract and reference checks for any registered variant: what `bench check` and the tests run.

Each check builds the layer afresh, calls it, and returns PASS, FAIL (with the reason) or SKIP
(with why: a feature the spec declares unsupported, or no reference to compare against). A
variant that cannot take gradients on the device is checked forward only, and says so. A plugin
author runs the very checks the built-ins pass.
"""

from __future__ import annotations

import contextlib
import functools
import json
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.errors import NoBackwardError, PluginError, UnsupportedError
from attnbench.variants.base import VARIANTS, ProjectedAttention, VariantSpec, build_variant, has_reference, returned

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
D_MODEL, N_HEADS = 32, 4
REL_TOL = 1e-5  # fp32, relative to the largest reference magnitude
INPUT_GRAD_FLOOR = 0.05  # an input gradient's scale: at least this share of the largest input gradient's (fp32 noise
# on a gradient zero in exact arithmetic reached 4e-8 of it)
REFERENCE_SHAPES = ((3, 7, 5), (1, 33, 17), (3, 150, 64), (1, 300, 129))  # (b, n, m), odd n; b past 2, short and long
CAUSAL, CROSS = "causal", "cross"  # the features a model's use of a layer may add to a plain call
TRAINING_REFERENCE_N = 300  # `verify_for_training` compares with the (O(n²) or worse) reference up to this n
CHECK_BATCH = 3  # rows of the causal, padding and cross checks' inputs: past 2 (a layer may branch on b)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one variant."""

    variant: str
    check: str
    status: str
    detail: str = ""


class Skip(Exception):
    """The check does not apply to this variant."""


class Failure(AssertionError):
    """The check failed; the message says how."""


@dataclass
class Subject:
    """A variant under test: how to build it on a device, and what it declares."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    forward_only: str | None = None  # why gradients cannot be taken here (then checks run under no_grad)
    d_model: int = D_MODEL  # the width and heads the layer is built with: a model's own, for its cells
    n_heads: int = N_HEADS
    batch: int = CHECK_BATCH

    @property
    def spec(self) -> VariantSpec:
        return VARIANTS[self.name].spec

    def build(self, seed: int = 0) -> nn.Module:
        """A fresh fp32 layer, parameters drawn from `seed` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = build_variant(self.name, d_model=self.d_model, n_heads=self.n_heads, **self.options)
        return layer.to(self.device)

    def modes(self) -> Iterator[tuple[str, nn.Module, contextlib.AbstractContextManager]]:
        """("", the layer in training mode, no context), then ("in eval mode under no_grad", the
        layer in eval mode, no_grad): as a model trains it, and as it scores the test split. A layer
        may take another path in either (dropout, a cache, a kernel without autograd)."""
        yield "", self.build(), contextlib.nullcontext()
        yield " in eval mode under no_grad", self.build().eval(), torch.no_grad()

    def randn(self, *shape: int, seed: int = 1) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(*shape, generator=gen).to(self.device)


CALL_SEED = 0  # every checked call draws from this random state: a pair of calls draws alike (dropout)


def _call(layer: nn.Module, x: Tensor, **kwargs) -> tuple[Tensor, Tensor | None]:
    """`layer(x, **kwargs)`, what it returns checked (see `_returned`); random draws inside the call
    start from CALL_SEED, so that two calls compared with each other draw the same dropout masks."""
    with _seeded(x):
        return _returned(layer(x, **kwargs), x, kwargs, "forward")


@contextlib.contextmanager
def _seeded(x: Tensor) -> Iterator[None]:
    """The global random state at CALL_SEED for the span of one call, then as it was."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(CALL_SEED)
        yield


def _call_reference(layer: nn.Module, x: Tensor, **kwargs) -> tuple[Tensor, Tensor | None]:
    """`layer.reference_forward(x, **kwargs)`, what it returns checked (see `_returned`); its random
    draws start where `_call`'s do, so a reference that draws dropout as the layer does matches it."""
    with _seeded(x):
        return _returned(layer.reference_forward(x, **kwargs), x, kwargs, "reference_forward")


def _returned(result: Any, x: Tensor, kwargs: dict, who: str) -> tuple[Tensor, Tensor | None]:
    """`result` if it is (out, weights) with out a finite tensor of x's shape and weights None or
    finite; else a Failure that says so, instead of an error deep inside the check that follows."""
    prefix = "" if who == "forward" else f"{who}: "
    if not (isinstance(result, (tuple, list)) and len(result) == 2):  # a list pair works wherever a layer is run
        raise Failure(f"{who} must return (out, weights), got {returned(result)}")
    out, weights = result
    if not torch.is_tensor(out) or not (weights is None or torch.is_tensor(weights)):
        raise Failure(f"{who} must return (out, weights) as (Tensor, Tensor or None), got {returned(result)}")
    if out.shape != x.shape:
        raise Failure(f"{prefix}out shape {tuple(out.shape)} != x shape {tuple(x.shape)}")
    for name, value in (("output", out), ("weights", weights)):
        if value is not None and not torch.isfinite(value).all():
            dtype = [] if x.dtype == torch.float32 else [str(x.dtype).removeprefix("torch.")]
            raise Failure(f"{prefix}non-finite {name}{_describe(kwargs, *dtype)}")
    return out, weights


def _sizes(kwargs: dict, b: int, n: int, m: int) -> list[str]:
    """A call's sizes for its failure line: b and n, and m for cross-attention."""
    return [f"b={b}", f"n={n}"] + ([f"m={m}"] if "context" in kwargs else [])


def _describe(kwargs: dict, *first: str) -> str:
    """' (bfloat16, causal=True, key_padding_mask)': `first`, then the keyword arguments of a call
    that are set (flags with their value, tensors by name); empty for a plain call."""
    parts = list(first)
    for key, value in kwargs.items():
        if isinstance(value, bool):
            parts += [f"{key}={value}"] if value else []
        elif value is not None:
            parts.append(key)
    return f" ({', '.join(parts)})" if parts else ""


def _rel_err(got: Tensor, want: Tensor, floor: float = 0.0) -> float:
    """max|got - want| / max(max|want|, floor); NaN when either holds a NaN or an inf."""
    scale = want.abs().max().clamp_min(max(floor, 1e-12))
    return ((got - want).abs().max() / scale).item()


def _exceeds(err: float, tol: float) -> bool:
    """err > tol, NaN included (`nan > tol` is False: a plain comparison would pass it)."""
    return not err <= tol


# ------------------------------------------------------------------------------------------ checks
def check_shape(s: Subject) -> str:
    """Output is (b, n, d_model), same dtype and device as x; weights None unless asked for."""
    layer, x = s.build(), s.randn(2, 11, s.d_model)
    out, weights = _call(layer, x)  # shape and finiteness checked there
    if out.dtype != x.dtype or out.device != x.device:
        raise Failure(f"out is {out.dtype} on {out.device}, x is {x.dtype} on {x.device}")
    if weights is not None:
        raise Failure("weights returned although need_weights=False")
    return f"out (2, 11, {s.d_model}) fp32"


def check_finite_grad(s: Subject) -> str:
    """Outputs and the gradients of x and every parameter are finite; x gets a gradient."""
    if s.forward_only:
        raise Skip(f"unsupported here: {s.forward_only}")
    layer = s.build()
    x = s.randn(2, 19, s.d_model).requires_grad_()
    out, _ = _call(layer, x)  # a non-finite output fails there
    out.square().sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        raise Failure("x.grad is missing, zero or not finite")
    bad = [n for n, p in layer.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise Failure(f"non-finite gradients in {', '.join(bad)}")
    # a parameter the output does not reach is no fault of finiteness, but worth a word (the
    # reference check fails it where the reference does reach it)
    unused = [n for n, p in layer.named_parameters() if p.requires_grad and p.grad is None]
    return f"{sum(p.grad is not None for p in layer.parameters())} parameter grads finite" + (
        f"; no gradient reaches {', '.join(unused)}" if unused else "")


def check_determinism(s: Subject) -> str:
    """The same seed builds the same layer, and the same call gives bit-identical outputs."""
    x = s.randn(2, 17, s.d_model)
    first, _ = _call(s.build(seed=3), x)
    second, _ = _call(s.build(seed=3), x)
    if not torch.equal(first, second):
        raise Failure(f"two builds with one seed differ by {(first - second).abs().max().item():.2e}")
    other_layer = s.build(seed=4)
    if not any(p.numel() for p in other_layer.parameters()):  # nothing for a seed to draw
        return "bit-identical for one seed; no parameters"
    other, _ = _call(other_layer, x)
    if torch.equal(first, other):
        raise Failure("a different seed built an identical layer (parameters ignore the seed?)")
    return "bit-identical for one seed"


def check_causal(s: Subject, n: int = 23, t: int = 9) -> str:
    """With causal=True, changing tokens at t and later leaves every output before t unchanged."""
    if not s.spec.supports_causal:
        raise Skip("spec: supports_causal=False")
    x = s.randn(s.batch, n, s.d_model)
    changed = x.clone()
    changed[:, t:] = s.randn(s.batch, n - t, s.d_model, seed=7)
    worst = 0.0
    for mode, layer, context in s.modes():
        with context:
            before, _ = _call(layer, x, causal=True)
            after, _ = _call(layer, changed, causal=True)
        leak = (before[:, :t] - after[:, :t]).abs().max().item()
        if _exceeds(leak, 1e-6):
            with context:
                _check_repeatable(layer, x, before, mode, causal=True)
            raise Failure(f"future tokens changed earlier outputs by {leak:.2e}{mode}")
        if torch.allclose(before[:, t:], after[:, t:]):
            raise Failure(f"changing tokens did not change their own outputs{mode}")
        worst = max(worst, leak)
    return f"outputs before t={t} unchanged (max diff {worst:.1e}), trained and scored"


def _check_repeatable(layer: nn.Module, x: Tensor, first: Tensor, mode: str, tested: str = "a leak", **kwargs) -> None:
    """Where a check saw outputs change, a Failure that says so if the same call twice already
    differs: random draws outside torch's global generator (which `_call` seeds alike for each
    call), e.g. dropout with a `torch.Generator` of its own, are noise the check cannot tell from a
    leak, and "future tokens changed earlier outputs" would blame the wrong thing."""
    again, _ = _call(layer, x, **kwargs)
    noise = (again - first).abs().max().item()
    if _exceeds(noise, 1e-6):
        raise Failure(f"two calls on the same input differ by {noise:.2e}{mode}, so this check cannot tell {tested} "
                      "from that: the layer keeps state between calls, or draws random numbers outside torch's "
                      "global generator (a torch.Generator of its own?), which the checks seed alike for each call "
                      "(nn.Dropout draws from it)")


def _padding_mask(rows: int, n: int, short: int, device: torch.device) -> Tensor:
    """(rows, n) key padding mask, True = padding: the first row unpadded, the second `short` keys
    long, each further row one key shorter than the one before it from n - 1 (a layer may branch on
    the batch, so rows past 2 get lengths of their own)."""
    lengths = [n, short, *(max(1, n - 1 - i) for i in range(rows - 2))][:rows]
    return torch.arange(n, device=device)[None, :] >= torch.tensor(lengths, device=device)[:, None]


def check_padding(s: Subject, n: int = 21, short: int = 13) -> str:
    """Changing masked keys leaves outputs at unmasked positions unchanged; the mask has effect."""
    if not s.spec.supports_padding_mask:
        raise Skip("spec: supports_padding_mask=False")
    layer = s.build()
    mask = _padding_mask(s.batch, n, short, s.device)
    x = s.randn(s.batch, n, s.d_model)
    changed = torch.where(mask[..., None], s.randn(s.batch, n, s.d_model, seed=9), x)
    worst = 0.0
    for mode, checked, context in s.modes():
        for causal in (False, True) if s.spec.supports_causal else (False,):
            with context:
                a, _ = _call(checked, x, key_padding_mask=mask, causal=causal)
                b, _ = _call(checked, changed, key_padding_mask=mask, causal=causal)
            diff = (a[~mask] - b[~mask]).abs().max().item()
            if _exceeds(diff, 1e-6):
                with context:
                    _check_repeatable(checked, x, a, mode, key_padding_mask=mask, causal=causal)
                raise Failure(f"masked keys changed unmasked outputs by {diff:.2e} (causal={causal}){mode}")
            worst = max(worst, diff)
    unmasked, _ = _call(layer, changed)
    masked, _ = _call(layer, changed, key_padding_mask=mask)
    if torch.allclose(unmasked[1], masked[1]):
        raise Failure("key_padding_mask had no effect")
    # a query with every key masked (the second row all padding; causal, the first query of a row
    # whose first key is padding) gets a finite output: `_call` fails a NaN or an inf
    nothing = mask.clone()
    nothing[1] = True
    _call(layer, x, key_padding_mask=nothing)
    if s.spec.supports_causal:
        first = torch.zeros_like(mask)
        first[:, 0] = True
        _call(layer, x, key_padding_mask=first, causal=True)
    return f"masked keys ignored (max diff {worst:.1e}); a query without keys finite"


def check_cross(s: Subject, n: int = 9, m: int = 14) -> str:
    """Cross-attention with m ≠ n: shape (b, n, d), the context matters, its padding is honoured."""
    if not s.spec.supports_cross:
        raise Skip("spec: supports_cross=False")
    x, context = s.randn(s.batch, n, s.d_model), s.randn(s.batch, m, s.d_model, seed=2)
    for mode, layer, grad_mode in s.modes():
        with grad_mode:
            out, _ = _call(layer, x, context=context)  # out of x's shape (b, n, d), checked there
            other, _ = _call(layer, x, context=s.randn(s.batch, m, s.d_model, seed=3))
        if torch.allclose(out, other):
            raise Failure(f"output does not depend on the context{mode}")
        if s.spec.supports_padding_mask:
            kept = m - max(1, m // 3)  # the last third of the context masked (positions 10-13 of 14)
            mask = torch.zeros(s.batch, m, dtype=torch.bool, device=s.device)
            mask[:, kept:] = True
            changed = context.clone()
            changed[:, kept:] = 0.0
            with grad_mode:
                a, _ = _call(layer, x, context=context, key_padding_mask=mask)
                b, _ = _call(layer, x, context=changed, key_padding_mask=mask)
            diff = (a - b).abs().max().item()
            if _exceeds(diff, 1e-6):
                with grad_mode:
                    _check_repeatable(layer, x, a, mode, context=context, key_padding_mask=mask)
                raise Failure(f"masked context positions changed the output by {diff:.2e}{mode}")
    return f"m={m} ≠ n={n}"


WEIGHTS_TOL = 1e-4  # weights against the reference's: what `bench attention` draws, not a gradient


def check_weights(s: Subject) -> str:
    """need_weights=True returns (b, h, n, m) non-negative rows summing to 1, causal ones
    lower-triangular; one row per head the projections split into (a ProjectedAttention's
    `heads`), not their mean; and, where the layer has a reference that returns weights, the
    reference's (max rel err ≤ WEIGHTS_TOL), plain and causal: rows that merely sum to 1 are not
    the attention `bench attention` would draw."""
    if not s.spec.returns_weights:
        raise Skip("spec: returns_weights=False")
    layer, n = s.build(), 12
    x = s.randn(2, n, s.d_model)
    plain, _ = _call(layer, x)
    out, weights = _call(layer, x, need_weights=True)
    if weights is None or weights.dim() != 4 or weights.shape[0] != 2 or weights.shape[2:] != (n, n):
        raise Failure(f"weights shape {None if weights is None else tuple(weights.shape)}, want (2, h, {n}, {n})")
    if not torch.allclose(plain, out, rtol=1e-5, atol=1e-6):
        _check_repeatable(layer, x, plain, "", tested="an effect of need_weights=True")
        raise Failure("need_weights=True changed the output")
    if (weights < 0).any() or not torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-4):
        raise Failure("weights are negative or rows do not sum to 1")
    heads = getattr(layer, "heads", None) if isinstance(layer, ProjectedAttention) else None
    if heads is not None and weights.shape[1] != heads:
        raise Failure(f"weights of {weights.shape[1]} head(s), where the layer splits into heads={heads}: "
                      "want one (n, m) map per head, not their mean")
    calls = {False: weights}  # causal → the weights of that call
    if s.spec.supports_causal:
        _, causal = _call(layer, x, causal=True, need_weights=True)
        if _exceeds(causal.triu(diagonal=1).abs().max().item(), 0.0):
            raise Failure("causal weights put mass on future keys")
        calls[True] = causal
    if not has_reference(layer):
        return f"(2, {weights.shape[1]}, {n}, {n}), rows sum to 1; no reference to compare them with"
    worst = 0.0
    for causal, got in calls.items():
        what = " (causal)" if causal else ""
        _, want = _call_reference(layer, x, causal=causal, need_weights=True)
        if want is None:
            return f"(2, {weights.shape[1]}, {n}, {n}), rows sum to 1; the reference returns no weights"
        if got.shape != want.shape:
            raise Failure(f"weights{what} of shape {tuple(got.shape)}, the reference's {tuple(want.shape)}")
        err = _rel_err(got, want)
        if _exceeds(err, WEIGHTS_TOL):
            raise Failure(f"weights{what} differ from the reference's: rel err {err:.2e} > {WEIGHTS_TOL:.0e}")
        worst = max(worst, err)
    return f"(2, {weights.shape[1]}, {n}, {n}), rows sum to 1, the reference's within rel err {worst:.1e}"


def check_unsupported(s: Subject) -> str:
    """Every feature the spec declares unsupported raises an error instead of running silently."""
    layer, x = s.build(), s.randn(2, 8, s.d_model)
    mask = torch.zeros(2, 8, dtype=torch.bool, device=s.device)
    calls = {
        "cross": (s.spec.supports_cross, dict(context=s.randn(2, 5, s.d_model))),
        "causal": (s.spec.supports_causal, dict(causal=True)),
        "padding": (s.spec.supports_padding_mask, dict(key_padding_mask=mask)),
        "weights": (s.spec.returns_weights, dict(need_weights=True)),
    }
    tried = [name for name, (supported, _) in calls.items() if not supported]
    if not tried:
        raise Skip("spec declares every feature supported")
    for name in tried:
        try:
            with torch.no_grad():  # the feature must be refused, not only the gradients
                layer(x, **calls[name][1])
        except Exception:
            continue
        raise Failure(f"spec says no {name} support, but the call ran without an error")
    return "raises for " + ", ".join(tried)


def check_reference(
    s: Subject, shapes: Sequence[tuple[int, int, int]] = REFERENCE_SHAPES, used: frozenset[str] | None = None
) -> str:
    """Outputs, gradients (x, context, parameters) and attention weights equal the naive fp32
    reference, rel ≤ 1e-5, at each (b, n, m) of `shapes`, in each call of `_reference_calls`."""
    layer = s.build()
    if not has_reference(layer):
        raise Skip(
            f"{s.name} has no naive reference to compare against: give it a reference_forward (a ProjectedAttention: "
            "a reference_core; same call and parameters, naive fp32 math) to have its outputs and gradients checked"
        )
    worst = 0.0
    for b, n, m in shapes:
        for kwargs in _reference_calls(s, b, n, m, used):
            for what, err in _compare_with_reference(s, layer, b, n, m, kwargs):
                if _exceeds(err, REL_TOL):
                    sizes = _sizes(kwargs, b, n, m)
                    raise Failure(f"{what}: rel err {err:.2e} > {REL_TOL:.0e}{_describe(kwargs, *sizes)}")
                worst = max(worst, err)
    return f"max rel err {worst:.1e} over {len(shapes)} shape{'s' if len(shapes) > 1 else ''}"


def _reference_calls(s: Subject, b: int, n: int, m: int, used: frozenset[str] | None = None) -> Iterator[dict]:
    """The calls compared with the reference: plain, causal, key-padded and cross-attention, each
    where the spec supports it (and, given `used`, the features named there: causal, cross)."""
    spec = s.spec
    causal = spec.supports_causal and (used is None or CAUSAL in used)
    cross = spec.supports_cross and (used is None or CROSS in used)
    # one row: the short one, since the first row is unpadded and a key_padding_mask call that hides
    # nothing would be the plain call again (a padded long input's gradients went unchecked)
    mask = _padding_mask(max(b, 2), n, max(1, n // 2), s.device)[-b:]
    yield {}
    if causal:
        yield {"causal": True}
    if spec.supports_padding_mask:
        yield {"key_padding_mask": mask}
        if causal:
            yield {"key_padding_mask": mask, "causal": True}
    if cross:
        yield {"context": m}
        if spec.supports_padding_mask:
            yield {"context": m, "key_padding_mask": torch.arange(m, device=s.device)[None, :].expand(b, m) >= m - 2}


def _compare_with_reference(
    s: Subject, layer: nn.Module, b: int, n: int, m: int, kwargs: dict
) -> list[tuple[str, float]]:
    """(what, relative error) of the output, the input gradients and the parameter gradients."""
    kwargs = dict(kwargs)
    x = s.randn(b, n, s.d_model, seed=n).requires_grad_()
    inputs = [x]
    if "context" in kwargs:
        kwargs["context"] = s.randn(b, m, s.d_model, seed=m + 1).requires_grad_()
        inputs.append(kwargs["context"])
    named = [(name, p) for name, p in layer.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    probe = s.randn(b, n, s.d_model, seed=5)
    results = []
    for call in (_call, _call_reference):
        out, _ = call(layer, x, **kwargs)
        if s.forward_only:  # outputs only
            results.append((out, ()))
            continue
        grads = torch.autograd.grad((out * probe).sum(), inputs + params, allow_unused=True)
        results.append((out.detach(), grads))
    (fast, fast_grads), (ref, ref_grads) = results
    if any((got is None) != (want is None) for got, want in zip(fast_grads, ref_grads)):
        names = ["x", *(("context",) if "context" in kwargs else ()), *(name for name, _ in named)]
        one_sided = [name for name, got, want in zip(names, fast_grads, ref_grads) if (got is None) != (want is None)]
        call = _describe(kwargs, *_sizes(kwargs, b, n, m))
        raise Failure(f"a gradient exists on one path only: {', '.join(one_sided)}{call}")
    # inputs one by one; parameters as one vector, so that a gradient that is zero in exact
    # arithmetic (the key bias under softmax) is judged against the scale of all the others
    flat = lambda grads: torch.cat([g.flatten() for g in grads if g is not None] or [torch.zeros(1)])  # noqa: E731
    compared = {"out": (fast, ref)}
    if not s.forward_only:
        k = len(inputs)
        compared |= {what: pair for what, pair in zip(("x.grad", "context.grad")[:k], zip(fast_grads[:k], ref_grads[:k]))
                     if pair[1] is not None}  # an input no output depends on, on both paths: nothing to compare
        compared["parameter grads"] = (flat(fast_grads[k:]), flat(ref_grads[k:]))
    if s.spec.returns_weights:  # what `bench attention` draws: the reference's weights, not rows that merely sum to 1
        plain = {key: value.detach() if torch.is_tensor(value) else value for key, value in kwargs.items()}
        with torch.no_grad():
            (_, weights), (_, ref_weights) = (call(layer, x.detach(), need_weights=True, **plain)
                                              for call in (_call, _call_reference))
        if ref_weights is not None:
            if weights is None:
                raise Failure("need_weights=True returned no weights")
            compared["weights"] = (weights, ref_weights)
    # an input gradient that is zero in exact arithmetic (x's, where one key of the context is left to
    # attend to: softmax gives it weight 1 whatever the query) is judged against the input gradients'
    # scale (the context's), not against its own rounding noise
    floor = INPUT_GRAD_FLOOR * float(flat(ref_grads[:len(inputs)]).abs().max()) if not s.forward_only else 0.0
    out = []
    for what, (got, want) in compared.items():
        if what in ("x.grad", "context.grad") and float(want.abs().max()) < floor:  # said, so the error is read right
            what += f" (against {INPUT_GRAD_FLOOR:.0%} of the largest input gradient, above its own max)"
            out.append((what, _rel_err(got, want, floor)))
        else:
            out.append((what, _rel_err(got, want)))
    return out


INFERENCE_SHAPE = (2, 300, 129)  # (b, n, m): past the short sequences' one-call paths


def check_inference(s: Subject) -> str:
    """Without autograd (inference mode) outputs equal the naive fp32 reference, rel ≤ 1e-5, for
    each call the reference check makes (causal, key padding, cross-attention where supported), in
    two calls with different inputs whose outputs are held together: a path taken only where no
    gradient is wanted (a CUDA graph's replay, variants/graphs.py) is checked too, and a layer
    whose output a later call overwrites fails."""
    layer = s.build().eval()  # as the test split is scored
    if not has_reference(layer):
        raise Skip(f"{s.name} has no naive reference to compare against")
    b, n, m = INFERENCE_SHAPE
    worst, calls = 0.0, 0
    for kwargs in _reference_calls(s, b, n, m):
        inputs = []
        for seed in (11, 12):
            x = s.randn(b, n, s.d_model, seed=seed)
            call = dict(kwargs)
            if "context" in call:
                call["context"] = s.randn(b, m, s.d_model, seed=seed + 100)
            inputs.append((x, call))
        with torch.inference_mode():
            outs = [_call(layer, x, **call)[0] for x, call in inputs]
        with torch.no_grad():
            refs = [_call_reference(layer, x, **call)[0] for x, call in inputs]
        for i, (out, ref) in enumerate(zip(outs, refs), start=1):
            err = _rel_err(out, ref)
            if _exceeds(err, REL_TOL):
                sizes = _sizes(kwargs, b, n, m)
                raise Failure(f"out of call {i} of 2: rel err {err:.2e} > {REL_TOL:.0e}{_describe(kwargs, *sizes)}")
            worst = max(worst, err)
        calls += 1
    return f"max rel err {worst:.1e} over {calls} calls, 2 each"


def check_low_precision(s: Subject) -> str:
    """In fp16/bf16 (where the device supports it) the layer keeps the dtype and stays finite."""
    dtypes = [torch.bfloat16] if s.device.type == "cpu" else [torch.float16, torch.bfloat16]
    for dtype in dtypes:
        layer = s.build().to(dtype)
        x = s.randn(2, 40, s.d_model).to(dtype)
        out, _ = _call(layer, x, causal=s.spec.supports_causal)  # a non-finite output fails there
        if out.dtype != dtype:
            raise Failure(f"{dtype}: out is {out.dtype}")
        ref, _ = _call(s.build(), x.float(), causal=s.spec.supports_causal)
        err = _rel_err(out.float(), ref)
        if _exceeds(err, 0.1):
            raise Failure(f"{dtype}: relative error {err:.2e} against fp32 is above 0.1")
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


CHECKS: dict[str, Callable[[Subject], str]] = {
    "shape": check_shape,
    "finite-grad": check_finite_grad,
    "determinism": check_determinism,
    "causal": check_causal,
    "padding": check_padding,
    "cross": check_cross,
    "weights": check_weights,
    "unsupported": check_unsupported,
    "reference": check_reference,
    "inference": check_inference,
    "low-precision": check_low_precision,
}


def run_check(name: str, check: str, options: dict | None = None, device: str = "cpu", *, d_model: int = D_MODEL,
              n_heads: int = N_HEADS) -> CheckResult:
    """Run one named check on variant `name` built at `d_model` and `n_heads` (a model's, where its
    layer is checked as the model builds it); never raises for a faulty variant.

    Where the variant cannot take gradients on this device (it raises NoBackwardError, e.g. a
    compiled kernel without a CPU backward), the check runs again forward only, under no_grad:
    its detail says so, and the checks of gradients are skipped (saying why). Any other error,
    UnsupportedError included, is a FAIL.
    """
    subject = Subject(name, dict(options or {}), torch.device(device), d_model=d_model, n_heads=n_heads)
    try:
        return CheckResult(name, check, PASS, _attempt(subject, CHECKS[check]))
    except Skip as why:
        return CheckResult(name, check, SKIP, str(why))
    except Failure as why:
        return CheckResult(name, check, FAIL, str(why))
    except (Exception, SystemExit) as exc:  # a faulty plugin must show up as FAIL, not crash the checker
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(
            name, check, FAIL, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        )


def _attempt(subject: Subject, run: Callable[[Subject], str]) -> str:
    """`run(subject)`; where the variant cannot take gradients on the device (NoBackwardError),
    again forward only, under no_grad, its detail saying so."""
    try:
        return run(subject)
    except NoBackwardError as why:
        subject.forward_only = str(why)
        with torch.no_grad():
            return run(subject) + " (forward only)"


def verify_for_training(
    name: str, options: dict | None, device: str, *, n: int, used: frozenset[str] = frozenset(),
    d_model: int = D_MODEL, n_heads: int = N_HEADS,
) -> CheckResult | None:
    """The first check whose failure would make a model's score on length-n inputs wrong, or None
    where every one passes or skips: at n itself, no future token reaches an earlier output where
    the model attends causally (`used` holds CAUSAL; t odd, so it falls inside any power-of-two
    chunk), masked keys are ignored, the context counts and its padding too where it cross-attends
    (CROSS), and outputs, gradients and weights equal the naive reference at min(n,
    TRAINING_REFERENCE_N) in the calls the model makes. The layer is built as the model builds it
    (`d_model`, `n_heads`), its inputs have CHECK_BATCH rows, and the causal, padding and
    cross checks run in training mode and again as the test split is scored (eval mode, no_grad): a
    layer that leaks only at the model's head width, past a batch of 2 or when scoring would
    otherwise pass. A score from a layer that sees the tokens it predicts, or computes other maths
    than it claims, would read as the mechanism's. An error other than a check's failure (out of
    memory, a time limit, a layer that raises) propagates. Cached per process: each (variant class,
    options, device, n, used, width, heads) is checked once."""
    key = (VARIANTS[name], json.dumps(options or {}, sort_keys=True, default=str), device, n, tuple(sorted(used)),
           d_model, n_heads)
    if key not in _VERIFIED:
        subject = Subject(name, dict(options or {}), torch.device(device), d_model=d_model, n_heads=n_heads)
        _VERIFIED[key] = _first_failure(subject, n, used)
    return _VERIFIED[key]


_VERIFIED: dict[tuple, CheckResult | None] = {}


def _first_failure(subject: Subject, n: int, used: frozenset[str]) -> CheckResult | None:
    r = min(n, TRAINING_REFERENCE_N)
    checks: list[tuple[str, Callable[[Subject], str]]] = []
    if CAUSAL in used and n > 1:
        checks.append(("causal", functools.partial(check_causal, n=n, t=max(1, n // 2) | 1 if n > 2 else 1)))
    if n > 2:
        checks.append(("padding", functools.partial(check_padding, n=n, short=n // 2 + 1)))
    if CROSS in used:
        checks.append(("cross", functools.partial(check_cross, n=n, m=n + 5)))
    checks.append(("reference", functools.partial(check_reference, shapes=((CHECK_BATCH, r, r),), used=used)))
    for check, run in checks:
        try:
            _attempt(replace(subject, forward_only=None), run)
        except Skip:
            continue
        except Failure as why:
            return CheckResult(subject.name, check, FAIL, str(why))
        # any other error (out of memory, the cell's time limit, a layer that raises) is the cell's
        # to classify, as it would be in training
    return None


def run_checks(
    name: str, options: dict | None = None, device: str = "cpu", checks: list[str] | None = None
) -> list[CheckResult]:
    """Every check (or those named) on variant `name`; one FAIL row `build` instead when the layer
    cannot be built at all (e.g. `kernel=compiled` without a C++ compiler, or its constructor raised)."""
    return list(iter_checks(name, options, device, checks))


def iter_checks(
    name: str, options: dict | None = None, device: str = "cpu", checks: list[str] | None = None
) -> Iterator[CheckResult]:
    """`run_checks`, one result at a time as each check ends (a compiled kernel's checks take
    seconds each: `bench check` reports them as they come). A check named twice runs once."""
    try:
        Subject(name, dict(options or {}), torch.device(device)).build()
    except (UnsupportedError, PluginError) as exc:  # unbuildable here, or a constructor that raised
        yield CheckResult(name, "build", FAIL, str(exc))
        return
    for check in dict.fromkeys(checks or CHECKS):
        yield run_check(name, check, options, device)


def summary(results: Sequence[CheckResult]) -> str:
    """The line under the `bench check` table: how many checks failed, passed and were skipped,
    and which variants were not compared against a reference (a skip that hides no failure, but
    leaves their outputs unverified)."""
    total = len(results)
    failed = sum(r.status == FAIL for r in results)
    skipped = sum(r.status == SKIP for r in results)
    if failed:
        line = f"{failed} of {total} {_checks(total)} failed"
    elif skipped:
        line = f"{total - skipped} passed, {skipped} skipped"
    else:
        line = f"all {total} checks passed" if total > 1 else f"{total} {_checks(total)} passed"
    unverified = list(dict.fromkeys(r.variant for r in results if r.check == "reference" and r.status == SKIP))
    if unverified:
        has = "has" if len(unverified) == 1 else "have"
        line += f" (reference: {', '.join(unverified)} {has} no naive reference to compare against)"
    return line


def _checks(count: int) -> str:
    return "check" if count == 1 else "checks"
