"""Measurement primitives: timing shape, exact CPU tensor-byte counts, FLOPs, OOM detection, whole cells.

No test asserts on wall-clock speed; byte and FLOP counts are deterministic and asserted exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attnbench  # noqa: F401  (registers the built-in variants)
from attnbench.runner.measure import (
    CPU_MEMORY_METHOD,
    TensorBytes,
    Timing,
    allocator_peak,
    count_flops,
    is_oom,
    matmul_peak,
    measure_attention,
    measure_step,
    peak_memory,
    sdpa_kernels,
    time_call,
)
from attnbench.variants.base import VARIANTS, build_variant

F32 = 4  # bytes per float32
SLACK = 4096  # bytes: a scalar loss, its seed gradient and the like


# ------------------------------------------------------------------------------------ time
def test_time_call_of_a_small_matmul():
    a = torch.randn(64, 64)
    timing = time_call(lambda: a @ a, device="cpu", min_run_time=0.02)
    assert isinstance(timing, Timing)
    assert timing.median_s > 0 and timing.iqr_s >= 0 and timing.runs >= 1
    assert timing.to_dict() == {"median_s": timing.median_s, "iqr_s": timing.iqr_s, "runs": timing.runs}


def test_time_call_runs_the_warmup_calls_first():
    calls = []
    time_call(lambda: calls.append(1), device="cpu", min_run_time=0.001, warmup=3)
    assert len(calls) > 3


# ---------------------------------------------------------------------------------- memory
def test_peak_is_the_largest_live_total_not_the_sum():
    def fn():
        first = torch.empty(1_000_000, dtype=torch.float32)
        del first
        second = torch.empty(2_000_000, dtype=torch.float32)
        return second

    peak, method = peak_memory(fn, device="cpu")
    assert method == CPU_MEMORY_METHOD
    assert abs(peak - 2_000_000 * F32) <= SLACK


def test_peak_counts_tensors_alive_together():
    def fn():
        first = torch.empty(1_000_000)
        second = torch.ones(2_000_000)
        return first, second

    peak, _ = peak_memory(fn, device="cpu")
    assert abs(peak - 3_000_000 * F32) <= SLACK


def test_tensors_made_before_fn_and_their_views_are_excluded():
    before = torch.randn(1000, 1000)

    def views_and_in_place():
        before.t().add_(1)
        before[:10].mul_(2)
        before.view(-1).detach()

    assert peak_memory(views_and_in_place, device="cpu")[0] == 0
    assert peak_memory(lambda: before * 2, device="cpu")[0] == 1000 * 1000 * F32


def test_out_resizes_and_torch_tensor_are_counted():
    a, b = torch.randn(300, 200), torch.randn(200, 100)

    def into_out():
        out = torch.empty(0)
        torch.mm(a, b, out=out)  # resizes `out` to 300 × 100
        return out

    assert peak_memory(into_out, device="cpu")[0] == 300 * 100 * F32
    assert peak_memory(lambda: torch.tensor([1.0] * 10_000), device="cpu")[0] == 10_000 * F32


def test_the_cpu_allocator_s_events_count_what_the_tensor_counter_counts_in_eager_code():
    big = torch.randn(1_000_000)

    def fn():
        first = big * 2  # a temporary, then a second tensor while it lives, then freed
        second = first + 1
        del first
        return second * 3, torch.empty(0)

    with TensorBytes() as counted:
        fn()
    assert counted.peak == 2 * big.nbytes
    # the allocator also sees what no op returns: here the three Python scalars, wrapped as 0-d tensors
    assert counted.peak <= allocator_peak(fn) <= counted.peak + 3 * 4
    assert allocator_peak(lambda: big.add_(1)) < 64  # in place: nothing of the tensor's size


def test_allocator_events_count_no_free_of_a_block_made_before_the_call():
    # torch's CPU reporter remembers blocks from earlier profiling sessions: freeing one inside a
    # later session must not lower that session's count (nor be taken as its start)
    keep = {}
    assert allocator_peak(lambda: keep.update(a=torch.empty(1_000_000))) == 4_000_000
    assert allocator_peak(lambda: (keep.pop("a"), torch.empty(1_000_000))) == 4_000_000


def test_allocator_events_are_not_taken_inside_a_running_profiler():
    # a second profiler would end the first one's session: the caller keeps its own method
    q = torch.randn(1, 2, 64, 16)
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)  # noqa: E731
    kernels, inner = sdpa_kernels(lambda: (allocator_peak(lambda: torch.empty(10)), sdpa()))
    assert inner[0] is None and kernels == ("flash (CPU)",)  # and the outer profiler still saw SDPA


def test_forward_backward_counts_activations_and_gradients():
    torch.manual_seed(0)
    batch, d_in, d_out = 32, 256, 128
    layer = nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=True)

    def fn():
        out = layer(x)  # alive until fn returns
        out.sum().backward()

    activations = batch * d_out * F32
    grads = (d_out * d_in + d_out + batch * d_in) * F32  # weight, bias and input gradients
    peak, _ = peak_memory(fn, device="cpu")
    # the backward ops go through the mode: the gradients are there, and nothing else of size
    # (the transposed weight the backward uses is a view: not counted)
    assert activations + grads <= peak <= activations + grads + SLACK
    assert layer.weight.grad is not None and x.grad is not None


def test_activations_saved_for_backward_are_counted():
    x, w = torch.randn(64, 128), torch.randn(128, 256, requires_grad=True)
    with TensorBytes() as mode:
        loss = torch.tanh(x @ w).sum()  # only the graph keeps tanh's output (saved for backward)
        saved = mode.live
        loss.backward()
    assert 64 * 256 * F32 <= saved <= 64 * 256 * F32 + SLACK
    with torch.no_grad(), TensorBytes() as mode:
        torch.tanh(x @ w).sum()
        assert mode.live <= SLACK  # nothing saved without autograd


def fwd_bwd_bytes(name: str, n: int, **kwargs) -> int:
    torch.manual_seed(0)
    layer = build_variant(name, d_model=64, n_heads=4, **kwargs.pop("options", {}))
    x = torch.randn(1, n, 64, requires_grad=True)

    def fn():
        out, _ = layer(x, **kwargs)
        out.sum().backward()

    return peak_memory(fn, device="cpu")[0]


@pytest.mark.parametrize(
    ("name", "options"),
    [("multi-head", {}), ("local", {"window": 32}), ("linear", {})],
)
def test_memory_grows_linearly_for_fused_local_and_linear_attention(name, options):
    # multi-head runs on the fused SDPA kernel, which never returns the n × n scores
    ratio = fwd_bwd_bytes(name, 1024, options=options) / fwd_bwd_bytes(name, 256, options=options)
    assert 3.0 <= ratio <= 5.0, f"{name}: 4× n gave {ratio:.2f}× the bytes"


def test_memory_grows_quadratically_when_the_scores_are_formed():
    ratio = fwd_bwd_bytes("multi-head", 1024, need_weights=True) / fwd_bwd_bytes("multi-head", 256, need_weights=True)
    assert ratio >= 10.0, f"explicit softmax path: 4× n gave only {ratio:.2f}× the bytes"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_of_a_known_tensor():
    keep = torch.empty(1_000_000, device="cuda")  # noqa: F841  (baseline, excluded)
    peak, method = peak_memory(lambda: torch.empty(2_000_000, device="cuda"), device="cuda")
    assert method == "cuda.max_memory_allocated"
    assert 2_000_000 * F32 <= peak <= 2_000_000 * F32 + 2**20
    timing = time_call(lambda: keep * 2, device="cuda", min_run_time=0.01)
    assert timing.median_s > 0


# ----------------------------------------------------------------------------------- FLOPs
def test_count_flops_of_a_matmul():
    a, b, c = 7, 11, 13
    x, y = torch.randn(a, b), torch.randn(b, c)
    assert count_flops(lambda: x @ y) == 2 * a * b * c


def test_count_flops_counts_in_place_batch_summing_and_vector_matmuls_as_their_products():
    # torch's table counts baddbmm but not x.baddbmm_(…): a kernel accumulating in place read as free
    b, m, k, n = 3, 5, 7, 11
    x, y, acc = torch.randn(b, m, k), torch.randn(b, k, n), torch.randn(b, m, n)
    batched = 2 * b * m * k * n
    assert count_flops(lambda: torch.baddbmm(acc, x, y)) == batched  # torch's own entry
    assert count_flops(lambda: acc.clone().baddbmm_(x, y)) == batched
    assert count_flops(lambda: torch.addbmm(acc[0], x, y)) == batched
    assert count_flops(lambda: acc[0].clone().addbmm_(x, y)) == batched
    assert count_flops(lambda: acc[0].clone().addmm_(x[0], y[0])) == 2 * m * k * n
    # a matrix times a vector, and a vector times a vector, as `@` runs them
    vec = torch.randn(k)
    assert count_flops(lambda: x[0] @ vec) == 2 * m * k  # mv
    assert count_flops(lambda: torch.addmv(acc[0, :, 0], x[0], vec)) == 2 * m * k
    assert count_flops(lambda: acc[0, :, 0].clone().addmv_(x[0], vec)) == 2 * m * k
    assert count_flops(lambda: vec @ vec) == 2 * k  # dot
    assert count_flops(lambda: torch.vdot(vec, vec)) == 2 * k


def test_count_flops_includes_the_fused_cpu_attention():
    n, d = 256, 64
    layer = build_variant("multi-head", d_model=d, n_heads=4)
    x = torch.randn(1, n, d)
    projections = 4 * 2 * n * d * d
    scores_and_values = 2 * 2 * n * n * d  # q kᵀ and p v over all heads
    assert count_flops(lambda: layer(x)) == projections + scores_and_values


# ------------------------------------------------------------------------------------- OOM
@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes"), True),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (ValueError("out of memory"), False),
        (RuntimeError("shape mismatch"), False),
        (KeyError("x"), False),
    ],
)
def test_is_oom(exc, expected):
    assert is_oom(exc) is expected


def test_a_real_cpu_allocation_failure_is_oom():
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_oom(info.value)


# ----------------------------------------------------------------------------------- peak
def test_matmul_peak_is_positive_and_cached():
    first = matmul_peak(device="cpu", size=128, min_run_time=0.02)
    assert first > 0 and math.isfinite(first)
    assert matmul_peak(device="cpu", size=128, min_run_time=0.02) == first


# ---------------------------------------------------------------------------- whole cells
KEYS = {
    "fwd", "fwd_bwd", "peak_bytes_fwd", "peak_bytes_fwd_bwd", "mem_method", "flops_fwd", "flops_fwd_bwd",
    "flops_per_s_fwd", "flops_per_s_fwd_bwd", "peak_fraction_fwd", "peak_fraction_fwd_bwd",
    "threads", "device", "dtype", "reference_rel_err",
}


@pytest.mark.parametrize("name", VARIANTS.names())
def test_measure_attention_for_every_variant(name):
    result = measure_attention(name, {}, seq_len=128, d_model=64, min_run_time=0.01, peak_flops=1e9)
    assert set(result) == KEYS
    assert 0 <= result["reference_rel_err"] <= 1e-4  # every built-in has a reference, compared before timing
    for key in ("fwd", "fwd_bwd"):
        assert result[key]["median_s"] > 0 and result[key]["iqr_s"] >= 0 and result[key]["runs"] >= 1
        assert result[f"peak_bytes_{key}"] > 0
        assert result[f"flops_{key}"] > 0
        assert result[f"flops_per_s_{key}"] == pytest.approx(result[f"flops_{key}"] / result[key]["median_s"])
        assert result[f"peak_fraction_{key}"] == pytest.approx(result[f"flops_per_s_{key}"] / 1e9)
    assert result["flops_fwd_bwd"] > result["flops_fwd"]
    assert result["peak_bytes_fwd_bwd"] > result["peak_bytes_fwd"]
    assert result["mem_method"] == CPU_MEMORY_METHOD
    assert result["threads"] == torch.get_num_threads()
    assert (result["device"], result["dtype"]) == ("cpu", "torch.float32")


def test_measure_attention_is_deterministic_and_leaves_the_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    args = dict(seq_len=64, d_model=32, n_heads=2, causal=True, min_run_time=0.005)
    first = measure_attention("local", {"window": 16}, **args)
    second = measure_attention("local", {"window": 16}, **args)
    assert torch.equal(torch.get_rng_state(), state)
    assert first["peak_fraction_fwd"] is None
    for key in ("peak_bytes_fwd", "peak_bytes_fwd_bwd", "flops_fwd", "flops_fwd_bwd"):
        assert first[key] == second[key]


def test_measure_step_of_a_training_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    result = measure_step(step, device="cpu", min_run_time=0.01)
    assert result["time"]["median_s"] > 0 and result["time"]["runs"] >= 1
    assert result["flops"] == 3 * 2 * 16 * (32 * 64 + 64 * 4) - 2 * 16 * 32 * 64  # no input gradient
    params = sum(p.numel() for p in model.parameters()) * F32
    assert result["peak_bytes"] >= params  # at least the gradients
    assert result["mem_method"] == CPU_MEMORY_METHOD and result["peak_fraction"] is None
