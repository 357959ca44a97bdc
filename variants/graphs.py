"""CUDA graph replay of a compiled kernel's calls that need no gradients.

On CUDA a compiled kernel's call at short lengths costs its host work, not its arithmetic:
TorchDynamo's guards, the compiled graph's wrappers and each Triton launch take about 0.09 ms
on an H200's host, while FlexAttention's band at n = 4096 (window 128) is about a tenth of that
on the GPU, and dense SDPA at the same n takes 0.079 ms. `replayed(kernel, *args)` captures the
kernel's call once per shape in a CUDA graph (torch.cuda.CUDAGraph) and afterwards replays it:
the arguments are copied into the graph's own input tensors, the graph is launched as one unit,
and its outputs are cloned, so a caller's result is never overwritten by a later call.

Only where that is safe and pays: CUDA tensors, no gradient wanted (the graph records no autograd
history), not while torch.compile traces or a graph is being captured, and not where a compiled
kernel runs its eager form (see variants/compiled.py). Elsewhere it is the plain call.

What a graph holds, it holds until it is dropped (`forget_graphs`, which `forget_compiled` calls,
and at most MAX_GRAPHS graphs, the least recently used dropped first): a copy of each input, the
memory pool its call allocated from, and its outputs. `bench perf` counts that in a kernel's peak
memory by measuring the call that captures (variants/compiled.py `forget_compiled` before it).

Arguments: tensors (the graph's inputs, keyed by shape, dtype and device), tuples and lists of
arguments, and anything else as a constant of the graph, keyed by its identity and held by it (a
cached FlexAttention block mask; None). A constant built afresh for each call would capture a new
graph each time: callers graph only calls whose constants are cached.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from attnbench.variants.base import wants_grad

MAX_GRAPHS = 16  # captured graphs kept at once (each holds its inputs' copies and its memory pool)
_graphs: OrderedDict[tuple, "_Graph | None"] = OrderedDict()  # None: capture failed, call plainly
_captures = 0  # graphs captured so far in this process


class _Graph:
    """One captured call: its input tensors (filled before each replay), outputs and constants."""

    def __init__(self, kernel: Callable, args: tuple) -> None:
        self.inputs = [torch.empty_like(t) for t in _tensors(args)]
        for static, t in zip(self.inputs, _tensors(args)):
            static.copy_(t)
        static_args = _replace(args, iter(self.inputs))
        side = torch.cuda.Stream(device=self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # a warm-up call off the capture (compiles on first use; lazy inits)
            kernel(*static_args)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = kernel(*static_args)
        self.constants = _constants(args)  # what the graph read by address (a block mask): kept alive with it

    def __call__(self, args: tuple) -> Any:
        for static, t in zip(self.inputs, _tensors(args)):
            static.copy_(t)
        self.graph.replay()
        return _map(lambda t: t.clone(), self.outputs)


def replayed(kernel: Callable, *args) -> Any:
    """`kernel(*args)`, by replaying a CUDA graph of it where that is safe (module docstring)."""
    tensors = list(_tensors(args))
    if not _replayable(tensors):
        return kernel(*args)
    key = (kernel, torch.is_inference_mode_enabled(), _signature(args))
    if key not in _graphs:
        global _captures
        try:
            _graphs[key] = _Graph(kernel, args)
            _captures += 1
        except Exception as exc:  # noqa: BLE001  (a kernel a graph cannot capture still runs, plainly)
            warnings.warn(f"{getattr(kernel, '__name__', kernel)}: no CUDA graph ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); it runs without one", RuntimeWarning, stacklevel=2)
            _graphs[key] = None
        while len(_graphs) > MAX_GRAPHS:
            _graphs.popitem(last=False)
    _graphs.move_to_end(key)
    graph = _graphs[key]
    return kernel(*args) if graph is None else graph(args)


def forget_graphs() -> None:
    """Drop every captured graph (and the memory it holds)."""
    _graphs.clear()


def captured() -> int:
    """How many graphs have been captured so far in this process."""
    return _captures


def _replayable(tensors: list[Tensor]) -> bool:
    if not tensors or any(t.device.type != "cuda" for t in tensors):
        return False
    if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
        return False
    if wants_grad(*tensors):
        return False
    # under a dispatch mode (the CPU memory counter, FLOP counting) the kernel runs its eager form,
    # and its own call counts that (compiled.runs_eager)
    return _get_current_dispatch_mode() is None


def _tensors(args) -> Any:
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
    """What a graph is keyed by: each tensor's shape, dtype and device; each constant's identity."""
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append((tuple(a.shape), a.dtype, a.device))
        elif isinstance(a, (tuple, list)):
            parts.append((type(a).__name__, _signature(a)))
        elif a is None or isinstance(a, (bool, int, float, str)):
            parts.append(("value", a))
        else:
            parts.append(("object", id(a)))
    return tuple(parts)


def _map(fn: Callable[[Tensor], Tensor], value: Any) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map(fn, v) for v in value)
    return value
