"""Compiled kernels (variants/compiled.py): what runs as compiled is compiled, a measurement says
when it saw the eager form instead, and a machine without a compiler gets one clear line."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
from torch._dynamo.exc import FailOnRecompileLimitHit

from attnbench import build_variant
from attnbench.benchmarks import suite
from attnbench.benchmarks.cases import CASES, CORE, LAYER
from attnbench.benchmarks.suite import Candidate, PerfConfig, relative_error, run_suite, verify
from attnbench.benchmarks.targets import check_targets
from attnbench.errors import UnsupportedError
from attnbench.runner import measure
from attnbench.runner.measure import (
    CPU_ALLOCATOR_METHOD, CPU_EAGER_PATH_METHOD, CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, TensorBytes, count_flops,
    peak_memory,
)
from attnbench.variants.linear import causal_linear_attention
from attnbench.runner.store import read_records
from attnbench.variants import compiled
from attnbench.variants.check import run_checks
from attnbench.variants.compiled import compile_kernel, eager_fallbacks

pytestmark = pytest.mark.compiler
NO_COMPILER = {"cpp.cxx": ("attnbench-no-such-cxx",)}
TINY = dict(lengths=(32,), batches=(1,), repeat=1, min_run_time=0.001, memory_probes=())


def marked(x: torch.Tensor) -> torch.Tensor:
    """x + 1 when compiled, x − 1 when eager: tells which form ran."""
    return x + 1 if torch.compiler.is_compiling() else x - 1


def test_a_compiled_function_runs_compiled_outside_any_dispatch_mode():
    x = torch.arange(4.0)
    fallbacks = eager_fallbacks()
    assert torch.equal(compile_kernel(marked, dynamic=False)(x), x + 1)
    assert eager_fallbacks() == fallbacks


def test_under_the_memory_counter_the_eager_form_runs_then_the_compiled_call_is_counted_from_allocator_events():
    x = torch.arange(4.0)
    box = {}
    fallbacks = eager_fallbacks()
    _, method = peak_memory(lambda: box.update(out=compile_kernel(marked, dynamic=False)(x)), device="cpu")
    assert method == CPU_ALLOCATOR_METHOD and torch.equal(box["out"], x + 1)  # the last call: compiled
    assert eager_fallbacks() == fallbacks + 1  # the counter's call only
    _, method = peak_memory(lambda: marked(x), device="cpu")  # plain eager code: the plain method
    assert method == CPU_MEMORY_METHOD


def test_the_compiled_code_s_own_allocations_are_counted_not_its_eager_form_s():
    x = torch.randn(1_000_000)
    fused = compile_kernel(lambda t: (t * 2 + 1) * 3, dynamic=False)  # one loop, one output when compiled
    fused(x)  # compiled outside the count
    eager_peak, _ = peak_memory(lambda: (x * 2 + 1) * 3, device="cpu")
    peak, method = peak_memory(lambda: fused(x), device="cpu")
    assert method == CPU_ALLOCATOR_METHOD
    assert eager_peak == 2 * x.nbytes and peak == x.nbytes  # two temporaries live at once vs the output alone


def test_the_compiled_causal_linear_step_is_counted_smaller_than_its_eager_form():
    # the README's example: at n = 2048, 8 heads in one step of 64-position chunks (the CPU's
    # inference default takes 256-position steps of 32, where the two differ less: 7.5 vs 8.6 MiB),
    # the fused step's own buffers against its eager form's tensors
    q, k, v = (torch.randn(1, 8, 2048, 64) for _ in range(3))
    call = lambda: causal_linear_attention(q, k, v, chunk_size=64, segment=2048, pairs=8, fused=True)  # noqa: E731
    with torch.inference_mode():
        call()  # compiled outside the count
        with TensorBytes() as eager_form:  # under the dispatch mode the eager form runs
            call()
        peak, method = peak_memory(call, device="cpu")
    assert method == CPU_ALLOCATOR_METHOD and q.nbytes <= peak < 0.9 * eager_form.peak  # 20.2 vs 24.4 MiB


def test_where_the_profiler_gives_no_allocation_events_the_eager_form_s_count_is_kept_and_said(monkeypatch):
    monkeypatch.setattr(measure, "allocator_peak", lambda fn: None)
    x = torch.arange(4.0)
    box = {}
    _, method = peak_memory(lambda: box.update(out=compile_kernel(marked, dynamic=False)(x)), device="cpu")
    assert method == CPU_EAGER_PATH_METHOD and torch.equal(box["out"], x - 1)


def test_meta_tensors_run_the_eager_form_so_flops_can_be_counted():
    fn = compile_kernel(lambda a, b: a @ b, dynamic=False)
    a, b = torch.empty(3, 5, device="meta"), torch.empty(5, 7, device="meta")
    assert fn(a, b).shape == (3, 7)
    assert count_flops(lambda: fn(a, b)) == 2 * 3 * 5 * 7


def test_verify_checks_the_compiled_output_not_the_one_the_counter_saw():
    x = torch.arange(4.0)
    case = next(c for c in CASES if c.label == "linear")
    fn = compile_kernel(marked, dynamic=False)
    expects_compiled = Candidate(case, CORE, lambda: fn(x), lambda out: relative_error(out, x + 1))
    expects_eager = Candidate(case, CORE, lambda: fn(x), lambda out: relative_error(out, x - 1))
    cfg = PerfConfig()
    verify(expects_compiled, cfg)
    verify(expects_eager, cfg)
    assert expects_compiled.row["verified"] and expects_compiled.row["mem_method"] == CPU_ALLOCATOR_METHOD
    assert not expects_eager.row["verified"] and expects_eager.status.startswith("mismatch")


@pytest.mark.parametrize("own_limit", [True, False], ids=["torch.compile's limit", "dynamo's, older torch"])
def test_past_the_recompile_limit_it_fails_rather_than_run_eager(own_limit, monkeypatch):
    if own_limit and not compiled.OWN_LIMIT:
        pytest.skip(f"torch.compile takes no recompile_limit in torch {torch.__version__}")
    torch._dynamo.reset()  # dynamo keeps graphs per code object: the other case's lambda is this one
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 1)
    monkeypatch.setattr(compiled, "OWN_LIMIT", own_limit and compiled.OWN_LIMIT)
    config, (limit, fail) = torch._dynamo.config, compiled.dynamo_limit_settings()
    # dynamo's settings are changed through its own patch, which restores them: monkeypatch's undo
    # deletes an attribute it did not find in the module's __dict__ (pytest 9.2), and a deleted
    # dynamo setting stays hidden for the rest of the process
    # (dynamo's limit is only ever raised to RECOMPILE_LIMIT: it starts below it)
    with config.patch({limit: 0, fail: False} if not own_limit else {}):
        fn = compile_kernel(lambda x: x * 2, dynamic=False)  # a new function: no graphs yet
        fn(torch.ones(2))
        with pytest.raises(FailOnRecompileLimitHit):
            fn(torch.ones(3))  # a second shape, static: a second graph
        if not own_limit:
            assert (getattr(config, limit), getattr(config, fail)) == (1, True)


def test_on_older_torch_dynamos_limit_is_raised_to_ours_never_lowered(monkeypatch):
    monkeypatch.setattr(compiled, "OWN_LIMIT", False)
    config, (limit, fail) = torch._dynamo.config, compiled.dynamo_limit_settings()
    with config.patch({limit: compiled.RECOMPILE_LIMIT + 100, fail: getattr(config, fail)}):  # a user's own, higher
        compile_kernel(lambda x: x * 4, dynamic=False)
        assert getattr(config, limit) == compiled.RECOMPILE_LIMIT + 100


def test_forgetting_the_compiled_graphs_frees_the_recompile_limit(monkeypatch):
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 1)
    fn = compile_kernel(lambda x: x * 3, dynamic=False)
    fn(torch.ones(2))
    compiled.forget_compiled()  # what bench run does before each cell
    assert torch.equal(fn(torch.ones(3)), torch.full((3,), 3.0))  # a second shape, yet no limit hit


def test_every_bench_run_cell_starts_without_compiled_graphs(tmp_path, bench, monkeypatch):
    from attnbench.runner import execute

    forgotten = []
    monkeypatch.setattr(execute, "forget_compiled", lambda: forgotten.append(1))
    code = bench("run", "--profile", "smoke", "--variants", "linear", "--tasks", "copy,distance", "--kinds",
                 "accuracy", "--device", "cpu", "--out", tmp_path / "run", "--quiet")
    assert code == 0 and len(forgotten) == len(read_records(tmp_path / "run")) == 2


def test_a_graph_break_is_an_error_not_a_partly_eager_kernel():
    def breaks(x):
        print("a graph break")  # noqa: T201  (dynamo cannot trace print)
        return x + 1

    with pytest.raises(Exception, match="(?i)graph break|fullgraph|unsupported"):
        compile_kernel(breaks, dynamic=False)(torch.ones(2))


def test_the_compiled_causal_form_compiles_at_most_three_graphs_a_sequence_length():
    """The step is compiled static and guards on strides, and a segment's slices keep the whole
    sequence's: each new n compiles its first step (nothing carried), its middle ones and its ragged
    last one. Copying each segment's inputs to contiguous tensors would share the first two across
    lengths, but took 1.04-1.08x the time a call (scratch, 2 threads, n = 512-16384), so they stay
    slices; `bench run` forgets the graphs before each cell (`compiled.forget_compiled`), and a
    process past RECOMPILE_LIMIT graphs fails rather than runs eager."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    graphs = []
    with torch.inference_mode():
        for n in (600, 1000, 1300, 1536):
            q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
            causal_linear_attention(q, k, v, fused=True)
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs == [3, 6, 9, 11]  # 256-position steps; 1536 = 6 x 256 has no ragged last one


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_a_compiled_linear_layer_equals_the_eager_one_with_gradients(causal):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 37, 32, generator=gen)
    mask = torch.zeros(2, 37, dtype=torch.bool)
    mask[1, -9:] = True
    outs, grads = [], []
    for kernel in ("eager", "compiled"):
        torch.manual_seed(0)
        layer = build_variant("linear", d_model=32, n_heads=4, chunk_size=8, kernel=kernel)
        xi = x.clone().requires_grad_()
        out, _ = layer(xi, key_padding_mask=mask, causal=causal)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for eager, fused in zip(*grads):
        assert torch.allclose(eager, fused, rtol=1e-4, atol=1e-5)


def test_without_a_compiler_the_layer_is_refused_in_one_line():
    with inductor_config.patch(NO_COMPILER):
        with pytest.raises(UnsupportedError, match="linear: kernel=compiled needs torch.compile: no C"):
            build_variant("linear", d_model=32, n_heads=4, kernel="compiled")
        build_variant("linear", d_model=32, n_heads=4)  # eager needs none


def test_without_a_compiler_bench_check_is_one_failed_build_row(bench_output):
    with inductor_config.patch(NO_COMPILER):
        code, out, _ = bench_output("check", "--variants", "linear(kernel=compiled)")
        results = run_checks("linear", {"kernel": "compiled"})
    assert [(r.check, r.status) for r in results] == [("build", "FAIL")]
    assert "kernel=compiled needs torch.compile: no C++ compiler" in results[0].detail
    assert code == 1 and "build" in out and "1 of 1 check failed" in out


def test_without_a_compiler_bench_perf_marks_only_the_compiled_cases_unavailable():
    with inductor_config.patch(NO_COMPILER):
        rows = run_suite(PerfConfig(variants=("linear",), **TINY), log=lambda line: None)
    cores = [r for r in rows if r["variant"] == "linear" and r["impl"] == CORE]
    compiled_rows = [r for r in cores if r["options"] == "kernel=compiled"]
    assert len(compiled_rows) == 2 and len(cores) == 4
    for r in cores:
        if r in compiled_rows:
            assert r["status"].startswith("unavailable: linear: kernel=compiled needs torch.compile")
        else:
            assert r["status"] == "ok"


def test_without_a_compiler_bench_run_records_the_cell_unsupported(tmp_path, bench):
    out = tmp_path / "run"
    with inductor_config.patch(NO_COMPILER):
        code = bench("run", "--profile", "smoke", "--variants", "linear(kernel=compiled),linear", "--tasks", "copy",
                     "--kinds", "accuracy", "--device", "cpu", "--out", out, "--quiet")
    assert code == 0
    records = {r["key"].split("/")[1]: r for r in read_records(out)}
    assert records["linear(kernel=compiled)"]["status"] == "unsupported"
    assert "kernel=compiled needs torch.compile: no C++ compiler" in records["linear(kernel=compiled)"]["message"]
    assert records["linear"]["status"] == "ok"


def test_a_compiled_candidate_is_compiled_before_its_memory_and_time_are_taken(monkeypatch):
    # on CUDA the memory counter is no dispatch mode: without a first call, verify() would clock
    # and count the compile itself
    calls, seen_before = [], []

    def cuda_like_peak_memory(fn, *, device):
        seen_before.append(len(calls))
        fn()
        return 0, CUDA_MEMORY_METHOD

    monkeypatch.setattr(suite, "peak_memory", cuda_like_peak_memory)
    case = next(c for c in CASES if c.compiled)
    x = torch.arange(4.0)
    for is_compiled in (True, False):
        calls.clear()
        verify(Candidate(case, CORE, lambda: calls.append(1) or x, lambda out: 0.0, compiled=is_compiled), PerfConfig())
    assert seen_before == [1, 0]  # one call first for the compiled kernel, none for the others


def test_bench_perf_times_the_compiled_kernels_never_their_eager_form(monkeypatch):
    real = suite.time_call

    def only_compiled(fn, **kwargs):
        before = eager_fallbacks()
        timing = real(fn, **kwargs)
        assert eager_fallbacks() == before, "a timed call ran a compiled kernel's eager form"
        return timing

    monkeypatch.setattr(suite, "time_call", only_compiled)
    rows = run_suite(PerfConfig(variants=("linear",), **TINY), log=lambda line: None)
    fused = [r for r in rows if r["options"] == "kernel=compiled" and r["impl"] in (CORE, LAYER)]
    assert len(fused) == 4 and all(r["status"] == "ok" and r["median_s"] > 0 for r in fused)
    assert all(r["mem_method"] == CPU_ALLOCATOR_METHOD for r in fused)
    memory = [t for t in check_targets(rows)
              if t.name.startswith("linear(") and "kernel=compiled" in t.name and "peak memory" in t.name]
    assert len(memory) == 2 and all(t.status in ("PASS", "FAIL") and "the compiled kernel's" in t.detail for t in memory)
    # without the allocator's events only the eager form was counted: no verdict
    eager_counted = [{**r, "mem_method": CPU_EAGER_PATH_METHOD} if r in fused else r for r in rows]
    memory = [t for t in check_targets(eager_counted)
              if t.name.startswith("linear(") and "kernel=compiled" in t.name and "peak memory" in t.name]
    assert len(memory) == 2 and all(t.status == "n/a" and "saw its eager form" in t.detail for t in memory)
