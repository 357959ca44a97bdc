"""CUDA graph replay of a compiled kernel's calls that need no gradients.

On CUDA a compiled kernel's call at short lengths costs its host work, not its arithmetic:
TorchDynamo's guards, the compiled graph's wrappers and each Triton launch: FlexAttention's
call took 0.09–0.13 ms on an H200 at every n from 2048 to 16384, while dense SDPA's whole call
at n = 4096 takes 0.079 ms. `replayed(kernel, *args)` captures the
kernel's call once per shape in a CUDA graph (torch.cuda.CUDAGraph) and afterwards replays it:
the arguments are copied into the graph's own input tensors, the graph is launched as one unit,
and its outputs are cloned, so a caller's result is never overwritten by a later call (0.093 →
0.041 ms at n = 4096 on the H200: results/benchmarks/2026-11-28-h200-graph-replay-f8fe909.md).

Only where that is safe and pays: plain CUDA tensors (no subclass, no forward-mode tangent, no
torch.func wrapper: a copy into the graph's inputs would drop them), no gradient wanted (the graph
records no autograd history), no autocast (the graph would keep the mode it was captured in), not
while torch.compile traces or a graph is being captured, and not where a compiled kernel runs its
eager form (a dispatch mode: see variants/compiled.py). Elsewhere it is the plain call. A graph
replays on the stream current at the call; calls from two streams at once would share its inputs.
What a capture fixes beyond the key (TF32 and matmul precision, deterministic algorithms) must
not change between calls: nothing in attnbench changes them.

What a graph holds, it holds until it is dropped (`forget_graphs`, which `variants/caches.py
forget_caches` and so `forget_compiled` call, and at most MAX_GRAPHS graphs, the least recently
used dropped first): a copy of each input, the memory pool its call allocated from, and its
outputs. `bench perf` and `bench run` count that in a kernel's peak memory: they drop the caches
before the call they count, which then captures.

Arguments: tensors (the graph's inputs, keyed by shape, dtype and device), plain tuples and lists
of arguments, values (None, bool, int, float, str, dtype, device: keyed by type and value), and
any other object as a constant of the graph, keyed by its identity and held by it (a cached
FlexAttention block mask). A constant built afresh for each call would capture a new graph each
time: callers graph only calls whose constants are cached. A dict or another container among the
arguments, or outputs other than tensors, None and plain tuples and lists of them: the plain call.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from attnbench.variants.base import wants_grad
from attnbench.variants.caches import register_cache

_enabled = True  # `without_graphs()` turns replay off for a while
MAX_GRAPHS = 16  # captured graphs kept at once (each holds its inputs' copies and its memory pool)
_graphs: OrderedDict[tuple, "_Graph"] = OrderedDict()  # the least recently used first
_refused: set[tuple] = set()  # keys whose capture failed: called plainly until the caches are dropped
_captures = 0  # graphs captured so far in this process
VALUES = (type(None), bool, int, float, str, torch.dtype, torch.device)  # keyed by value, not identity


class Uncapturable(Exception):
    """The kernel's call could not be captured (it still runs, plainly)."""


class _Graph:
    """One captured call: its input tensors (filled before each replay), outputs and constants."""

    def __init__(self, kernel: Callable, args: tuple) -> None:
        device = next(_tensors(args)).device
        with torch.cuda.device(device):  # the capture stream, the side stream: that device's
            self.inputs = [t.clone() for t in _tensors(args)]  # each in its caller's layout
            static_args = _replace(args, iter(self.inputs))
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # a warm-up call off the capture (compiles on first use; lazy inits):
                kernel(*static_args)  # a kernel that fails raises here, as its plain call would
            torch.cuda.current_stream(device).wait_stream(side)
            torch.cuda.synchronize(device)
            self.graph = torch.cuda.CUDAGraph()
            self.outputs = _capture(self.graph, kernel, static_args, device)
        self.device = device
        self.constants = _constants(args)  # what the graph read by address (a block mask): kept alive with it

    def __call__(self, args: tuple) -> Any:
        with torch.cuda.device(self.device):
            for static, t in zip(self.inputs, _tensors(args)):
                static.copy_(t)
            self.graph.replay()
            return _map(lambda t: t.clone(), self.outputs)


def _capture(graph: torch.cuda.CUDAGraph, kernel: Callable, args: tuple, device: torch.device) -> Any:
    """`kernel(*args)` captured into `graph` on a stream of its own; Uncapturable (the capture
    ended, the caller's stream restored) where it fails. Not `torch.cuda.graph`, whose exit leaves
    the capture stream current when ending the capture raises."""
    failure: BaseException | None = None
    outputs = None
    begun = False
    with torch.cuda.stream(torch.cuda.Stream(device)):
        try:
            graph.capture_begin()
            begun = True
            outputs = kernel(*args)
        except BaseException as exc:  # noqa: BLE001  (a cell's timeout, Ctrl-C too: raised once the capture has ended)
            failure = exc
        if begun or torch.cuda.is_current_stream_capturing():  # (a signal may land just after the begin)
            try:
                graph.capture_end()
            except Exception as exc:  # noqa: BLE001  (an invalidated capture: the kernel's error says more)
                failure = failure or exc
    if failure is not None and not isinstance(failure, Exception):
        raise failure
    if failure is not None:
        raise Uncapturable(f"{type(failure).__name__}: {str(failure).splitlines()[0][:160] if str(failure) else ''}") \
            from failure
    if not _supported_outputs(outputs):
        raise Uncapturable(f"returns {type(outputs).__name__}, not tensors in plain tuples or lists")
    return outputs


def replayed(kernel: Callable, *args) -> Any:
    """`kernel(*args)`, by replaying a CUDA graph of it where that is safe (module docstring)."""
    if not _replayable(args):
        return kernel(*args)
    key = (kernel, torch.is_inference_mode_enabled(), _signature(args))
    if key not in _graphs and key not in _refused:
        global _captures
        try:
            try:
                _graphs[key] = _Graph(kernel, args)
            except torch.cuda.OutOfMemoryError as exc:  # the inputs' copies, the warm-up call
                raise Uncapturable(f"OutOfMemoryError: {str(exc).splitlines()[0][:160]}") from exc
            _captures += 1
        except Uncapturable as why:  # remembered until the caches are dropped; the plain call runs below,
            # outside this block, whose traceback would keep the failed capture's copies alive
            warnings.warn(f"{getattr(kernel, '__name__', kernel)}: no CUDA graph ({why}); it runs without one",
                          RuntimeWarning, stacklevel=2)
            _refused.add(key)
        while len(_graphs) > MAX_GRAPHS:  # refusals hold no memory and take no place here
            _graphs.popitem(last=False)
    if key in _refused:
        return kernel(*args)
    _graphs.move_to_end(key)
    return _graphs[key](args)


@contextlib.contextmanager
def without_graphs() -> Iterator[None]:
    """Within it, `replayed` is the plain call (the graphs captured so far are kept): to time or
    profile a kernel's calls as they are without a graph (benchmarks/graph_replay.py)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


@register_cache
def forget_graphs() -> None:
    """Drop every captured graph (and the memory it holds), and forget which captures failed."""
    _graphs.clear()
    _refused.clear()


def captured() -> int:
    """How many graphs have been captured so far in this process."""
    return _captures


def _replayable(args: tuple) -> bool:
    # first what an outer torch.compile can trace: under it the kernel is inlined into that graph
    if not _enabled or torch.compiler.is_compiling() or not _containers_supported(args):
        return False
    tensors = list(_tensors(args))
    if not tensors or any(t.device.type != "cuda" for t in tensors):
        return False
    if torch.cuda.is_current_stream_capturing() or _autocast() or not all(_plain(t) for t in tensors):
        return False
    if wants_grad(*tensors):
        return False
    # under a dispatch mode (the CPU memory counter, FLOP counting) the kernel runs its eager form,
    # and its own call counts that (compiled.runs_eager)
    return _get_current_dispatch_mode() is None


def _plain(t: Tensor) -> bool:
    """A tensor a copy carries whole: not a subclass, a torch.func wrapper or a forward-mode dual."""
    if type(t) is not Tensor:
        return False
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.is_functorch_wrapped_tensor(t):
        return False
    return torch.autograd.forward_ad.unpack_dual(t).tangent is None


def _autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch before 2.4: CUDA's autocast only
        return torch.is_autocast_enabled()


def _containers_supported(args) -> bool:
    return all(type(a) in (tuple, list) and _containers_supported(a) if isinstance(a, (tuple, list, dict)) else True
               for a in args)


def _supported_outputs(value: Any) -> bool:
    if value is None or isinstance(value, Tensor):
        return True
    return type(value) in (tuple, list) and all(_supported_outputs(v) for v in value)


def _tensors(args) -> Iterator[Tensor]:
    for a in args:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (tuple, list)):
            yield from _tensors(a)


def _constants(args) -> list:
    """The arguments that are neither tensors nor tuples or lists of them."""
    out = []
    for a in args:
        if isinstance(a, (tuple, list)):
            out.extend(_constants(a))
        elif not isinstance(a, Tensor):
            out.append(a)
    return out


def _replace(args, inputs) -> tuple:
    """`args` with each tensor replaced by the next of `inputs` (tuples and lists kept)."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(next(inputs))
        elif isinstance(a, (tuple, list)):
            out.append(type(a)(_replace(a, inputs)))
        else:
            out.append(a)
    return tuple(out)


def _signature(args) -> tuple:
    """What a graph is keyed by: each tensor's shape, dtype and device; each value's type and
    value (a float's repr: NaN equals itself there); each other constant's identity."""
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append((tuple(a.shape), a.dtype, a.device))
        elif isinstance(a, (tuple, list)):
            parts.append((type(a).__name__, _signature(a)))
        elif isinstance(a, VALUES):
            parts.append(("value", type(a), repr(a) if isinstance(a, float) else a))
        else:
            parts.append(("object", id(a)))
    return tuple(parts)


def _map(fn: Callable[[Tensor], Tensor], value: Any) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map(fn, v) for v in value)
    return value
