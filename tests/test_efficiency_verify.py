"""Kernels are verified before they are timed or trained, and attention weights before they are drawn.

An efficiency cell compares its layer with the naive reference (outputs and gradients) at a small
shape and checks its output and input gradient for NaN at the timed shape; a layer that fails is an
`error` with one line, and nothing of it is timed. An accuracy cell checks, at its own length and
as its model calls the layer, that no future token reaches an earlier output, masked keys are
ignored and the outputs equal the reference; a layer that fails is an `error`, not trained.
`bench attention` refuses weights that are not (b, h, n, m) or not finite, in one line, before
training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attnbench.runner.attention_map as attention_map
import attnbench.runner.measure as measure
from attnbench.runner.measure import TOLERANCE
from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan, execute_cell
from attnbench.runner.profiles import PROFILES
from attnbench.runner.store import read_records
from attnbench.variants.base import VARIANTS, build_variant, get_variant_spec
from support import one_error_line

# variants that fail on purpose, each in one way: written as a --plugin file, or exec'd in process
FAULTY = '''
import torch
from torch import nn

from attnbench import NoBackwardError, VariantSpec, register_variant
from attnbench.variants.base import AttentionLayer, ProjectedAttention
from attnbench.variants.multi_head import MultiHeadAttention
from attnbench.variants.reference import full_attention

PLAIN = VariantSpec(complexity="n", supports_causal=False, supports_padding_mask=False,
                    supports_cross=False, returns_weights=False)


class _GradTimes(torch.autograd.Function):
    """Identity forward; the gradient times `factor` backward."""

    @staticmethod
    def forward(ctx, t, factor):
        ctx.factor = factor
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


@register_variant("wrong-scale")
class WrongScale(MultiHeadAttention):
    """Scores scaled by 2/sqrt(d) instead of 1/sqrt(d): finite, plausible, wrong."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return super().core(2 * q, k, v, key_padding_mask, causal, need_weights)


@register_variant("wrong-grad")
class WrongGrad(MultiHeadAttention):
    """The right output, twice the right gradient."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        out, weights = super().core(q, k, v, key_padding_mask, causal, need_weights)
        return _GradTimes.apply(out, 2.0), weights


@register_variant("nan-when-long")
class NaNWhenLong(MultiHeadAttention):
    """Right (and equal to its reference) up to 300 tokens, the length compared, NaN beyond."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return (out * float("nan") if x.shape[1] > 300 else out), weights


@register_variant("plain-nan")
class PlainNaN(nn.Module):
    """No reference to compare with; its output is NaN."""

    spec = PLAIN

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
        return self.proj(x) * float("nan"), None


@register_variant("plain-nan-grad")
class PlainNaNGrad(PlainNaN):
    """No reference to compare with; a finite output whose input gradient is NaN."""

    def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
        return self.proj(_GradTimes.apply(x, float("nan"))), None


@register_variant("plain-bare")
class PlainBare(PlainNaN):
    """No reference to compare with; returns its output alone, not (out, weights)."""

    def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
        return self.proj(x)


@register_variant("no-reference-core")
class NoReferenceCore(ProjectedAttention):
    """A sound ProjectedAttention without a reference_core: nothing to compare with, not an error."""

    spec = VariantSpec(complexity="n^2")

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return full_attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal)


@register_variant("drop-key-column")
class DropKeyColumn(MultiHeadAttention):
    """Weights (b, h, n, m - 1): the last key's column silently dropped."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return out, None if weights is None else weights[..., :-1]


@register_variant("forward-only")
class ForwardOnly(MultiHeadAttention):
    """Right, but it has no backward: refuses a call where gradients are on (FlexAttention on a CPU)."""

    def forward(self, x, context=None, **kwargs):
        if torch.is_grad_enabled():
            raise NoBackwardError("forward-only: no backward on this device")
        return super().forward(x, context, **kwargs)


@register_variant("forward-only-wrong")
class ForwardOnlyWrong(ForwardOnly):
    """No backward, and its output twice the right one."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return 2 * out, weights


@register_variant("wrong-inference")
class WrongInference(MultiHeadAttention):
    """Right where gradients are on; without them (the path the forward is timed on) 1.5× off."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return (out if torch.is_grad_enabled() else 1.5 * out), weights


@register_variant("wrong-inference-when-long")
class WrongInferenceWhenLong(MultiHeadAttention):
    """Without gradients and past the reference's n = 300 only, 1.5× off (a path of long inputs)."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return (out if torch.is_grad_enabled() or x.shape[1] <= 300 else 1.5 * out), weights


@register_variant("attention-dropout")
class AttentionDropout(ProjectedAttention):
    """Sound, but random in training mode: attention dropout, drawn from torch's generator."""

    spec = VariantSpec(complexity="n^2")

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        p = 0.1 if self.training else 0.0
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal), None


@register_variant("own-generator-noise")
class OwnGeneratorNoise(ProjectedAttention):
    """Sound, but its forward draws from a generator of its own: never the same twice."""

    spec = VariantSpec(complexity="n^2")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(0)

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        noise = 1 + 0.1 * torch.rand(q.shape[-2], 1, generator=self.generator)
        return full_attention(q * noise, k, v, causal=causal)[0], None


@register_variant("leaky-causal")
class LeakyCausal(MultiHeadAttention):
    """Ignores causal=True in its fast path: every token sees the ones it predicts. Its reference
    is right."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return super().core(q, k, v, key_padding_mask, False, need_weights)


@register_variant("leaky-both")
class LeakyBoth(LeakyCausal):
    """Ignores causal=True in its fast path and its reference alike: the two agree."""

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return super().reference_core(q, k, v, key_padding_mask, False)


@register_variant("no-parameters")
class NoParameters(AttentionLayer):
    """Sound and parameter-free: q = k = v = x, one head (an ablation baseline)."""

    spec = VariantSpec(complexity="n^2", supports_cross=False)

    def attend(self, x, context, *, key_padding_mask, causal, need_weights):
        out, weights = full_attention(x[:, None], x[:, None], x[:, None], key_padding_mask=key_padding_mask,
                                      causal=causal)
        return out[:, 0], weights if need_weights else None


@register_variant("leaky-once-trained")
class LeakyOnceTrained(MultiHeadAttention):
    """Mixes in the NEXT token (a token shift the wrong way) by a learned weight that starts at 0:
    a fresh layer is exactly causal, so every check before training passes; training grows it."""

    def __init__(self, d_model, n_heads, **options):
        super().__init__(d_model, n_heads, **options)
        self.mix = nn.Parameter(torch.zeros(d_model))

    def project(self, x, context):
        ahead = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return super().project(x + self.mix * (ahead - x), context)


@register_variant("leaky-at-model-width")
class LeakyAtModelWidth(LeakyCausal):
    """Causal only at a head width of 8 (bench check's 32 / 4): at a model's 16 and more, every
    token sees the ones it predicts, fast path and reference alike."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return MultiHeadAttention.core(self, q, k, v, key_padding_mask, causal and q.shape[-1] < 16, need_weights)

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return MultiHeadAttention.reference_core(self, q, k, v, key_padding_mask, causal and q.shape[-1] < 16)


@register_variant("leaky-past-two-rows")
class LeakyPastTwoRows(LeakyCausal):
    """Causal only in batches of 1 or 2 rows (the checks' inputs had 2; a model's have 16 or 32)."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return MultiHeadAttention.core(self, q, k, v, key_padding_mask, causal and q.shape[0] <= 2, need_weights)

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return MultiHeadAttention.reference_core(self, q, k, v, key_padding_mask, causal and q.shape[0] <= 2)


@register_variant("leaky-when-scoring")
class LeakyWhenScoring(LeakyCausal):
    """Causal while training; in eval mode (as the test split is scored) it drops the mask."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        return MultiHeadAttention.core(self, q, k, v, key_padding_mask, causal and self.training, need_weights)

    def reference_core(self, q, k, v, key_padding_mask, causal):
        return MultiHeadAttention.reference_core(self, q, k, v, key_padding_mask, causal and self.training)


@register_variant("leaky-within-chunks")
class LeakyWithinChunks(MultiHeadAttention):
    """Past 64 tokens, causal=True lets a query see its whole 64-token chunk, later keys included,
    fast path and reference alike (a chunked kernel's slip); exact up to n = 64."""

    def core(self, q, k, v, key_padding_mask, causal, need_weights):
        out, weights = self.reference_core(q, k, v, key_padding_mask, causal)
        return out, weights if need_weights else None

    def reference_core(self, q, k, v, key_padding_mask, causal):
        n = q.shape[-2]
        if not causal or n <= 64:
            return super().reference_core(q, k, v, key_padding_mask, causal)
        i = torch.arange(n)
        seen = (i[None, :] <= i[:, None]) | (i[None, :] // 64 == i[:, None] // 64)
        if key_padding_mask is not None:
            seen = seen & ~key_padding_mask[:, None, None, :]
        scores = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).masked_fill(~seen, float("-inf"))
        weights = scores.softmax(-1)
        return weights @ v, weights


@register_variant("nan-weights")
class NaNWeights(MultiHeadAttention):
    """Weights of the right shape, with NaN in them."""

    def forward(self, x, context=None, **kwargs):
        out, weights = super().forward(x, context, **kwargs)
        return out, None if weights is None else weights * float("nan")
'''

# what the efficiency cell of each says (n = 512 timed; the reference is compared at n = 300)
EXPECTED = {
    "wrong-scale": "output differs from the naive reference: max rel err ",
    "wrong-grad": "input gradient differs from the naive reference: max rel err ",
    "nan-when-long": "output has NaN at n=512",
    "plain-nan": "output has NaN at n=512",  # no reference: checked at the timed length only
    "plain-nan-grad": "input gradient has NaN at n=512",
    # before: "output shape (512, 64) is not the input's (1, 512, 64)", its batch axis unpacked
    "plain-bare": "forward must return (out, weights|None), got a Tensor of shape (1, 512, 64) at n=512",
    "fault-nan": "output has NaN at n=300",
    "fault-shape": "output shape (1, 299, 64) is not the input's (1, 300, 64) at n=300",
    "forward-only-wrong": "output differs from the naive reference: max rel err ",  # its output alone compared
    "wrong-inference": "output without gradients differs from the naive reference: max rel err ",
    "wrong-inference-when-long": "output without gradients differs from the output with gradients: max rel err "
                                 "5.0e-01 > 1e-04 at n=512 (float32)",
}
FAULTS = str(Path(__file__).parent / "fixtures" / "fault_variants.py")


@pytest.fixture
def faulty(sandbox):
    """The FAULTY variants and the fixture's fault-* variants, registered for this test only."""
    import attnbench.plugins

    exec(compile(FAULTY, "faulty_variants", "exec"), {"__name__": "faulty_variants"})
    attnbench.plugins.import_plugin(FAULTS)
    yield


def efficiency_plan(**changes) -> Plan:
    p = PROFILES["smoke"]
    eff = {**p.efficiency.to_dict(), "model_step": False}
    return Plan(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=eff, threads=1, **changes)


def efficiency_cell(variant: str, n: int = 512) -> dict:
    return execute_cell(Cell.make("efficiency", variant, {}, None, {}, n, 0), efficiency_plan())


# ---------------------------------------------------------------------------- efficiency cells
@pytest.mark.parametrize("variant", list(EXPECTED))
def test_a_kernel_that_fails_its_check_is_an_error_and_nothing_is_timed(faulty, monkeypatch, variant):
    def no_timing(*args, **kwargs):
        raise AssertionError("timed a kernel that had not passed its check")

    monkeypatch.setattr(measure, "time_call", no_timing)
    record = efficiency_cell(variant)
    assert record["status"] == "error", record
    assert record["message"].startswith(EXPECTED[variant]), record["message"]
    assert record["result"] is None  # one line, no traceback, no numbers


@pytest.mark.parametrize("variant", ["attention-dropout", "own-generator-noise"])
def test_a_sound_layer_that_draws_at_random_is_timed_not_refused(faulty, variant) -> None:
    """The forward and the fwd+bwd warm-up calls draw alike from torch's generator; a layer whose
    forward is not reproducible at all is not held to the two paths' agreement."""
    record = efficiency_cell(variant)
    assert record["status"] == "ok", record["message"]


def test_bench_check_holds_a_layer_with_dropout_to_the_contract_not_to_its_random_draws(faulty) -> None:
    """Before: a sound causal layer with attention dropout failed the causal check (future tokens
    changed earlier outputs): each call drew other masks. Every checked call now starts from one
    random state. (This fixture ignores the padding mask and has no reference: those fail.)"""
    from attnbench.variants.check import PASS, run_checks

    results = {r.check: r for r in run_checks("attention-dropout", checks=["causal", "determinism", "padding",
                                                                          "reference", "inference"])}
    assert results["causal"].status == results["determinism"].status == PASS, results
    assert results["padding"].detail.startswith("masked keys changed unmasked outputs by ")
    # no reference_core of its own: nothing to compare with, as a layer without reference_forward (before:
    # the base's NotImplementedError failed bench check and errored accuracy cells, while efficiency cells timed it)
    assert results["reference"].status == results["inference"].status == "SKIP"
    assert "has no naive reference to compare against" in results["reference"].detail


def test_a_parameter_free_layer_passes_determinism(faulty) -> None:
    """Before: "a different seed built an identical layer (parameters ignore the seed?)"."""
    from attnbench.variants.check import run_check

    result = run_check("no-parameters", "determinism")
    assert result.status == "PASS" and result.detail == "bit-identical for one seed; no parameters"


def test_a_cell_starts_from_torchs_defaults_whatever_a_layer_before_it_changed() -> None:
    """Before: a plugin whose constructor called torch.set_default_dtype(float64) made the next
    variant's cells fail ("mat1 and mat2 must have the same dtype") or train in float64."""
    try:
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        record = efficiency_cell("multi-head", 64)
        assert record["status"] == "ok", record["message"]
        assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)


def test_the_reference_message_names_the_error_tolerance_length_and_dtype(faulty) -> None:
    message = efficiency_cell("wrong-scale")["message"]
    err = float(message.split("max rel err ")[1].split()[0])
    assert err > 0.1 and message.endswith(" > 1e-04 at n=300 (float32)"), message


@pytest.mark.parametrize("variant", ["multi-head", "no-reference-core"])
def test_a_sound_kernel_is_timed_as_before(faulty, variant) -> None:
    record = efficiency_cell(variant)
    assert record["status"] == "ok", record["message"]
    assert record["result"]["fwd"]["median_s"] > 0 and record["result"]["fwd_bwd"]["median_s"] > 0


@pytest.mark.parametrize("model_step", [False, True])
def test_a_kernel_without_backward_here_is_verified_and_timed_forward_only(faulty, model_step) -> None:
    plan = Plan(**{**vars(efficiency_plan()), "efficiency": {**efficiency_plan().efficiency, "model_step": model_step}})
    record = execute_cell(Cell.make("efficiency", "forward-only", {}, None, {}, 512, 0), plan)
    result = record["result"]
    assert record["status"] == "ok" and record["message"] == "forward only: forward-only: no backward on this device"
    assert result["fwd"]["median_s"] > 0 and result["peak_bytes_fwd"] > 0 and result["flops_fwd"] > 0
    assert result["fwd_bwd"] is result["peak_bytes_fwd_bwd"] is result["flops_fwd_bwd"] is None
    assert result["no_backward"] == "forward-only: no backward on this device"
    assert "model_step" not in result if not model_step else result["model_step"] is None  # a step trains


def test_bench_run_report_and_plot_show_a_forward_only_cell(sandbox, tmp_path, bench, bench_output) -> None:
    plugin = tmp_path / "faulty_variants.py"
    plugin.write_text(FAULTY)
    out = tmp_path / "run"
    code, shown, err = bench_output("run", "--plugin", plugin, "--profile", "smoke", "--variants",
                                    "forward-only,multi-head", "--kinds", "efficiency", "--efficiency-lengths", "64,128",
                                    "--device", "cpu", "--out", out)
    assert code == 0, err
    assert "ok efficiency forward-only n=64 seed=0: fwd " in shown and "forward only: forward-only: no" in shown
    assert "│ fwd " in shown  # the summary table's forward-only cells: 'fwd 0.3 (0.1)'
    code, report, err = bench_output("report", out)
    assert code == 0, err
    assert "Forward only, no backward on this device (forward-only n=64, forward-only n=128)" in report
    code, _, err = bench_output("plot", out)
    assert code == 0, err
    code, compared, err = bench_output("compare", out, out)  # its forward time and memory are compared
    assert code == 0 and "`efficiency/forward-only/-/n=64/seed=0` | fwd ms |" in compared, compared


def calls(name: str) -> list[dict]:
    spec = get_variant_spec(name)
    return [{"causal": False}] + ([{"causal": True}] if spec.supports_causal else [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", VARIANTS.names())
def test_every_built_in_variant_passes_within_its_dtype_s_tolerance(name, dtype) -> None:
    for kwargs in calls(name):
        torch.manual_seed(0)  # one init whatever ran before: in bf16 additive's worst error over inits
        layer = build_variant(name, d_model=64, n_heads=2).to(dtype=dtype)  # spans 0.004-0.0101 (60 of them)
        err = measure.verify_attention(layer, seq_len=4096, d_model=64, device="cpu", dtype=dtype, **kwargs)
        assert err is not None and err <= TOLERANCE[dtype] / 3, (kwargs, err)  # a margin of 3 at least


@pytest.mark.parametrize("window", [128, 256])
def test_the_compared_length_reaches_local_s_blocks(monkeypatch, window) -> None:
    """At the default windows the blocked path, not full attention (window >= n), is what gets
    compared: a kernel that lost its band is caught before a long n is timed."""
    from attnbench.variants import local

    def no_band(n, first, last, size, behind, ahead, key_hidden, dtype, device):
        return torch.zeros(1, 1, last - first, size, behind + size + ahead, dtype=dtype, device=device), None

    monkeypatch.setattr(local, "_band_bias", no_band)
    layer = build_variant("local", d_model=64, n_heads=2, window=window)
    with pytest.raises(measure.VerificationError, match=r"^output differs from the naive reference: .* at n=300"):
        measure.verify_attention(layer, seq_len=4096, d_model=64, device="cpu", dtype=torch.float32)


def test_a_projected_attention_without_reference_core_is_compared_with_nothing(faulty) -> None:
    layer = build_variant("no-reference-core", d_model=64, n_heads=2)
    assert measure.verify_attention(layer, seq_len=512, d_model=64, device="cpu", dtype=torch.float32) is None


@pytest.mark.compiler
def test_a_compiled_kernel_is_compared_in_its_eager_form_compiling_nothing() -> None:
    from torch._dynamo.utils import counters

    if not hasattr(torch.compiler, "set_stance"):
        pytest.skip("torch < 2.6 has no force_eager stance")
    layer = build_variant("linear", d_model=64, n_heads=2, kernel="compiled")
    before = dict(counters["stats"])
    assert measure.verify_attention(layer, seq_len=256, d_model=64, device="cpu", dtype=torch.float32) <= 1e-4
    assert dict(counters["stats"]) == before  # no graph compiled for a shape that is not timed


def test_bench_run_records_the_faulty_cell_as_an_error_and_times_the_rest(sandbox, tmp_path, bench) -> None:
    plugin = tmp_path / "faulty_variants.py"
    plugin.write_text(FAULTY)
    out = tmp_path / "run"
    code = bench("run", "--plugin", plugin, "--profile", "smoke", "--variants", "wrong-scale,plain-nan,multi-head",
                 "--kinds", "efficiency", "--efficiency-lengths", "128", "--device", "cpu", "--out", out, "--quiet")
    assert code == 0
    records = {r["variant"]: r for r in read_records(out)}
    assert records["multi-head"]["status"] == "ok"
    assert records["wrong-scale"]["status"] == records["plain-nan"]["status"] == "error"
    assert records["wrong-scale"]["message"].startswith("output differs from the naive reference")
    assert records["plain-nan"]["message"] == "output has NaN at n=128"


# ---------------------------------------------------------------------------- bench attention
@pytest.mark.parametrize(
    ("variant", "task", "message"),
    [
        ("drop-key-column", "copy", "drop-key-column returned attention weights of shape (1, 2, 32, 31); "
                                    "want (b, h, n, m) = (1, h, 32, 32)"),
        ("drop-key-column", "translation", "drop-key-column returned attention weights of shape (1, 2, 1, 31); "
                                           "want (b, h, n, m) = (1, h, 1, 32)"),
        ("nan-weights", "copy", "nan-weights returned attention weights with NaN (shape (1, 2, 32, 32))"),
    ],
)
def test_attention_weights_of_the_wrong_shape_or_not_finite_are_refused_before_training(
    sandbox, tmp_path, monkeypatch, bench_output, variant, task, message
) -> None:
    monkeypatch.setattr(attention_map, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    plugin = tmp_path / "faulty_variants.py"
    plugin.write_text(FAULTY)
    code, _, err = bench_output("attention", "--plugin", plugin, "--variant", variant, "--task", task,
                                "--profile", "smoke", "--out", tmp_path / "map.png")
    assert code == 2
    assert one_error_line(err) == f"bench: error: {message}"
    assert not (tmp_path / "map.png").exists()


# ---------------------------------------------------------------------------- accuracy cells
def accuracy_cell(variant: str, task: str, n: int) -> dict:
    p = PROFILES["smoke"]
    plan = Plan(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=p.efficiency.to_dict(), threads=1)
    return execute_cell(Cell.make("accuracy", variant, {}, task, {}, n, 0), plan)


@pytest.mark.parametrize(("variant", "n", "expected"), [
    ("leaky-causal", 32, "leaky-causal: its causal check fails at n=32: future tokens changed earlier outputs by "),
    ("leaky-both", 32, "leaky-both: its causal check fails at n=32: future tokens changed earlier outputs by "),
    # exact up to 64 tokens: `bench check`'s causal check (n = 23) passes it; the cell's own length does not
    ("leaky-within-chunks", 128, "leaky-within-chunks: its causal check fails at n=128: future tokens changed "),
    # each passed every check before: they were built 32 wide with 4 heads, given 2 rows, in training mode
    ("leaky-at-model-width", 32, "leaky-at-model-width: its causal check fails at n=32: future tokens changed "),
    ("leaky-past-two-rows", 32, "leaky-past-two-rows: its causal check fails at n=32: future tokens changed "),
    ("leaky-when-scoring", 32, "leaky-when-scoring: its causal check fails at n=32: future tokens changed earlier "
                               "outputs by "),
])
def test_a_layer_that_sees_the_tokens_a_language_model_predicts_is_not_trained(faulty, monkeypatch, variant, n,
                                                                               expected):
    import attnbench.runner.execute as execute

    def no_training(*args, **kwargs):
        raise AssertionError("trained a layer that had not passed its checks")

    monkeypatch.setattr(execute, "train_and_evaluate", no_training)
    record = accuracy_cell(variant, "char-lm", n)
    assert record["status"] == "error" and record["result"] is None, record
    assert record["message"].startswith(expected), record["message"]
    assert record["message"].endswith(f"; not trained (bench check --variants {variant} runs every check)")
    assert ("in eval mode under no_grad" in record["message"]) == (variant == "leaky-when-scoring")


def test_a_leak_that_training_grows_is_caught_in_the_trained_model_before_it_is_scored(faulty) -> None:
    """The layer checks before training see a fresh layer, exactly causal here; the trained model
    that is scored reads the next token. Before: char-lm 1.42 bits per byte, in bold, against
    multi-head's 3.40."""
    from attnbench.variants.check import CAUSAL, verify_for_training

    assert verify_for_training("leaky-once-trained", {}, "cpu", n=32, used=frozenset({CAUSAL})) is None
    record = accuracy_cell("leaky-once-trained", "char-lm", 32)
    assert record["status"] == "error" and record["result"] is None, record
    assert record["message"].startswith("the trained model sees the tokens it predicts: its logits before position 16 "
                                        "changed by ") and record["message"].endswith(" from 16 on was replaced; not scored")
    assert accuracy_cell("multi-head", "char-lm", 32)["status"] == "ok"
    assert accuracy_cell("leaky-once-trained", "agreement", 32)["status"] == "ok"  # a classifier may look ahead


def test_a_leak_of_causal_attention_spoils_no_cell_that_attends_both_ways(faulty) -> None:
    assert accuracy_cell("leaky-within-chunks", "char-lm", 32)["status"] == "ok"  # exact at n <= 64
    assert accuracy_cell("leaky-causal", "agreement", 32)["status"] == "ok"  # a classifier: no causal call


def test_the_cross_attention_a_seq2seq_decoder_uses_is_checked_too(faulty, monkeypatch) -> None:
    import attnbench.runner.execute as execute
    from attnbench.variants.check import CROSS

    asked = []
    real = execute.verify_for_training
    monkeypatch.setattr(execute, "verify_for_training",
                        lambda name, options, device, *, n, used, **size: asked.append((name, n, used))
                        or real(name, options, device, n=n, used=used, **size))
    assert accuracy_cell("multi-head", "translation", 32)["status"] == "ok"
    assert asked == [("multi-head", 32, frozenset({"causal"})), ("multi-head", 32, frozenset({CROSS}))]


def test_slow_first_layer_checks_time_out_no_cell_and_leave_no_cell_order_dependence(monkeypatch) -> None:
    """The layer checks run once per process, so the first cell of a layer pays for them (1.2 s
    cold in a reviewer's run). Inside a 0.2 s cell budget they timed that cell out before their
    result was stored, so every later cell ran them again and timed out too: `--tasks distance,copy`
    gave timeout, timeout and `--tasks copy,distance` ok, ok. They now have their own limit."""
    import time

    import attnbench.runner.execute as execute
    import attnbench.variants.check as check

    monkeypatch.setattr(check, "_VERIFIED", {})
    real = check._first_failure

    def cold_first_checks(*args, **kwargs):
        time.sleep(2.5)  # past the cell's budget below
        return real(*args, **kwargs)

    monkeypatch.setattr(check, "_first_failure", cold_first_checks)
    p = PROFILES["smoke"]
    plan = Plan(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=p.efficiency.to_dict(), threads=1,
                max_cell_seconds=2.0)
    assert execute.checks_budget(Cell.make("accuracy", "dot-product", {}, "copy", {}, 16, 0), plan) == 10.0
    records = [execute_cell(Cell.make("accuracy", "dot-product", {}, task, {}, 16, 0), plan)
               for task in ("distance", "copy")]
    assert [r["status"] for r in records] == ["ok", "ok"], [r["message"] for r in records]

    monkeypatch.setattr(check, "_VERIFIED", {})
    monkeypatch.setattr(execute, "CHECKS_SECONDS", 1.0)  # checks past their own limit: a timeout that says so
    record = execute_cell(Cell.make("accuracy", "dot-product", {}, "copy", {}, 16, 0), plan)
    assert (record["status"], record["message"]) == ("timeout", "its layer checks took over 2 s; not trained")
