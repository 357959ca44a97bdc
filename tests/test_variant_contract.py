"""Every registered variant passes every contract and reference check `bench check` runs."""

from __future__ import annotations

import pytest
import torch
from support import register_uniform_weights

from attnbench import get_variant_spec, list_variants
from attnbench.variants.check import CHECKS, FAIL, PASS, SKIP, run_check

# which spec flag lets a check be skipped; every other skip is a failure
SKIPPABLE = {
    "causal": lambda spec: not spec.supports_causal,
    "padding": lambda spec: not spec.supports_padding_mask,
    "cross": lambda spec: not spec.supports_cross,
    "weights": lambda spec: not spec.returns_weights,
    "unsupported": lambda spec: all(
        (spec.supports_causal, spec.supports_padding_mask, spec.supports_cross, spec.returns_weights)
    ),
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("variant", list_variants())
def test_variant_passes(variant, check):
    result = run_check(variant, check)
    assert result.status != FAIL, f"{variant} {check}: {result.detail}"
    may_skip = SKIPPABLE.get(check, lambda spec: False)(get_variant_spec(variant))
    assert (result.status == SKIP) == may_skip, f"{variant} {check}: {result.status} {result.detail}"


@pytest.mark.parametrize(
    ("variant", "options"),
    [("local", {"window": 1}), ("local", {"window": 5}), ("linear", {"chunk_size": 7}),
     ("additive", {"heads": 4, "chunk_size": 3})],
)
def test_non_default_options_pass_the_reference_and_causal_checks(variant, options):
    for check in ("reference", "causal", "padding"):
        result = run_check(variant, check, options)
        assert result.status == PASS, f"{variant}{options} {check}: {result.detail}"


def test_the_checks_catch_a_broken_variant(sandbox):
    from torch import nn

    from attnbench import VariantSpec, register_variant

    @register_variant("leaky")
    class LeakyAttention(nn.Module):
        spec = VariantSpec(complexity="n", supports_cross=False, returns_weights=False)

        def __init__(self, d_model, n_heads):
            super().__init__()
            self.proj = nn.Linear(d_model, d_model)

        def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
            return self.proj(x.mean(dim=1, keepdim=True).expand_as(x)), None  # ignores causal and mask

        def reference_forward(self, x, context=None, **kwargs):
            return self.proj(x) * 2, None

    verdicts = {check: run_check("leaky", check).status for check in CHECKS}
    assert verdicts["causal"] == FAIL
    assert verdicts["padding"] == FAIL
    assert verdicts["reference"] == FAIL and verdicts["inference"] == FAIL
    assert verdicts["unsupported"] == FAIL  # context= was accepted silently
    assert verdicts["shape"] == PASS and verdicts["cross"] == SKIP
    assert torch.is_tensor(LeakyAttention(8, 2)(torch.zeros(1, 3, 8))[0])


def test_the_reference_check_catches_weights_that_are_not_the_ones_the_output_used(sandbox):
    """Uniform rows are non-negative and sum to 1, as the weights check asks; the reference's differ."""
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("made-up-weights")
    class MadeUpWeights(MultiHeadAttention):
        def forward(self, x, context=None, *, need_weights=False, **kwargs):
            out, weights = super().forward(x, context, need_weights=need_weights, **kwargs)
            return out, None if weights is None else weights.new_ones(weights.shape) / weights.shape[-1]

    result = run_check("made-up-weights", "reference")
    assert result.status == FAIL and result.detail.startswith("weights: rel err "), result.detail


def test_the_weights_check_catches_made_up_or_head_averaged_weights(sandbox):
    """Before: both passed `bench check --checks weights` (rows non-negative and summing to 1), and
    `bench attention` drew them; a plugin without a reference runs no reference check to catch them."""
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    register_uniform_weights()

    @register_variant("mean-weights")
    class MeanWeights(MultiHeadAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            return out, None if weights is None else weights.mean(1, keepdim=True)

    uniform = run_check("uniform-weights", "weights")
    assert uniform.status == FAIL and uniform.detail.startswith("weights differ from the reference's: rel err ")
    mean = run_check("mean-weights", "weights")
    assert mean.status == FAIL and mean.detail == ("weights of 1 head(s), where the layer splits into heads=4: "
                                                   "want one (n, m) map per head, not their mean")
    assert run_check("multi-head", "weights").status == PASS
    assert run_check("dot-product", "weights").status == PASS  # one head, as its projections have


def test_parameters_no_gradient_reaches_are_named(sandbox):
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("detached-queries")
    class DetachedQueries(MultiHeadAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            return super().core(q.detach(), k, v, key_padding_mask, causal, need_weights)

    finite = run_check("detached-queries", "finite-grad")
    assert finite.status == PASS and finite.detail.endswith("; no gradient reaches q_proj.weight, q_proj.bias")
    reference = run_check("detached-queries", "reference")
    assert reference.status == FAIL
    assert reference.detail == "a gradient exists on one path only: q_proj.weight, q_proj.bias (b=3, n=7)"


def test_only_a_missing_backward_makes_a_check_forward_only(sandbox):
    from torch import nn

    from attnbench import NoBackwardError, UnsupportedError, VariantSpec, register_variant

    def plugin(name, error):
        @register_variant(name)
        class Refusing(nn.Module):
            spec = VariantSpec(complexity="n", supports_cross=False, supports_causal=False,
                               supports_padding_mask=False, returns_weights=False)

            def __init__(self, d_model, n_heads):
                super().__init__()
                self.proj = nn.Linear(d_model, d_model)

            def forward(self, x, context=None, **kwargs):
                if torch.is_grad_enabled():
                    raise error(f"{name}: no gradients here")
                asked = {k for k, v in kwargs.items() if v is not None and v is not False}
                if context is not None or asked & {"causal", "need_weights", "key_padding_mask"}:
                    raise UnsupportedError(f"{name}: not supported")
                return self.proj(x), None

            def reference_forward(self, x, context=None, **kwargs):
                return self.proj(x), None

    plugin("no-backward", NoBackwardError)
    plugin("wrongly-refusing", UnsupportedError)  # a refusal that is not about gradients: a failure
    forward_only = {check: run_check("no-backward", check) for check in CHECKS}
    assert forward_only["shape"].status == PASS and forward_only["shape"].detail.endswith("(forward only)")
    assert forward_only["reference"].status == PASS and forward_only["inference"].status == PASS
    assert forward_only["finite-grad"].status == SKIP and "no gradients here" in forward_only["finite-grad"].detail
    assert forward_only["unsupported"].status == PASS  # its refusals were tried without gradients
    assert run_check("wrongly-refusing", "shape").status == FAIL


def test_the_inference_check_catches_what_only_calls_without_gradients_get_wrong(sandbox):

    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("wrong-without-grad")
    class WrongWithoutGrad(MultiHeadAttention):  # a fast path for inference that drops a term
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            return (out if torch.is_grad_enabled() else out * 0.999), weights

    @register_variant("one-buffer")
    class OneBuffer(MultiHeadAttention):  # a replayed graph's output handed out without a copy
        def forward(self, x, context=None, **kwargs):
            out, weights = super().forward(x, context, **kwargs)
            if torch.is_grad_enabled():
                return out, weights
            if getattr(self, "buffer", None) is None or self.buffer.shape != out.shape:
                self.buffer = torch.empty_like(out)
            return self.buffer.copy_(out), weights

    assert run_check("wrong-without-grad", "reference").status == PASS  # checked with gradients only
    wrong = run_check("wrong-without-grad", "inference")
    assert wrong.status == FAIL and wrong.detail.startswith("out of call 1 of 2: rel err 7.3"), wrong.detail
    assert wrong.detail.endswith("> 1e-05 (b=2, n=300)")
    shared = run_check("one-buffer", "inference")
    assert shared.status == FAIL and shared.detail.startswith("out of call 1 of 2"), shared.detail
    assert run_check("multi-head", "inference").detail == run_check("multi-head", "inference").detail


def test_a_layer_drawing_from_a_generator_of_its_own_is_named_as_such_not_as_a_leak(sandbox):
    """Before: a correct dropout layer with its own torch.Generator failed the causal and padding
    checks with "future tokens changed earlier outputs", a leak it does not have."""
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("own-generator-dropout")
    class OwnGenerator(MultiHeadAttention):
        def __init__(self, d_model, n_heads, **options):
            super().__init__(d_model, n_heads, **options)
            self.generator = torch.Generator().manual_seed(0)

        def forward(self, x, context=None, **kwargs):
            out, weights = super().forward(x, context, **kwargs)
            if not self.training:
                return out, weights
            keep = torch.rand(out.shape, generator=self.generator) > 0.1
            return out * keep / 0.9, weights

    for check in ("causal", "padding", "cross", "weights"):
        result = run_check("own-generator-dropout", check)
        assert result.status == FAIL and result.detail.startswith("two calls on the same input differ by "), result
        assert "outside torch's global generator" in result.detail
    assert run_check("multi-head", "causal").status == PASS


def test_the_reference_checks_see_a_batch_past_two_rows(sandbox):
    """Before: the reference check's batches had at most 2 rows, so a fast path taken only from 3
    rows on (as some kernels branch on the batch) was never compared with the reference."""
    from attnbench import register_variant
    from attnbench.variants.check import verify_for_training
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("wrong-past-two-rows")
    class WrongPastTwo(MultiHeadAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            return (out * 1.01 if q.shape[0] > 2 else out), weights

    result = run_check("wrong-past-two-rows", "reference")
    assert result.status == FAIL and result.detail.startswith("out: rel err "), result
    assert "b=3" in result.detail or "(3," in result.detail, result.detail

    @register_variant("wrong-past-two-rows-long")
    class WrongPastTwoLong(MultiHeadAttention):  # a fast path for longer sequences, taken from 3 rows on
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            return (out * 1.01 if q.shape[0] > 2 and q.shape[2] > 8 else out), weights

    result = run_check("wrong-past-two-rows-long", "reference")
    assert result.status == FAIL and "(b=3, n=150" in result.detail, result
    failed = verify_for_training("wrong-past-two-rows", {}, "cpu", n=16)
    assert failed is not None and failed.check == "reference", failed


def test_the_reference_check_pads_its_one_row_shapes_too(sandbox):
    """The first row of a padding mask is unpadded, so at b = 1, (1, 33, 17) and (1, 300, 129), the
    key-padded calls were the plain ones again: a wrong backward taken only for padded long inputs
    (local's blocked path starts past n = 256 at its default window) passed every check."""
    from attnbench import register_variant
    from attnbench.variants.local import LocalAttention

    @register_variant("local-padded-long-grad-bug")
    class DetachedWhenPaddedLong(LocalAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            if key_padding_mask is not None and bool(key_padding_mask.any()) and q.shape[-2] > 256:
                k, v = k.detach(), v.detach()  # no gradient reaches the keys and values
            return super().core(q, k, v, key_padding_mask, causal, need_weights)

    result = run_check("local-padded-long-grad-bug", "reference")
    assert result.status == FAIL and "(b=1, n=300" in result.detail and "key_padding_mask" in result.detail, result


@pytest.mark.parametrize("variant", ["multi-head", "dot-product", "linear", "additive"])
def test_cross_attention_to_one_context_key_passes_the_reference_check(variant):
    """With one key to attend to, softmax gives it weight 1 whatever the query, so x's gradient is
    zero in exact arithmetic. Before: its fp32 noise (4e-8 of the context's gradient) was judged
    against itself, a rel err of 4e4, and the cell failed its checks at n = 1 and n = 3."""
    from attnbench.variants.check import CROSS, verify_for_training

    for n in (1, 3):
        assert verify_for_training(variant, {}, "cpu", n=n, used=frozenset({CROSS}), d_model=64, n_heads=4) is None


def test_a_wrong_query_gradient_still_fails_where_one_key_is_attended(sandbox):
    from attnbench import register_variant
    from attnbench.variants.check import CROSS, verify_for_training
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("query-leaks-gradient")
    class QueryLeak(MultiHeadAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            return out + 1e-3 * (q - q.detach()), weights  # the same output, a gradient into q that should not be

    failed = verify_for_training("query-leaks-gradient", {}, "cpu", n=1, used=frozenset({CROSS}))
    assert failed is not None and failed.detail.startswith("x.grad: rel err "), failed


def test_an_input_no_output_depends_on_is_not_compared_and_does_not_crash_the_check(sandbox):
    """Before: AttributeError inside the checker, where the query gets no gradient on either path."""
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("ignores-query")
    class IgnoresQuery(MultiHeadAttention):
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            return super().core(torch.zeros_like(q), k, v, key_padding_mask, causal, need_weights)

        def reference_core(self, q, k, v, key_padding_mask, causal):
            return super().reference_core(torch.zeros_like(q), k, v, key_padding_mask, causal)

    result = run_check("ignores-query", "reference")
    assert result.status == PASS, result


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", list_variants())
def test_an_fp64_layer_computes_in_fp64(variant, causal):
    """`linear` cast every input to fp32 (meant for fp16/bf16, whose range its sums overflow), so an
    fp64 layer had fp32's precision: its output 6e-8 from the reference, and gradcheck failed."""
    from attnbench import build_variant

    if causal and not get_variant_spec(variant).supports_causal:
        pytest.skip(f"{variant} does not attend causally")
    torch.manual_seed(0)
    layer = build_variant(variant, d_model=8, n_heads=2).double().eval()
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    assert layer(x, causal=causal)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: layer(x, causal=causal)[0], (x,))
