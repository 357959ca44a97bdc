"""Fused paths by torch.compile: a variant's `kernel=compiled` runs the same functions as its eager
path, each compiled once (lazily, on its first call) by TorchInductor, which fuses their
element-wise work into generated C++ (CPU) or Triton (CUDA) loops.

The eager function stays beside its compiled form, and both are verified against the variant's
naive reference. TorchDynamo cannot trace under a TorchDispatchMode (the CPU memory counter, FLOP
counting) nor needs to for meta tensors (shapes only): there the eager form runs, and
`eager_fallbacks()` counts it, so a measurement can say which path it saw. Compiling takes seconds per graph on CPU (over a minute for a dynamic-shape
graph with a backward, measured on the causal linear step), once per process. Compiling needs a C++ compiler at run time; `require_compiler` says so in one
line where there is none, when the layer is built rather than mid-forward.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from attnbench.errors import UnsupportedError

EAGER, COMPILED = "eager", "compiled"
KERNELS = (EAGER, COMPILED)

F = TypeVar("F", bound=Callable)
RECOMPILE_LIMIT = 64  # graphs per function (torch._dynamo's default is 8): shapes × grad modes
_COMPILED: dict[tuple[Callable, bool | None], Callable] = {}
_fallbacks = 0  # calls of a compiled function that ran its eager form (see the module docstring)


def eager_fallbacks() -> int:
    """How many calls of a compiled function have run its eager form so far in this process."""
    return _fallbacks


def compiled(fn: F, *, dynamic: bool | None) -> F:
    """`fn` compiled by torch.compile as one whole graph, made once per process and shared.

    `dynamic`: torch.compile's; None compiles the first shape static and a second one with
    dynamic sizes; False compiles each new shape afresh, up to RECOMPILE_LIMIT graphs. Past that
    limit it fails, as it does on a graph break (`fullgraph=True`), rather than fall back to eager
    silently: what runs as `compiled` is compiled.
    """
    key = (fn, dynamic)
    if key not in _COMPILED:
        graph = torch.compile(fn, dynamic=dynamic, fullgraph=True)

        @functools.wraps(fn)
        def strict(*args):
            if _get_current_dispatch_mode() is not None or any(isinstance(a, Tensor) and a.is_meta for a in args):
                global _fallbacks
                _fallbacks += 1
                return fn(*args)
            config = torch._dynamo.config  # set and restored by hand: `config.patch` costs ~40 µs a call
            saved = config.recompile_limit, config.fail_on_recompile_limit_hit
            config.recompile_limit, config.fail_on_recompile_limit_hit = RECOMPILE_LIMIT, True
            try:
                return graph(*args)
            finally:
                config.recompile_limit, config.fail_on_recompile_limit_hit = saved

        _COMPILED[key] = strict
    return _COMPILED[key]


def compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here, or None when TorchInductor finds a C++
    compiler (its `cpp.cxx` setting: `CXX`, else g++)."""
    try:
        from torch._inductor import cpp_builder
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError as exc:  # a torch build without inductor
        return f"this torch lacks TorchInductor ({exc})"
    try:
        cpp_builder.get_cpp_compiler()
    except InvalidCxxCompiler:
        return "no C++ compiler found (install g++ or clang++, or set CXX)"
    return None


def has_compiler() -> bool:
    """Whether `compiled` kernels can be built here."""
    return compiler_missing() is None


def require_compiler(owner: str) -> None:
    """UnsupportedError, in one line, unless `compiled` kernels can be built here."""
    why = compiler_missing()
    if why is not None:
        raise UnsupportedError(f"{owner} needs torch.compile: {why}; kernel=eager needs none")
