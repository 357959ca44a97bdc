"""Fused paths by torch.compile: a variant's `kernel=compiled` runs the same functions as its eager
path, each compiled once (lazily, on its first call) by TorchInductor, which fuses their
element-wise work into generated C++ (CPU) or Triton (CUDA) loops.

The eager function stays beside its compiled form, and both are verified against the variant's
naive reference. TorchDynamo cannot trace under a TorchDispatchMode (the CPU memory counter, FLOP
counting) and need not for meta tensors (shapes only): there the eager form runs, and
`eager_fallbacks()` counts it, so a measurement can say which path it saw. Compiling takes
seconds per graph on CPU, once per process and shape; a dynamic-shape graph takes far longer
(over a minute for the causal linear step with its backward, in a scratch timing), so kernels
compile static shapes. It needs a C++ compiler at run time: `require_compiler` says so in one
line where there is none, when the layer is built rather than mid-forward.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, TypeVar

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from attnbench.errors import UnsupportedError
from attnbench.options import Option
from attnbench.variants.caches import forget_caches

EAGER, COMPILED = "eager", "compiled"
KERNELS = (EAGER, COMPILED)

F = TypeVar("F", bound=Callable)
RECOMPILE_LIMIT = 64  # graphs per function (torch._dynamo's default is 8): shapes × grad modes × masks
# torch.compile takes its own recompile_limit in torch 2.13; where it does not (the declared range
# starts at 2.5), dynamo's global limit is raised to it instead (see _limited_compile)
OWN_LIMIT = "recompile_limit" in inspect.signature(torch.compile).parameters
_COMPILED: dict[tuple[Callable, bool | None], Callable] = {}
_fallbacks = 0  # calls of a compiled function that ran its eager form (see the module docstring)


def eager_fallbacks() -> int:
    """How many calls of a compiled function have run its eager form so far in this process."""
    return _fallbacks


def compile_kernel(fn: F, *, dynamic: bool | None) -> F:
    """`fn` compiled by torch.compile as one whole graph, made once per process and shared.

    `dynamic`: torch.compile's; None compiles the first shape static and a second one with
    dynamic sizes; False compiles each new shape afresh, up to RECOMPILE_LIMIT graphs. Past that
    limit it fails, as it does on a graph break (`fullgraph=True`), rather than fall back to eager
    silently: what runs as `compiled` is compiled. Traced by an outer torch.compile (a whole
    model), `fn` is inlined into that graph.
    """
    key = (fn, dynamic)
    if key not in _COMPILED:
        graph = _limited_compile(fn, dynamic)

        @functools.wraps(fn)
        def kernel(*args):
            if torch.compiler.is_compiling() or runs_eager(*args):
                return fn(*args)
            return graph(*args)

        _COMPILED[key] = kernel
    return _COMPILED[key]


def _limited_compile(fn: Callable, dynamic: bool | None) -> Callable:
    """torch.compile(fn), whole graph, failing past RECOMPILE_LIMIT graphs.

    Where torch.compile takes no limit of its own (before 2.13), dynamo's process-wide settings
    are changed instead, once: its limit raised to RECOMPILE_LIMIT (never lowered), and a hit
    made a failure rather than a silent eager run, for every compiled function of the process.
    Not set around each call: `config.patch` costs 18 µs a call (8 µs by hand), a large share of
    a CUDA kernel's time at short lengths.
    """
    if OWN_LIMIT:
        return torch.compile(fn, dynamic=dynamic, fullgraph=True, recompile_limit=RECOMPILE_LIMIT)
    config = torch._dynamo.config
    limit, fail = dynamo_limit_settings()
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    setattr(config, fail, True)
    return torch.compile(fn, dynamic=dynamic, fullgraph=True)


def dynamo_limit_settings() -> tuple[str, str]:
    """The names of dynamo's settings for its recompile limit and for failing when it is hit
    (renamed from cache_size_limit / fail_on_cache_limit_hit during the declared torch range)."""
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    fail = "fail_on_recompile_limit_hit" if hasattr(config, "fail_on_recompile_limit_hit") else "fail_on_cache_limit_hit"
    return limit, fail


def runs_eager(*args) -> bool:
    """Whether a compiled kernel called with `args` must run its eager form here: under a
    TorchDispatchMode or on meta tensors (see the module docstring). Counted in `eager_fallbacks()`
    when true, so a caller that runs an eager form of its own (a different algorithm for the same
    maths) asks this first."""
    global _fallbacks
    if _get_current_dispatch_mode() is None and not any(isinstance(a, Tensor) and a.is_meta for a in args):
        return False
    _fallbacks += 1
    return True


def forget_compiled() -> None:
    """Drop every graph compiled so far (`torch._dynamo.reset`; a no-op until a kernel has been
    made), so what runs next compiles its own shapes only: `bench run` calls it before each cell,
    so a cell never depends on the cells before it, nor meets RECOMPILE_LIMIT through them. What
    kernels keep between calls goes too (variants/caches.py: CUDA graphs, block masks)."""
    forget_caches()
    if _COMPILED:
        torch._dynamo.reset()


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


def kernel_option(eager: str, compiled: str) -> Option:
    """The `kernel` option of a variant with a compiled path: `eager` (the default) or `compiled`,
    with what each runs."""
    return Option("kernel", str, EAGER, choices=KERNELS, help=f"eager: {eager}; compiled: {compiled}")


def check_kernel(variant: str, options: dict) -> None:
    """For a layer being built: refuse `kernel=compiled` in one line where torch.compile cannot
    build kernels, rather than fail mid-forward."""
    if options["kernel"] == COMPILED:
        require_compiler(f"{variant}: kernel=compiled")


def require_compiler(owner: str) -> None:
    """UnsupportedError, in one line, unless `compiled` kernels can be built here."""
    why = compiler_missing()
    if why is not None:
        raise UnsupportedError(f"{owner} needs torch.compile: {why}; kernel=eager needs none")
