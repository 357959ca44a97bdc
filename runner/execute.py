"""Run one cell and turn whatever happens into a record: ok | oom | timeout | unsupported | error.

`execute_cell(cell, plan)` never raises for a problem of the cell itself (a variant that raises,
returns NaN or the wrong shape, runs out of memory, or exceeds its time budget): it returns the
record, and the sweep goes on. An efficiency cell verifies its layer before timing it
(`measure_attention`: finite output and input gradient, and the naive reference where the variant
has one); a layer that fails is an `error` with that one line, and nothing of it is timed. The
plan is plain JSON data, so that a worker process can receive it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import shlex
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from attnbench.errors import UnsupportedError
from attnbench.runner.cells import Cell
from attnbench.runner.heap import STEADY_BYTES, pin_mmap_threshold
from attnbench.runner.measure import VerificationError, is_oom, measure_attention, measure_step
from attnbench.runner.model import BenchModel, ModelSize
from attnbench.runner.train import Diverged, SeesTheFuture, TrainSettings, train_and_evaluate
from attnbench.selection import parse_selection
from attnbench.tasks.base import TASKS, build_task
from attnbench.tasks.files import DataChangedError, check_digests
from attnbench.variants.base import VARIANTS, get_variant_spec
from attnbench.variants.check import CAUSAL, CROSS, verify_for_training
from attnbench.variants.compiled import forget_compiled

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class CellTimeout(BaseException):
    """The cell ran past its time budget (a BaseException, so no `except Exception` swallows it)."""


@dataclass(frozen=True)
class Plan:
    """Run-wide settings that every cell of a sweep shares (JSON-able)."""

    size: dict[str, Any]
    train: dict[str, Any]
    efficiency: dict[str, Any]
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1
    max_cell_seconds: float | None = None
    cross: str | None = None
    plugins: tuple[str, ...] = field(default_factory=tuple)
    peak_flops: float | None = None
    data: dict[str, str] = field(default_factory=dict)  # data file → sha256, as the run recorded them

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{**data, "plugins": tuple(data.get("plugins", ()))})


def execute_cell(cell: Cell, plan: Plan, *, alarm: bool = True) -> dict[str, Any]:
    """The record of `cell`: its identity, status, message, result and wall seconds."""
    started = time.perf_counter()
    status, message, result = "ok", "", None
    budget = cell_budget(cell, plan)
    forget_compiled()  # compiled kernels start afresh: a cell's record never depends on the cells before it
    import_what_cells_import_lazily()
    checking, checks = cell.kind == "accuracy", checks_budget(cell, plan)
    try:
        if checking:  # under their own limit: see checks_budget
            with _time_limit(checks if alarm else None):
                _verify_layers(cell, plan)
        checking = False
        with _time_limit(budget if alarm else None):
            result = _run(cell, plan)
        if result.get("no_backward"):
            message = f"forward only: {result['no_backward']}"
    except UnsupportedError as exc:
        status, message = "unsupported", str(exc)
    except CellTimeout:
        if checking:
            status, message = "timeout", f"its layer checks took over {checks:g} s; not trained"
        else:
            status, message = "timeout", f"over the {budget:g} s cell budget"
    except (Diverged, SeesTheFuture, VerificationError, DataChangedError) as exc:
        status, message = "error", str(exc)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — one bad cell never ends the sweep (nor a sys.exit in it)
        if is_oom(exc):
            status, message = "oom", _first_line(exc)
            if plan.device == "cuda":
                torch.cuda.empty_cache()
        else:
            status, message = "error", f"{type(exc).__name__}: {_first_line(exc)}"
            result = {"traceback": traceback.format_exc(limit=-4)}
    return {
        **cell.to_dict(),
        "status": status,
        "message": message,
        "result": result,
        "seconds": round(time.perf_counter() - started, 3),
    }


# what a first cell would import on first use: torch's optimizers import torch._dynamo (and sympy,
# ~800 modules) when the first one is built, an efficiency cell torch.utils.benchmark (its timer,
# torch.utils.cpp_extension and setuptools), a corpus read pyarrow's pandas layer
LAZY_IMPORTS = ("torch._dynamo", "torch.utils.benchmark", "torch.utils.cpp_extension", "pyarrow.pandas_compat")


@functools.cache
def import_what_cells_import_lazily() -> None:
    """Import LAZY_IMPORTS outside any cell's time limit. An alarm that lands inside such an import
    leaves a package half made in sys.modules, and every later cell of the process then fails on
    it (`module 'sympy' has no attribute 'printing'`)."""
    for name in LAZY_IMPORTS:
        with contextlib.suppress(ImportError):  # pyarrow is pandas' optional engine
            importlib.import_module(name)


def cell_budget(cell: Cell, plan: Plan) -> float | None:
    """Seconds a cell may take: efficiency cells may have their own budget."""
    if cell.kind == "efficiency" and plan.efficiency.get("max_seconds"):
        return plan.efficiency["max_seconds"]
    return plan.max_cell_seconds


# the least time the layer checks before an accuracy cell's training get, whatever its budget: a
# few times their cold cost at the largest length they check (n = 300), where a hanging layer costs
# this long before its cell is a timeout
CHECKS_SECONDS = 10.0


def checks_budget(cell: Cell, plan: Plan) -> float | None:
    """Seconds the layer checks before an accuracy cell's training may take (`_verify_layers`): the
    cell's budget, at least CHECKS_SECONDS; 0 for an efficiency cell, which has none. Outside the
    cell's budget, because they run once per process: the first cell of a layer, option set and
    length pays for them (1.2 s cold in one run, the first checks of a process) and the cells after
    it do not. Inside it, a budget shorter than that timed the first cell out before its checks
    were done and stored, and so every later one: the statuses depended on the cells' order."""
    if cell.kind != "accuracy":
        return 0.0
    budget = cell_budget(cell, plan)
    return None if budget is None else max(budget, CHECKS_SECONDS)


def _run(cell: Cell, plan: Plan) -> dict[str, Any]:
    # torch's process-wide settings as every cell starts: a layer that changed them (a plugin
    # calling set_default_dtype(float64) in its constructor) must not change the cells after it
    torch.set_num_threads(plan.threads)
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    dtype = DTYPES[plan.dtype]
    options = dict(cell.variant_options)
    if cell.kind == "efficiency":
        steady_heap()
        eff = plan.efficiency
        result = measure_attention(
            cell.variant,
            options,
            seq_len=cell.seq_len,
            batch=eff["batch"],
            d_model=eff["d_model"],
            n_heads=eff["n_heads"],
            device=plan.device,
            dtype=dtype,
            min_run_time=eff["min_run_time"],
            seed=cell.seed,
            peak_flops=plan.peak_flops,
        )
        if eff.get("model_step", True):  # a training step: none for a layer without backward here
            result["model_step"] = None if result.get("no_backward") else measure_model_step(cell, plan, dtype)
        return result
    task = build_task(cell.task, **dict(cell.task_options))
    check_digests(task.data_files(), plan.data)  # the bytes the run started with, on whichever machine
    cross = _cross_variant(plan.cross) if plan.cross else None
    result = train_and_evaluate(
        task,
        cell.variant,
        options,
        seq_len=cell.seq_len,
        seed=cell.seed,
        size=ModelSize(**plan.size),
        settings=TrainSettings(**plan.train),
        device=plan.device,
        dtype=dtype,
        cross=cross,
    )
    if not all(_finite(v) for v in (result["accuracy"], result["score"])):
        raise Diverged(f"non-finite test metric {result['score']}")
    return result


@functools.cache
def steady_heap() -> None:
    """Pin glibc's mmap threshold at 4 MiB (once per process, Linux only; efficiency cells).

    glibc raises the threshold each time a large block is freed, after which big tensors come from
    the heap and fragment it: additive attention's fwd+bwd at n=1024 reached 2.2 GB of RSS for
    58 MB of live tensors, and n=4096 exhausted 24 GB. With the threshold pinned, big blocks go
    back to the OS when freed (and the heap's top is trimmed past 8 MiB). Not for training cells:
    their many mid-size tensors would each pay an mmap and page faults. See `runner.heap`.
    """
    pin_mmap_threshold(STEADY_BYTES)


def measure_model_step(cell: Cell, plan: Plan, dtype: torch.dtype) -> dict[str, Any]:
    """Time, peak memory and FLOPs of one training step (forward, loss, backward) of the harness
    around the variant: a byte-vocabulary classifier at the efficiency width, the profile's depth."""
    eff = plan.efficiency
    size = ModelSize(**{**plan.size, "d_model": eff["d_model"], "n_heads": eff["n_heads"],
                        "max_len": max(plan.size.get("max_len", 0), cell.seq_len)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cell.seed)
        model = BenchModel("classify", 257, 2, cell.variant, dict(cell.variant_options), size)
    model = model.to(device=plan.device, dtype=dtype)
    gen = torch.Generator().manual_seed(cell.seed)
    tokens = torch.randint(1, 257, (eff["batch"], cell.seq_len), generator=gen).to(plan.device)
    pad = torch.zeros_like(tokens, dtype=torch.bool)
    target = torch.randint(0, 2, (eff["batch"],), generator=gen).to(plan.device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(tokens, pad).float(), target).backward()

    result = measure_step(step, device=plan.device, min_run_time=eff["min_run_time"], peak_flops=plan.peak_flops)
    result["n_layers"] = size.n_layers
    return result


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise CellTimeout in the main thread after `seconds` (SIGALRM; checked between Python
    bytecodes, so one long native op finishes first — the subprocess executor kills instead)."""
    usable = (
        seconds
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CellTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _verify_layers(cell: Cell, plan: Plan) -> None:
    """VerificationError, before any training, where a layer the model would use fails a check at
    the cell's length in the way the model calls it (`verify_for_training`): causal self-attention
    for a language model and a seq2seq decoder, and the decoder's cross-attention (the cell's
    variant, or --cross's)."""
    kind = TASKS[cell.task].spec.kind
    cross = _cross_variant(plan.cross) if plan.cross else None
    used = frozenset({CAUSAL}) if kind in ("lm", "seq2seq") else frozenset()
    layers = [(cell.variant_label, cell.variant, dict(cell.variant_options), used)]
    if kind == "seq2seq":
        name, options = cross or (cell.variant, dict(cell.variant_options))
        layers.append((plan.cross or cell.variant_label, name, options, frozenset({CROSS})))
    size = ModelSize(**plan.size)  # each layer checked as the model builds it
    for label, name, options, features in layers:
        failed = verify_for_training(name, options, plan.device, n=cell.seq_len, used=features,
                                     d_model=size.d_model, n_heads=size.n_heads)
        if failed is not None:
            raise VerificationError(
                f"{label}: its {failed.check} check fails at n={cell.seq_len}: {failed.detail}; not trained "
                f"(bench check --variants {shlex.quote(label)} runs every check)"
            )


def _cross_variant(label: str) -> tuple[str, dict[str, Any]]:
    """The plan's cross-attention variant, a label as --cross gave it ('additive(heads=2)'), as
    (name, options) for the model."""
    (chosen,) = parse_selection(label, VARIANTS, lambda n: get_variant_spec(n).options, what="--cross")
    return chosen.name, chosen.options
