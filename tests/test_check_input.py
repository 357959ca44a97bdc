"""`bench check` on faulty plugin variants: each fault is one clear FAIL (or a visible SKIP),
never a PASS and never an error raised inside the checker itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnbench import VariantSpec, register_variant
from attnbench.plugins import import_plugin
from attnbench.variants.base import ProjectedAttention
from attnbench.variants.check import CHECKS, FAIL, PASS, SKIP, CheckResult, run_check, run_checks, summary
from attnbench.variants.multi_head import MultiHeadAttention

FAULTS = str(Path(__file__).parent / "fixtures" / "fault_variants.py")


class _NaNGrad(torch.autograd.Function):
    """Identity forward, NaN backward."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _register_faults() -> None:
    """Plugin variants with one fault each (call inside the `sandbox` fixture)."""

    @register_variant("nan-grad")
    class NaNGrad(MultiHeadAttention):  # finite outputs, NaN gradients on the fast path only
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            return super().core(_NaNGrad.apply(q), k, v, key_padding_mask, causal, need_weights)

    @register_variant("short-reference")
    class ShortReference(MultiHeadAttention):
        def reference_forward(self, x, context=None, **kwargs):
            out, weights = super().reference_forward(x, context, **kwargs)
            return out[:, :-1], weights

    @register_variant("no-reference-core")
    class NoReferenceCore(ProjectedAttention):
        spec = VariantSpec(complexity="n^2")
        core = MultiHeadAttention.core

    @register_variant("no-core")
    class NoCore(ProjectedAttention):
        spec = VariantSpec(complexity="n^2")

    @register_variant("unreferenced")
    class Unreferenced(MultiHeadAttention):
        reference_forward = None

    @register_variant("bare-core")
    class BareCore(MultiHeadAttention):  # returns the output alone, not (out, weights)
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            return super().core(q, k, v, key_padding_mask, causal, need_weights)[0]

    @register_variant("list-forward")
    class ListForward(MultiHeadAttention):  # a list pair, which every caller unpacks alike
        def forward(self, *args, **kwargs):
            return list(super().forward(*args, **kwargs))

    @register_variant("nested-core")
    class NestedCore(MultiHeadAttention):  # wraps a function that returns (out, weights) in a pair of its own
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            return super().core(q, k, v, key_padding_mask, causal, need_weights), None

    @register_variant("nan-without-keys")
    class NaNWithoutKeys(MultiHeadAttention):  # a softmax over no keys: NaN rows, as a naive -inf fill gives
        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
            if key_padding_mask is not None:
                nothing = key_padding_mask.all(-1)  # (b,): every key of the row masked
                out = torch.where(nothing[:, None, None, None], float("nan"), out)
                if causal:  # the first query sees only the first key
                    out[:, :, 0] = torch.where(key_padding_mask[:, None, :1], float("nan"), out[:, :, 0])
            return out, weights


@pytest.fixture
def faults(sandbox):
    import_plugin(FAULTS)  # fault-nan (NaN output), fault-shape (one position short), …
    _register_faults()


# a NaN output fails every check that calls the variant, naming the call
NAN_OUT = {
    "shape": "non-finite output",
    "finite-grad": "non-finite output",
    "determinism": "non-finite output",
    "causal": "non-finite output (causal=True)",
    "padding": "non-finite output (key_padding_mask)",
    "cross": "non-finite output (context)",
    "weights": "non-finite output",
    "reference": "non-finite output",
    "inference": "non-finite output",
    "low-precision": "non-finite output (bfloat16, causal=True)",
}


@pytest.mark.parametrize("check", list(NAN_OUT))
def test_a_nan_output_fails_every_check(faults, check):
    assert run_check("fault-nan", check) == CheckResult("fault-nan", check, FAIL, NAN_OUT[check])


def test_nan_gradients_fail_the_reference_check(faults):
    result = run_check("nan-grad", "reference")
    assert result == CheckResult("nan-grad", "reference", FAIL, "x.grad: rel err nan > 1e-05 (b=3, n=7)")


# a wrong output shape is one line in every check, not an error inside the checker
SHORT_OUT = {
    "shape": "out shape (2, 10, 32) != x shape (2, 11, 32)",
    "finite-grad": "out shape (2, 18, 32) != x shape (2, 19, 32)",
    "determinism": "out shape (2, 16, 32) != x shape (2, 17, 32)",
    "causal": "out shape (3, 22, 32) != x shape (3, 23, 32)",  # 3 rows: past 2
    "padding": "out shape (3, 20, 32) != x shape (3, 21, 32)",
    "cross": "out shape (3, 8, 32) != x shape (3, 9, 32)",
    "weights": "out shape (2, 11, 32) != x shape (2, 12, 32)",
    "reference": "out shape (3, 6, 32) != x shape (3, 7, 32)",
    "inference": "out shape (2, 299, 32) != x shape (2, 300, 32)",
    "low-precision": "out shape (2, 39, 32) != x shape (2, 40, 32)",
}


@pytest.mark.parametrize("check", list(SHORT_OUT))
def test_a_wrong_output_shape_fails_every_check_in_one_line(faults, check):
    assert run_check("fault-shape", check) == CheckResult("fault-shape", check, FAIL, SHORT_OUT[check])


def test_a_core_that_returns_a_bare_tensor_is_named_not_blamed_on_einops(faults):
    result = run_check("bare-core", "shape")
    assert result.status == FAIL
    assert result.detail.startswith(
        "PluginError: bare-core: core must return (out, weights|None), got a Tensor of shape (2, 4, 11, 8) (at "
    ), result.detail


def test_a_core_that_nests_its_pair_is_shown_as_what_it_returned(faults):
    result = run_check("nested-core", "shape")  # before: "got tuple", which a pair is too
    assert result.detail.startswith("PluginError: nested-core: core must return (out, weights|None), got "
                                    "(tuple, NoneType) (at "), result.detail


def test_what_a_layer_returned_is_shown_as_its_shape_and_a_list_pair_passes(faults):
    import torch

    from attnbench.variants.base import returned

    t = torch.zeros(2, 4)
    assert [returned(r) for r in (t, (t, None), [t], ((t, t), None), {})] == [
        "a Tensor of shape (2, 4)", "(Tensor, NoneType)", "[Tensor]", "(tuple, NoneType)", "dict"]
    assert run_check("list-forward", "shape").status == PASS  # the runner takes [out, weights] too


def test_a_nan_output_for_a_query_without_keys_fails_the_padding_check(faults):
    assert run_check("nan-without-keys", "padding") == CheckResult(
        "nan-without-keys", "padding", FAIL, "non-finite output (key_padding_mask)"
    )
    assert run_check("multi-head", "padding").status == PASS


def test_a_wrong_reference_shape_is_named(faults):
    result = run_check("short-reference", "reference")
    assert result.detail == "reference_forward: out shape (3, 6, 32) != x shape (3, 7, 32)"


def test_a_missing_core_says_what_to_implement(faults):
    result = run_check("no-core", "shape")
    assert result.status == FAIL
    assert result.detail.startswith(
        "NotImplementedError: no-core: ProjectedAttention subclasses implement core(q, k, v, key_padding_mask, causal,"
        " need_weights) -> (out, weights|None), the fast path that forward runs (at ")
    assert "base.py:" in result.detail


def test_a_missing_reference_core_is_no_reference_a_skip_that_says_what_to_implement(faults):
    """As a layer without reference_forward: before, the base's NotImplementedError failed it here
    and errored its accuracy cells, while its efficiency cells timed it unverified."""
    result = run_check("no-reference-core", "reference")
    assert result.status == SKIP and result.detail == (
        "no-reference-core has no naive reference to compare against: give it a reference_forward (a "
        "ProjectedAttention: a reference_core; same call and parameters, naive fp32 math) to have its outputs and "
        "gradients checked")


def test_a_variant_without_a_reference_is_a_skip_that_says_why_and_shows_in_the_summary(faults):
    results = run_checks("unreferenced")
    reference = next(r for r in results if r.check == "reference")
    assert reference == CheckResult(
        "unreferenced", "reference", SKIP,
        "unreferenced has no naive reference to compare against: give it a reference_forward (a ProjectedAttention:"
        " a reference_core; same call and parameters, naive fp32 math) to have its outputs and gradients checked",
    )
    assert summary(results) == (
        "8 passed, 3 skipped (reference: unreferenced has no naive reference to compare against)"
    )


def _results(*statuses: str, check: str = "shape") -> list[CheckResult]:
    return [CheckResult("v", check, status) for status in statuses]


@pytest.mark.parametrize(
    ("results", "line"),
    [
        (_results(FAIL), "1 of 1 check failed"),
        (_results(FAIL, PASS, SKIP), "1 of 3 checks failed"),
        (_results(PASS), "1 check passed"),
        (_results(PASS, PASS), "all 2 checks passed"),
        (_results(PASS, SKIP), "1 passed, 1 skipped"),
        ([*_results(FAIL), CheckResult("a", "reference", SKIP), CheckResult("b", "reference", SKIP)],
         "1 of 3 checks failed (reference: a, b have no naive reference to compare against)"),
    ],
)
def test_summary_counts_in_words(results, line):
    assert summary(results) == line


def _register_init_fails() -> None:
    @register_variant("init-fails")
    class InitFails(MultiHeadAttention):
        def __init__(self, *args, **kwargs):
            raise ValueError("init fails")


def test_a_variant_whose_constructor_raises_is_one_fail_row_saying_so(sandbox):
    _register_init_fails()
    assert run_checks("init-fails") == [CheckResult(
        "init-fails", "build", FAIL, "init-fails: building the layer failed: ValueError: init fails")]


def test_bench_check_goes_on_past_a_variant_whose_constructor_raises(sandbox, bench_output):
    _register_init_fails()
    code, out, err = bench_output("check", "--variants", "init-fails,multi-head", "--checks", "shape")
    assert code == 1 and "bench: error" not in err and "Traceback" not in err
    assert "init-fails: building the layer failed" in out.replace("\n", " ")
    assert "multi-head" in out and "PASS" in out and "1 of 2 checks failed" in out


def test_a_check_named_twice_runs_once_in_the_order_given():
    checks = [r.check for r in run_checks("multi-head", checks=["shape", "causal", "shape"])]
    assert checks == ["shape", "causal"]


def test_every_check_is_covered_here():
    """A new check must say what a NaN or a wrong shape does to it."""
    assert set(CHECKS) - {"unsupported"} == set(NAN_OUT) == set(SHORT_OUT)
