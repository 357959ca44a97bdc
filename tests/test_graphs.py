"""CUDA graph replay of compiled kernels (variants/graphs.py): the plain call wherever a graph is not
safe, and on CUDA the same outputs as the kernel, call after call, each output its own."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from attnbench.variants import graphs
from attnbench.variants.compiled import forget_compiled
from attnbench.variants.graphs import captured, forget_graphs, replayed
from attnbench.variants.linear import causal_linear_attention, global_linear_attention
from attnbench.variants.local_flex import flex_window_attention
from attnbench.variants.reference import full_attention, linear_attention

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _affine(x, y, pair):
    """A kernel with a tensor pair, a constant and two outputs."""
    scale, shift = pair
    return x * scale + y, (x - shift, None)


def test_on_cpu_it_is_the_plain_call_and_captures_nothing():
    before = captured()
    x, y = torch.randn(3), torch.randn(3)
    pair = (torch.tensor(2.0), torch.tensor(1.0))
    out, (diff, none) = replayed(_affine, x, y, pair)
    assert torch.equal(out, x * 2 + y) and torch.equal(diff, x - 1) and none is None
    with torch.inference_mode():
        replayed(_affine, x, y, pair)
    assert captured() == before and not graphs._graphs


def test_a_graph_is_keyed_by_shapes_dtypes_and_constants_and_holds_only_its_constants():
    mask = object()
    args = (torch.zeros(2, 3), (torch.zeros(4), None), mask, 5)
    same = (torch.ones(2, 3), (torch.ones(4), None), mask, 5)
    assert graphs._signature(args) == graphs._signature(same)
    assert graphs._signature(args) != graphs._signature((torch.zeros(2, 4), *args[1:]))
    assert graphs._signature(args) != graphs._signature((*args[:2], object(), 5))
    assert graphs._signature(args) != graphs._signature((*args[:3], 6))
    assert graphs._signature(args) != graphs._signature((torch.zeros(2, 3, dtype=torch.float64), *args[1:]))
    inputs = iter([torch.full((2, 3), 7.0), torch.full((4,), 8.0)])
    rebuilt = graphs._replace(args, inputs)
    assert rebuilt[0][0, 0] == 7 and rebuilt[1][0][0] == 8 and rebuilt[1][1] is None and rebuilt[2:] == (mask, 5)
    assert graphs._constants(args) == [None, mask, 5]  # not the tensors: a graph keeps no caller's input alive


def test_values_are_keyed_by_type_and_value_and_unsupported_containers_are_called_plainly():
    key = graphs._signature
    assert key((True,)) != key((1,)) != key((1.0,))
    assert key((float("nan"),)) == key((float("nan"),))  # a fresh NaN each call still finds its graph
    assert key((torch.float32, torch.device("cuda", 0))) == key((torch.float32, torch.device("cuda", 0)))
    assert graphs._containers_supported((torch.zeros(1), (None, [torch.zeros(1)])))
    assert not graphs._containers_supported(({"q": torch.zeros(1)},))
    point = __import__("collections").namedtuple("Point", "x y")
    assert not graphs._containers_supported((point(torch.zeros(1), None),))
    assert graphs._supported_outputs((torch.zeros(1), (torch.zeros(1), None)))
    assert not graphs._supported_outputs({"out": torch.zeros(1)}) and not graphs._supported_outputs(3)


def test_only_a_plain_tensor_is_copied_into_a_graph():
    import torch.autograd.forward_ad as fwAD

    assert graphs._plain(torch.zeros(2))
    assert not graphs._plain(torch.nn.Parameter(torch.zeros(2)))  # a subclass
    with fwAD.dual_level():
        assert not graphs._plain(fwAD.make_dual(torch.zeros(2), torch.ones(2)))  # its tangent would be lost


def test_forget_compiled_drops_the_graphs_and_the_refusals():
    graphs._graphs[("key",)] = _FakeGraph(_affine, ())
    graphs._refused.add(("refused",))
    forget_compiled()
    assert not graphs._graphs and not graphs._refused


# ------------------------------------------------------------------------------------- on CUDA
@pytest.fixture
def fresh():
    forget_graphs()
    yield
    forget_graphs()


@pytest.mark.gpu
@cuda
def test_replays_give_each_call_its_own_right_output(fresh):
    xs = [torch.randn(64, device="cuda") for _ in range(3)]
    y = torch.randn(64, device="cuda")
    pair = (torch.tensor(2.0, device="cuda"), torch.tensor(1.0, device="cuda"))
    before = captured()
    with torch.inference_mode():
        results = [replayed(_affine, x, y, pair) for x in xs]  # held together: none overwritten
    assert captured() == before + 1  # one shape: one graph, replayed
    for x, (out, (diff, none)) in zip(xs, results):
        torch.testing.assert_close(out, x * 2 + y)
        torch.testing.assert_close(diff, x - 1)
        assert none is None
    with torch.inference_mode():
        replayed(_affine, torch.randn(32, device="cuda"), y[:32], pair)  # another shape
        replayed(_affine, xs[0], y, (pair[0] * 3, pair[1]))  # new values of a tensor argument: no new graph
    assert captured() == before + 2
    with torch.autocast("cuda", dtype=torch.bfloat16):  # no graph: it would keep the mode it was captured in
        replayed(_affine, xs[0], y, pair)
    assert captured() == before + 2
    with torch.no_grad():  # outside inference mode: its own graph (inference tensors cannot be written there)
        torch.testing.assert_close(replayed(_affine, xs[1], y, pair)[0], xs[1] * 2 + y)
    assert captured() == before + 3


@pytest.mark.gpu
@cuda
def test_a_call_that_wants_gradients_is_never_captured(fresh):
    x = torch.randn(8, device="cuda", requires_grad=True)
    before = captured()
    out, _ = replayed(_affine, x, torch.zeros(8, device="cuda"), (torch.tensor(2.0, device="cuda"), torch.tensor(0.0, device="cuda")))
    out.sum().backward()
    assert captured() == before and torch.equal(x.grad, torch.full_like(x, 2.0))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("causal", [False, True])
def test_flex_local_replays_match_the_reference(fresh, causal):
    qkvs = [[torch.randn(1, 4, 512, 64, device="cuda") for _ in range(3)] for _ in range(2)]
    before = captured()
    with torch.inference_mode():
        outs = [flex_window_attention(*qkv, window=64, causal=causal) for qkv in qkvs]
        outs.append(flex_window_attention(*qkvs[0], window=64, causal=causal))
    assert captured() == before + 1
    for qkv, out in zip(qkvs + qkvs[:1], outs):
        ref, _ = full_attention(*qkv, causal=causal, window=64)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_linear_replays_match_the_reference(fresh, causal):
    qkvs = [[torch.randn(2, 4, 300, 32, device="cuda") for _ in range(3)] for _ in range(2)]
    attend = causal_linear_attention if causal else global_linear_attention
    before = captured()
    with torch.inference_mode():
        outs = [attend(*qkv, fused=True) for qkv in qkvs]
    assert captured() == before + 1
    for qkv, out in zip(qkvs, outs):
        ref, _ = linear_attention(*qkv, causal=causal)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.compiler
def test_the_graph_replay_benchmark_rehearses_on_cpu_and_writes_its_csv_and_page(tmp_path, monkeypatch, capsys):
    from attnbench.benchmarks import graph_replay

    monkeypatch.setattr(graph_replay, "CASES", {"linear(kernel=compiled)": ("linear", {"kernel": "compiled"}, False)})
    code = graph_replay.main(["--device", "cpu", "--out", str(tmp_path), "--lengths", "64,128", "--rounds", "2",
                              "--min-run-time", "0.01"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "graph-replay-cpu.csv")
    assert sorted(set(zip(frame.case, frame.call))) == [
        ("linear(kernel=compiled)", "plain"), ("linear(kernel=compiled)", "replayed"), ("sdpa", "plain")]
    assert (frame.rounds == 2).all() and (frame.min_ms <= frame.median_ms).all() and (frame.median_ms <= frame.max_ms).all()
    assert (frame[frame.case == "sdpa"].vs_sdpa == 1.0).all()
    page = (tmp_path / "graph-replay-cpu.md").read_text()
    assert "| linear(kernel=compiled) | replayed | " in page and "÷SDPA n=128" in page
    assert graph_replay.main(["--out", str(tmp_path)]) == 2  # CUDA asked for, none here
    assert "none here (--device cpu rehearses the script)" in capsys.readouterr().err


def test_without_graphs_is_the_plain_call_and_restores_replay():
    assert graphs._enabled
    with pytest.raises(RuntimeError), graphs.without_graphs():
        assert not graphs._enabled
        raise RuntimeError
    assert graphs._enabled


def test_the_benchmark_s_replay_check_catches_a_replay_that_ignores_new_inputs():
    from attnbench.benchmarks.graph_replay import replay_error

    q = torch.randn(16)
    stale: dict = {}
    plain = lambda: q * 2  # noqa: E731
    assert replay_error(plain, lambda: q * 2, (q,)) == 0.0
    assert replay_error(plain, lambda: stale.setdefault("out", q * 2), (q,)) > 0.1  # the first output, replayed


@pytest.mark.gpu
@cuda
def test_under_an_outer_torch_compile_the_kernel_is_traced_not_replayed(fresh):
    q, k, v = (torch.randn(1, 2, 256, 32, device="cuda") for _ in range(3))
    before = captured()
    whole = torch.compile(lambda q, k, v: flex_window_attention(q, k, v, window=32), fullgraph=True)
    with torch.inference_mode():
        out = whole(q, k, v)
    assert captured() == before
    torch.testing.assert_close(out, full_attention(q, k, v, window=32)[0], rtol=1e-4, atol=1e-4)


# ------------------------------------------- replayed()'s bookkeeping, with a stand-in for the graph
class _FakeGraph:
    """Stands for a captured graph on CPU: records its captures, replays by calling the kernel."""

    made: list = []

    def __init__(self, kernel, args):
        self.kernel = kernel
        _FakeGraph.made.append(graphs._signature(args))

    def __call__(self, args):
        return self.kernel(*args)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(graphs, "_replayable", lambda args: True)
    _FakeGraph.made = []
    forget_graphs()
    yield monkeypatch
    forget_graphs()


def test_a_graph_is_captured_once_per_signature_and_the_least_recent_dropped_past_the_limit(stand_in):
    stand_in.setattr(graphs, "_Graph", _FakeGraph)
    stand_in.setattr(graphs, "MAX_GRAPHS", 2)
    before = captured()

    def call(n):
        replayed(_affine, torch.randn(n), torch.randn(n), (torch.tensor(2.0), torch.tensor(1.0)))

    for n in (3, 3, 4, 3, 5):  # 5 drops 4, the least recently used (3 was used after it)
        call(n)
    assert len(_FakeGraph.made) == 3 and captured() == before + 3 and len(graphs._graphs) == 2
    call(5)
    call(3)  # both kept: replayed
    assert len(_FakeGraph.made) == 3
    call(4)  # dropped: captured afresh
    assert len(_FakeGraph.made) == 4


def test_an_uncapturable_call_warns_once_and_runs_plainly_after(stand_in):
    def refuse(kernel, args):
        raise graphs.Uncapturable("RuntimeError: operation not permitted when stream is capturing")

    stand_in.setattr(graphs, "_Graph", refuse)
    x, y = torch.randn(3), torch.randn(3)
    pair = (torch.tensor(2.0), torch.tensor(1.0))
    with pytest.warns(RuntimeWarning, match="_affine: no CUDA graph .*not permitted.*; it runs without one"):
        out, _ = replayed(_affine, x, y, pair)
    torch.testing.assert_close(out, x * 2 + y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # remembered: no second warning, no second try
        torch.testing.assert_close(replayed(_affine, x, y, pair)[0], x * 2 + y)


def test_out_of_memory_while_capturing_is_a_plain_call_warned_once_and_remembered(stand_in):
    tries = []

    def short_of_memory(kernel, args):
        tries.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    stand_in.setattr(graphs, "_Graph", short_of_memory)
    x, y = torch.randn(3), torch.randn(3)
    pair = (torch.tensor(2.0), torch.tensor(1.0))
    with pytest.warns(RuntimeWarning, match="OutOfMemoryError: CUDA out of memory"):
        torch.testing.assert_close(replayed(_affine, x, y, pair)[0], x * 2 + y)
    torch.testing.assert_close(replayed(_affine, x, y, pair)[0], x * 2 + y)
    assert len(tries) == 1 and len(graphs._refused) == 1 and not graphs._graphs  # until the caches are dropped
    forget_graphs()
    with pytest.warns(RuntimeWarning, match="OutOfMemoryError"):  # dropped: tried again
        replayed(_affine, x, y, pair)
    assert len(tries) == 2


def test_a_refused_capture_takes_no_place_among_the_kept_graphs(stand_in):
    stand_in.setattr(graphs, "MAX_GRAPHS", 1)

    def refuse_length_4(kernel, args):
        if args[0].shape == (4,):
            raise graphs.Uncapturable("RuntimeError: not capturable")
        return _FakeGraph(kernel, args)

    stand_in.setattr(graphs, "_Graph", refuse_length_4)
    pair = (torch.tensor(2.0), torch.tensor(1.0))
    replayed(_affine, torch.randn(3), torch.randn(3), pair)
    with pytest.warns(RuntimeWarning, match="not capturable"):
        replayed(_affine, torch.randn(4), torch.randn(4), pair)
    replayed(_affine, torch.randn(3), torch.randn(3), pair)  # still kept: replayed, not captured again
    assert len(_FakeGraph.made) == 1 and len(graphs._graphs) == 1 and len(graphs._refused) == 1


class _FakeCapture:
    """A CUDAGraph's capture_begin / capture_end, and the stream calls around them, on CPU."""

    capturing = False

    def __init__(self, begin_raises=None):
        self.begin_raises, self.ended = begin_raises, 0

    def capture_begin(self):
        _FakeCapture.capturing = True
        if self.begin_raises:
            raise self.begin_raises  # a signal handled just as the begin returns

    def capture_end(self):
        _FakeCapture.capturing = False
        self.ended += 1


@pytest.fixture
def fake_streams(monkeypatch):
    import contextlib

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: _FakeCapture.capturing)
    _FakeCapture.capturing = False


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), __import__("attnbench.runner.execute",
                                                                       fromlist=["CellTimeout"]).CellTimeout()])
def test_a_capture_interrupted_by_a_timeout_or_ctrl_c_is_ended_before_it_re_raises(fake_streams, interrupt):
    def kernel(x):
        raise interrupt

    graph = _FakeCapture()
    with pytest.raises(type(interrupt)):
        graphs._capture(graph, kernel, (torch.zeros(1),), torch.device("cpu"))
    assert graph.ended == 1 and not _FakeCapture.capturing
    graph = _FakeCapture(begin_raises=interrupt)  # the interrupt lands between the begin and the try's body
    with pytest.raises(type(interrupt)):
        graphs._capture(graph, lambda x: x, (torch.zeros(1),), torch.device("cpu"))
    assert graph.ended == 1 and not _FakeCapture.capturing


def test_a_kernel_failing_inside_the_capture_is_uncapturable_with_its_own_message(fake_streams):
    def kernel(x):
        raise RuntimeError("operation not permitted when stream is capturing\nmore lines")

    graph = _FakeCapture()
    with pytest.raises(graphs.Uncapturable, match="^RuntimeError: operation not permitted when stream is capturing$"):
        graphs._capture(graph, kernel, (torch.zeros(1),), torch.device("cpu"))
    assert graph.ended == 1
    with pytest.raises(graphs.Uncapturable, match="returns dict"):
        graphs._capture(_FakeCapture(), lambda x: {"out": x}, (torch.zeros(1),), torch.device("cpu"))
