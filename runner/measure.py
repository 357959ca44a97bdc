"""Efficiency measurement: wall time, peak memory and FLOPs of a layer or of one training step.

What each number means
----------------------
time (`Timing`)
    `torch.utils.benchmark.Timer.blocked_autorange`: after `warmup` untimed calls, the callable runs
    in blocks of `number_per_run` calls until `min_run_time` seconds have been spent; each block is
    one measurement of the mean time per call. `median_s` and `iqr_s` are the median and the
    interquartile range of those per-call times, `runs` the number of measurements (blocks).
    The Timer runs with `num_threads=torch.get_num_threads()`, the thread count fixed by the
    caller (and recorded as `threads` in every result). On CUDA every measurement is bracketed by
    device synchronisation (the Timer synchronises the accelerator; the warm-up calls are
    synchronised here), so the time is device time, not launch time.

peak memory (`peak_memory`, bytes above the baseline at the start of the callable)
    CUDA, method "cuda.max_memory_allocated": synchronise, reset the peak statistics, take
    `memory_allocated()` as the baseline, run, synchronise, report `max_memory_allocated()` minus
    the baseline. It covers every allocation of the caching allocator on that device (tensors and
    the kernels' workspaces) but not the allocator's cached-but-free blocks.

    CPU (and any other device), method "tensor-bytes": a `TorchDispatchMode` sees the outputs of
    every aten op that runs inside the callable, forward and backward alike (the autograd engine
    dispatches its ops through the mode, gradient accumulation into `.grad` included). Every new
    storage an op returns is counted with its `nbytes` until the storage is freed (a
    `weakref.finalize` on it), and the peak of the live total is reported. So it includes
    - every tensor allocated by torch ops during the callable: activations, the ones autograd saves
      for backward, gradients (of inputs and parameters, `.grad` included), outputs, temporaries;
    and it excludes
    - tensors created before the callable (freeing one of them inside does not lower the number),
      and views and in-place results of them (they allocate nothing);
    - scratch memory a kernel allocates internally and never returns (e.g. the per-thread blocks
      of the fused CPU `scaled_dot_product_attention`, packed matmul buffers);
    - Python objects, allocator overhead and fragmentation, and memory not made by torch ops
      (`torch.from_numpy`).
    It is a deterministic byte count, independent of the allocator and of other processes, which
    is what makes "memory vs length" slopes comparable between variants on a CPU. It is not the
    process's RSS: glibc's heap can fragment far beyond it (additive attention's fwd+bwd at n=1024,
    d_model=256 counts 58 MB here but peaks at 2.2 GB RSS, 0.39 GB with MALLOC_MMAP_THRESHOLD_=131072).
    The two methods differ on one more point: freeing a tensor made before the callable lowers
    the CUDA number (it is net of frees) but not this one.

    CPU, method "cpu-allocator events (compiled kernel)": where the callable ran a compiled
    kernel, the dispatch mode saw only its eager form (TorchDynamo cannot run under it), so the
    callable runs once more under torch's profiler with `profile_memory=True` (`allocator_peak`).
    Each allocation and free through torch's CPU allocator is then an event with its address and
    size; the peak of the live total of the blocks allocated during the call is reported (a free
    of a block made before it lowers nothing, as with "tensor-bytes"). So it includes the compiled
    code's own buffers and, unlike "tensor-bytes", what kernels allocate through torch's allocator
    without returning it (SDPA's scratch: 5.19 against 4.00 MiB at b=1, h=8, n=2048, d=64) and
    wrapped Python scalars (bytes); on the eager linear and local kernels at n = 2048 and 8192 the
    two methods agree to 0.01 MiB. It excludes what a compiled kernel allocates outside torch's
    allocator (a C++ kernel's stack or `std::vector` scratch). Where a profiler is already running
    it is not used (a second one would end that session): the eager form's count stays. torch's
    allocator logs a warning line on stderr from C++ (`[W… CPUAllocator.cpp:…] Memory block of
    unknown size was allocated before the profiling started…`, once and then one in a thousand)
    whenever a block made before profiling is freed while profiling, as a step that drops the last
    call's output or gradients does. That free is expected here, so the profiled call's stderr
    (fd 2) is held in a temporary file and written out after it without that line; any other line
    still comes out, only later (and a crash inside that one call would lose them).

FLOPs (`count_flops`)
    `torch.utils.flop_counter.FlopCounterMode`: the matmul-class ops (mm, bmm, addmm, convolution,
    fused attention), forward and backward, 2 FLOPs per multiply-add; elementwise ops (softmax, exp,
    tanh) count zero, and a causal mask does not halve the count of a fused attention. The ops
    torch's table lacks are added, each counted as the products it computes: the fused CPU attention
    kernel (with its CUDA siblings' formula), the in-place and batch-summing matmuls (`addmm_`,
    `baddbmm_`, `addbmm`, `addbmm_`: torch 2.13 counts `baddbmm` and `baddbmm(out=)` but not
    `x.baddbmm_(…)`), and the matrix-vector and vector products (`mv`, `addmv`, `dot`, `vdot`: what
    `@` runs on a vector; their backward's outer products run as element-wise `mul`s and count
    zero). `flops_per_s` is FLOPs over the median time; `peak_fraction` is that over the machine's
    measured matmul rate (`matmul_peak`: a square matmul of the same dtype under the precision
    settings in force, e.g. TF32 on CUDA where enabled).

Memory and FLOPs are measured in separate calls from the timing: both dispatch modes slow the
callable down. Out-of-memory errors propagate; `is_oom` tells the runner they were one.

Verification (`measure_attention`, before anything is timed)
    Where the layer has a naive reference (`reference_forward`), its output and gradients (of x
    and of the parameters, against a random probe), and its output in inference mode (the path the
    forward timing runs), are compared with that reference, computed in fp32 on a copy of the
    layer, once at a small shape (b = 1, n = min(seq_len, 300); the same layer, device, dtype and
    causal flag), within `TOLERANCE` for the dtype (max|Δ| / max|ref|). Then one forward
    (inference mode) and one forward+backward at the timed shape (they are the timings' warm-up
    calls) must give an output of the input's shape, a finite output and input gradient, and the
    same output as each other within that tolerance: a layer that goes another way without
    gradients at long n (linear's segments, a replayed CUDA graph) is held to the path the
    reference checked. A failure raises `VerificationError` with one line, e.g. "output differs from
    the naive reference: max rel err 3.1e-01 > 1e-04 at n=300 (float32)", and nothing is timed.
    Compiled kernels run eagerly for the comparison with the reference (`_compiling_nothing`); at
    the timed shape their compiled code is checked for finiteness and the two paths' agreement.
    What this cannot see: a layer wrong in both paths alike only past n = 300 (the reference's
    memory grows as n², additive's as n²·d); `bench perf` checks its built-in kernels at every
    timed length on sampled query rows (benchmarks/references.py).

Forward only
    A layer that has no backward on this device (it raises `NoBackwardError` where a gradient is
    wanted: FlexAttention on a CPU) is verified on its output alone and timed forward only: its
    result's `fwd_bwd`, `peak_bytes_fwd_bwd` and the other fwd+bwd numbers are None, and
    `no_backward` holds the layer's reason.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
import tempfile
import threading
import weakref
from dataclasses import asdict, dataclass
from typing import Callable, TypeVar

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from attnbench.errors import NoBackwardError
from attnbench.variants.base import build_variant, has_reference, is_pair, returned
from attnbench.variants.caches import forget_caches
from attnbench.variants.compiled import eager_fallbacks

__all__ = [
    "TensorBytes",
    "Timing",
    "VerificationError",
    "count_flops",
    "is_oom",
    "matmul_peak",
    "measure_attention",
    "measure_step",
    "peak_memory",
    "sdpa_kernels",
    "time_call",
    "verify_attention",
]

CUDA_MEMORY_METHOD = "cuda.max_memory_allocated"
CPU_MEMORY_METHOD = "tensor-bytes"
# a compiled kernel's own allocations, which the dispatch mode cannot see (see the module docstring)
CPU_ALLOCATOR_METHOD = "cpu-allocator events (compiled kernel)"
# the counted call ran a compiled kernel's eager form (variants/compiled.py), and this torch's
# profiler gave no allocation events: its memory, not the compiled code's
CPU_EAGER_PATH_METHOD = "tensor-bytes (eager path of a compiled kernel)"
# what torch's CPU allocator logs (from C++, on stderr) when a block made before memory profiling
# started is freed while profiling: expected of `allocator_peak`, which keeps it off stderr
UNKNOWN_BLOCK_WARNING = b"Memory block of unknown size was allocated before the profiling started"
MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}  # square matmul edge for `matmul_peak`
OOM_MARKERS = ("out of memory", "can't allocate memory", "defaultcpuallocator")
# scaled_dot_product_attention's kernels, by the ATen op the profiler records for each
SDPA_KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (overrideable)",
    "aten::_scaled_dot_product_attention_math": "math",  # the unfused fallback
}
MATH_KERNEL = "math"
# the shape at which a layer is compared with its reference: past the blocks of local's default
# window (128 positions a block, full attention when the window covers n) and several of linear's
# causal chunks (32 in inference on CPU, else 64), so the paths timed at long n are the ones
# compared (though not linear's causal steps carrying a state from one segment to the next: 512
# positions in eager inference on CPU, 2048 with gradients; tests/test_reference.py and `bench
# perf`, which checks every timed length, compare those); small enough for the naive references
# (additive's (b, n, n, d) block at n = 300, d = 512: 184 MB)
VERIFY_BATCH, VERIFY_MAX_N = 1, 300
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}  # max|Δ| / max|ref|
R = TypeVar("R")


def _is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def _sync(device: str | torch.device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


# ------------------------------------------------------------------------------------ time
@dataclass(frozen=True)
class Timing:
    """Median and interquartile range of the time per call, over `runs` measurements."""

    median_s: float
    iqr_s: float
    runs: int

    def to_dict(self) -> dict:
        """The fields as a plain dict (for a results record)."""
        return asdict(self)


def time_call(
    fn: Callable[[], object], *, device: str, min_run_time: float = 0.2, warmup: int = 1
) -> Timing:
    """Time `fn()` with `torch.utils.benchmark` after `warmup` synchronised calls."""
    # imported here: torch.utils.benchmark imports cpp_extension, which logs a warning line on
    # stderr where a CUDA build of torch finds no CUDA runtime; commands that time nothing stay quiet
    from torch.utils import benchmark

    for _ in range(warmup):
        fn()
    _sync(device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(median_s=measurement.median, iqr_s=measurement.iqr, runs=len(measurement.times))


# ---------------------------------------------------------------------------------- memory
class TensorBytes(TorchDispatchMode):
    """Live and peak bytes of the storages that torch ops create while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}  # storage identity (StorageImpl address) → counted nbytes
        self._finalizers: list[weakref.finalize] = []
        self._lock = threading.RLock()  # a finalizer may fire on an autograd thread

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten.lift_fresh.default:
            inputs = set()  # torch.tensor(data): the input was made outside the mode, but is new
        else:
            inputs = {_storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._record(t, inputs)
        return out

    def _record(self, t: torch.Tensor, inputs: set) -> None:
        if t.device.type == "meta":
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
            return
        key, nbytes = storage._cdata, storage.nbytes()
        with self._lock:
            if key in self._sizes:  # seen before: only a resize (`out=`, `resize_`) changes it
                self._grow(key, nbytes)
            elif key not in inputs:  # a new allocation (views and in-place results alias an input)
                self._sizes[key] = 0
                self._grow(key, nbytes)
                self._finalizers.append(weakref.finalize(storage, self._free, key))

    def _grow(self, key: int, nbytes: int) -> None:
        self.live += nbytes - self._sizes[key]
        self._sizes[key] = nbytes
        self.peak = max(self.peak, self.live)

    def _free(self, key: int) -> None:
        with self._lock:
            self.live -= self._sizes.pop(key, 0)

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for finalizer in self._finalizers:  # storages still alive no longer report here
                finalizer.detach()
            self._finalizers.clear()


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return None


def peak_memory(fn: Callable[[], object], *, device: str) -> tuple[int, str]:
    """Peak bytes allocated during `fn()` above the baseline at its start, and the method's name.

    On CPU the counter is a dispatch mode, under which a compiled kernel runs its eager form; `fn`
    is then called a second time, outside it, and the CPU allocator's events count the compiled
    code's own allocations (CPU_ALLOCATOR_METHOD; its last call ran the compiled kernel). Where
    this torch's profiler gives no such events, the eager form's count stays, as
    CPU_EAGER_PATH_METHOD, and the caller must not take `fn`'s output as the compiled kernel's.
    """
    if _is_cuda(device):
        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return max(0, torch.cuda.max_memory_allocated(dev) - base), CUDA_MEMORY_METHOD
    fallbacks = eager_fallbacks()
    with TensorBytes() as mode:
        fn()
    if eager_fallbacks() == fallbacks:
        return mode.peak, CPU_MEMORY_METHOD
    compiled_peak = allocator_peak(fn)
    return (mode.peak, CPU_EAGER_PATH_METHOD) if compiled_peak is None else (compiled_peak, CPU_ALLOCATOR_METHOD)


def allocator_peak(fn: Callable[[], object]) -> int | None:
    """Peak bytes of the blocks that torch's CPU allocator hands out during `fn()` and that are
    still live together, from the allocation and free events of torch's memory profiler
    (`profile_memory=True`). A free counts only for a block allocated during `fn()`. None where
    this torch's profiler does not expose those events, or where a profiler is already running
    (starting a second one would end its session)."""
    try:
        from torch._C._profiler import _EventType

        if torch._C._autograd._profiler_enabled():
            return None
    except (ImportError, AttributeError):
        return None
    with _STDERR_HELD, _stderr_without(UNKNOWN_BLOCK_WARNING), _cpu_profiler(profile_memory=True) as prof:
        fn()
    events = []  # (time, −bytes, address): at one instant allocations (bytes > 0) sort first
    try:
        pending = list(prof.profiler.kineto_results.experimental_event_tree())
        while pending:
            event = pending.pop()
            pending.extend(event.children)
            if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
                events.append((event.start_time_ns, -event.extra_fields.alloc_size, event.extra_fields.ptr))
    except AttributeError:
        return None
    live = peak = 0
    sizes: dict[int, int] = {}  # address → bytes of the blocks allocated during fn() and not yet freed
    for _, minus_bytes, ptr in sorted(events):
        if minus_bytes < 0:
            sizes[ptr] = -minus_bytes
            live += sizes[ptr]
            peak = max(peak, live)
        elif ptr in sizes:
            live -= sizes.pop(ptr)
    return peak


_STDERR_HELD = threading.Lock()  # one thread at a time points fd 2 elsewhere (and profiles)


@contextlib.contextmanager
def _stderr_without(needle: bytes):
    """What is written to fd 2 during the block (by native code too), less the lines containing
    `needle`: held in a temporary file and written out, in order, when the block ends. Where fd 2
    cannot be duplicated or no temporary file made, nothing is held."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr
        yield
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:  # nowhere to hold it
        os.close(saved)
        yield
        return
    _flush(sys.stderr)
    try:  # the swaps of fd 2 are first in their blocks: a cell's SIGALRM (CellTimeout) that lands
        os.dup2(held.fileno(), 2)  # around them cannot leave stderr pointing at the temporary file
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _flush(sys.stderr)  # Python's own buffered text: not the allocator's line, shown as it is
        with held:
            held.seek(0)
            rest = b"".join(line for line in held if needle not in line)
        try:
            while rest:
                rest = rest[os.write(2, rest):]
        except OSError:  # stderr gone: nothing to show them on
            pass


def _flush(stream) -> None:
    with contextlib.suppress(Exception):  # a closed or replaced sys.stderr
        stream.flush()


def _cpu_profiler(**options) -> torch.profiler.profile:
    """torch's profiler of the host's activity (the ATen ops, with `options`), quiet on stderr."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "10")  # else kineto prints its start and stop on stderr
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], **options)


def sdpa_kernels(fn: Callable[[], R]) -> tuple[tuple[str, ...], R]:
    """Which of SDPA's kernels (SDPA_KERNELS: flash, memory-efficient, cuDNN, or the unfused math
    path) `fn()` ran, as torch's profiler records the ATen ops it dispatched, and what it returned.
    Empty when it called no SDPA. A dispatch mode cannot tell: it sees `scaled_dot_product_attention`
    before SDPA picks its kernel."""
    with _cpu_profiler() as prof:
        result = fn()
    seen = {event.name for event in prof.events()}
    return tuple(sorted(label for op, label in SDPA_KERNELS.items() if op in seen)), result


# ----------------------------------------------------------------------------------- FLOPs
def _fused_cpu_attention_formulas() -> dict:
    """Flop formulas for the fused CPU attention ops that torch's flop table does not list."""
    aten = torch.ops.aten
    formulas = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
        )
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(
                grad_out, q, k, v
            )
        )
    return formulas


def _missing_matmul_formulas() -> dict:
    """Flop formulas for the matmul-class ops torch's flop table lacks: its in-place and
    batch-summing twins, 2·(b·)m·k·n, and the matrix-vector and vector-vector products (`mv`,
    `addmv`, `dot`, `vdot`: what `@` runs on a vector), 2·m·k and 2·k."""
    aten = torch.ops.aten
    products = lambda self, a, b, *args, out_shape=None, **kwargs: 2 * math.prod(a) * b[-1]  # noqa: E731
    vector = lambda a, b, *args, out_shape=None, **kwargs: 2 * math.prod(a)  # noqa: E731
    added = lambda self, a, b, *args, out_shape=None, **kwargs: 2 * math.prod(a)  # noqa: E731
    return {
        **{op: products for op in (aten.addmm_, aten.baddbmm_, aten.addbmm, aten.addbmm_)},
        **{op: vector for op in (aten.mv, aten.dot, aten.vdot)},
        **{op: added for op in (aten.addmv, aten.addmv_)},
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmul-class ops `fn()` runs (forward and backward), per FlopCounterMode."""
    formulas = {**_fused_cpu_attention_formulas(), **_missing_matmul_formulas()}
    with FlopCounterMode(display=False, custom_mapping=formulas) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(
    *, device: str, dtype: torch.dtype = torch.float32, size: int | None = None, min_run_time: float = 0.3
) -> float:
    """Measured FLOP/s of a square matmul on `device`, the fastest of PEAK_TIMINGS timings (cached
    per device, dtype and thread count)."""
    if size is None:
        size = MATMUL_SIZE["cuda" if _is_cuda(device) else "cpu"]
    return _matmul_peak(str(device), dtype, torch.get_num_threads(), size, min_run_time)


# timings of the square matmul whose fastest is the peak: the most the machine sustains. One 0.3 s
# timing as a run starts read 155-192 GFLOP/s on this project's 2-core VM (the first of a process
# low), the best of three 185-197
PEAK_TIMINGS = 3


@functools.cache
def _matmul_peak(device: str, dtype: torch.dtype, threads: int, size: int, min_run_time: float) -> float:
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device, dtype) for _ in range(2))
    timings = [time_call(lambda: a @ b, device=device, min_run_time=min_run_time, warmup=2)
               for _ in range(PEAK_TIMINGS)]
    return 2 * size**3 / min(t.median_s for t in timings)


# ------------------------------------------------------------------------------------- OOM
def is_oom(exc: BaseException) -> bool:
    """Whether `exc` reports an allocation failure (CUDA or host) rather than a bug."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        message = str(exc).lower()
        return any(marker in message for marker in OOM_MARKERS)
    return False


# ---------------------------------------------------------------------------- whole cells
def _rates(flops: int, timing: Timing, peak_flops: float | None) -> tuple[float, float | None]:
    rate = flops / timing.median_s if timing.median_s > 0 else 0.0
    return rate, (rate / peak_flops if peak_flops else None)


def measure_step(
    step: Callable[[], object], *, device: str, min_run_time: float = 0.2, peak_flops: float | None = None
) -> dict:
    """Time, peak memory and FLOPs of one call of `step` (e.g. a whole training step)."""
    timing = time_call(step, device=device, min_run_time=min_run_time)
    peak_bytes, method = peak_memory(step, device=device)
    flops = count_flops(step)
    rate, fraction = _rates(flops, timing, peak_flops)
    return {
        "time": timing.to_dict(),
        "peak_bytes": peak_bytes,
        "mem_method": method,
        "flops": flops,
        "flops_per_s": rate,
        "peak_fraction": fraction,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }


def relative_error(got: Tensor, want: Tensor) -> float:
    """max|got − want| / max|want|, in fp32 (inf on a shape mismatch or non-finite output)."""
    if got.shape != want.shape:
        return math.inf
    got, want = got.float(), want.float()
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    return err if math.isfinite(err) else math.inf


class VerificationError(Exception):
    """The layer to be measured gave a wrong or non-finite result: nothing of it is timed."""


def verify_attention(
    layer: nn.Module,
    *,
    seq_len: int,
    d_model: int,
    device: str,
    dtype: torch.dtype,
    causal: bool = False,
    seed: int = 0,
) -> float | None:
    """Compare `layer`'s output and gradients (x and parameters), and its output without gradients
    (the inference path that the forward timing runs, which may be another: segments, a replayed
    graph), with its naive fp32 reference at b = 1, n = min(seq_len, 300); raise VerificationError
    if they differ beyond the dtype's tolerance. Returns the worst relative error, or None where
    nothing is compared: the layer has no reference (no `reference_forward`, or a ProjectedAttention without its own `reference_core`),
    or it is a compiled kernel on a torch without the force_eager stance (< 2.6), where comparing
    would compile a graph for a shape that is not timed and change the graph that is."""
    if not has_reference(layer) or (_compiled(layer) and not hasattr(torch.compiler, "set_stance")):
        return None
    n = min(seq_len, VERIFY_MAX_N)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(VERIFY_BATCH, n, d_model, generator=gen)
    probe = torch.randn(VERIFY_BATCH, n, d_model, generator=gen).to(device)
    fp32 = layer if dtype == torch.float32 else copy.deepcopy(layer).float()
    drawn = functools.partial(_same_draws, device, seed)  # each call from one random state: dropout draws alike
    with _compiling_nothing():
        inference = drawn(lambda: _output(layer, x.to(device, dtype), causal, n))
        try:
            got = drawn(lambda: _output_and_grads(layer, layer, x.to(device, dtype), probe, causal, n))
        except NoBackwardError:  # forward only (module docstring): its output is what can be compared
            got = ()
        want = drawn(lambda: _output_and_grads(fp32, fp32.reference_forward, x.to(device), probe, causal, n,
                                               "the naive reference's "))
    worst = 0.0
    names = ("output", "input gradient", "parameter gradients")[:len(got)]  # as many as the layer has
    plain = "output without gradients" if got else "output"  # a forward-only layer has that one alone
    compared = zip((*names, plain), (*got, inference), (*want[:len(got)], want[0]))
    for what, fast, ref in compared:
        worst = max(worst, _within(fast, ref, dtype, f"{what} differs from the naive reference", n))
    return worst


def _within(got: Tensor, want: Tensor, dtype: torch.dtype, what: str, n: int) -> float:
    """`relative_error(got, want)`; VerificationError ("WHAT: max rel err 3.1e-01 > 1e-04 at n=300
    (float32)") where it exceeds the dtype's `TOLERANCE`."""
    err, tol = relative_error(got, want), TOLERANCE[dtype]
    if not err <= tol:
        raise VerificationError(f"{what}: max rel err {err:.1e} > {tol:.0e} at n={n} ({str(dtype).removeprefix('torch.')})")
    return err


def _compiled(layer: nn.Module) -> bool:
    from attnbench.variants.compiled import COMPILED

    return getattr(layer, "options", {}).get("kernel") == COMPILED


def _compiling_nothing() -> contextlib.AbstractContextManager:
    """torch.compile'd functions run eagerly in this context (torch >= 2.6: the "force_eager"
    stance): a compiled kernel compiles no graph for a shape that is not timed (seconds each), and
    one compiled with `dynamic=None` keeps a static graph for the timed shape."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


def _output_and_grads(
    layer: nn.Module, forward: Callable, x: Tensor, probe: Tensor, causal: bool, n: int, whose: str = ""
) -> tuple[Tensor, Tensor, Tensor]:
    """(output, x's gradient, the parameters' gradients as one vector) of `forward(x)` under the
    loss sum(output · probe), each checked for shape and finiteness (`whose`: for the messages)."""
    x = x.requires_grad_()
    params = [p for p in layer.parameters() if p.requires_grad]
    out, _ = _pair(forward(x, causal=causal), n, whose)
    _check_output(out, x, n, whose)
    grads = torch.autograd.grad((out.float() * probe).sum(), [x, *params], allow_unused=True)
    _check_finite(f"{whose}input gradient", grads[0], n)
    flat = [(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads[1:], params)]
    return out.detach(), grads[0], torch.cat(flat) if flat else torch.zeros(1, device=x.device)


def _output(layer: nn.Module, x: Tensor, causal: bool, n: int) -> Tensor:
    """`layer(x)`'s output in inference mode, as the forward is timed, checked for shape and finiteness."""
    with torch.inference_mode():
        out, _ = _pair(layer(x, causal=causal), n)
    _check_output(out, x, n)
    return out


def _same_draws(device: str, seed: int, fn: Callable[[], R]) -> R:
    """`fn()` from torch's random state seeded with `seed` (CPU, and `device`'s where CUDA); the
    caller's state is kept."""
    with torch.random.fork_rng(devices=[torch.device(device)] if _is_cuda(device) else []):
        torch.manual_seed(seed)
        return fn()


def _check_same_paths(
    inference: Tensor, out: Tensor, dtype: torch.dtype, n: int, again: Callable[[], Tensor]
) -> None:
    """VerificationError unless the output timed as the forward (inference mode) equals, within the
    dtype's tolerance, the output of the call timed as fwd+bwd at the same shape: a layer may take
    another path without gradients (segments, a replayed graph), and only at the timed length (past
    the reference's n) would the two part. Not where the forward itself is not reproducible (a
    layer drawing from a generator of its own): `again()`, the forward once more, then differs too."""
    if relative_error(inference, out) <= TOLERANCE[dtype] or relative_error(again(), inference) > TOLERANCE[dtype]:
        return  # the same, or a forward that differs from itself
    _within(inference, out, dtype, "output without gradients differs from the output with gradients", n)


def _pair(result: object, n: int, whose: str = "") -> tuple[Tensor, object]:
    """`result` as (out, weights), or a VerificationError naming what the forward returned: a bare
    tensor would unpack along its batch axis, and be reported as an output of the wrong shape."""
    if is_pair(result):
        return result[0], result[1]
    raise VerificationError(f"{whose}forward must return (out, weights|None), got {returned(result)} at n={n}")


def _check_output(out: object, x: Tensor, n: int, whose: str = "") -> None:
    """VerificationError unless `out` is a finite tensor of x's shape (n: the length, for the message)."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise VerificationError(f"{whose}output shape {shape} is not the input's {tuple(x.shape)} at n={n}")
    _check_finite(f"{whose}output", out, n)


def _check_finite(what: str, t: Tensor | None, n: int) -> None:
    """VerificationError if `t` is missing or holds NaN or inf (n: the length, for the message)."""
    if t is None:
        raise VerificationError(f"{what} is missing (the output does not depend on the input) at n={n}")
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise VerificationError(f"{what} has {bad} at n={n}")


def _timed_fields(key: str, timing=None, peak_bytes=None, flops=None, rate=None, fraction=None) -> dict:
    """The numbers `measure_attention` records of one timed call, `key` "fwd" or "fwd_bwd"; all
    None for a call not timed."""
    return {key: timing, f"peak_bytes_{key}": peak_bytes, f"flops_{key}": flops,
            f"flops_per_s_{key}": rate, f"peak_fraction_{key}": fraction}


def measure_attention(
    variant: str,
    options: dict,
    *,
    seq_len: int,
    batch: int = 1,
    d_model: int = 256,
    n_heads: int = 4,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    causal: bool = False,
    min_run_time: float = 0.2,
    seed: int = 0,
    peak_flops: float | None = None,
) -> dict:
    """Forward (inference) and forward+backward time, peak memory and FLOPs of one attention layer,
    verified first (see the module docstring): VerificationError, and nothing timed, if it fails."""
    with torch.random.fork_rng(devices=[]):  # seeded parameters; the caller's RNG is untouched
        torch.manual_seed(seed)
        layer = build_variant(variant, d_model=d_model, n_heads=n_heads, **options)
    layer = layer.to(device=device, dtype=dtype)
    reference_err = verify_attention(
        layer, seq_len=seq_len, d_model=d_model, device=device, dtype=dtype, causal=causal, seed=seed
    )
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, d_model, generator=gen).to(device, dtype).requires_grad_()
    # inference takes x without grad: FlopCounterMode's module hooks fail on a grad-requiring
    # input under inference_mode, and an inference input needs none
    x_inference = x.detach()

    def forward(checked: bool = False):  # checked: the warm-up's, before the timed calls
        with torch.inference_mode():
            result = layer(x_inference, causal=causal)
        return _pair(result, seq_len)[0] if checked else result[0]

    def zero_grad():
        layer.zero_grad(set_to_none=True)
        x.grad = None

    def forward_backward():
        zero_grad()  # fresh gradients each call, nothing accumulates
        out, _ = layer(x, causal=causal)
        out.sum().backward()
        return out

    # the timed shape, once each: finite outputs and input gradient; these are the warm-up calls,
    # each from the same random state, so a layer that draws (dropout) draws alike in both
    drawn = functools.partial(_same_draws, device, seed)
    inference = drawn(functools.partial(forward, True))
    _check_output(inference, x, seq_len)
    timed = {"fwd": forward, "fwd_bwd": forward_backward}
    result: dict = {"reference_rel_err": reference_err}  # None: no naive reference to compare with
    try:
        out = drawn(forward_backward).detach()
        _check_output(out, x, seq_len)
        _check_finite("input gradient", x.grad, seq_len)
        _check_same_paths(inference, out, dtype, seq_len, again=lambda: drawn(forward))
    except NoBackwardError as why:  # forward only (module docstring)
        del timed["fwd_bwd"]
        result.update(_timed_fields("fwd_bwd"), no_backward=str(why))  # each of its numbers None
    zero_grad()
    for key, fn in timed.items():
        timing = time_call(fn, device=device, min_run_time=min_run_time, warmup=0)
        zero_grad()  # the gradients fn makes are counted; none from before are live
        forget_caches()  # built again in the counted call (a CUDA graph, a block mask: variants/caches.py), and counted
        peak_bytes, method = peak_memory(fn, device=device)
        zero_grad()
        flops = count_flops(fn)
        rate, fraction = _rates(flops, timing, peak_flops)
        result.update(_timed_fields(key, timing.to_dict(), peak_bytes, flops, rate, fraction), mem_method=method)
    zero_grad()
    result.update({"threads": torch.get_num_threads(), "device": str(device), "dtype": str(dtype)})
    return result
