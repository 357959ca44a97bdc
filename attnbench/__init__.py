"""attnbench: a pluggable benchmark suite for attention mechanisms.

Public API:
    variants: register_variant, build_variant, list_variants, get_variant_spec, VariantSpec,
              ProjectedAttention (base class with projections), AttentionLayer (base class)
    tasks:    register_task, build_task, list_tasks, get_task_spec, TaskSpec, Task, GeneratedTask
    results:  load_results(run_dir) → a pandas DataFrame, one row per cell
    Option (typed options of variants and tasks), errors
"""

import os as _os
import signal as _signal
import sys as _sys


def _bench_terminated_early(signum, frame) -> None:
    """SIGTERM (or Ctrl-C's SIGINT) before `bench`'s own handling (`attnbench.cli.main`) is in place:
    its line and its exit code, at once (nothing has started that needs undoing)."""
    try:
        _os.write(2, b"bench: aborted\n" if signum == _signal.SIGINT else b"bench: terminated\n")
    finally:
        _os._exit(128 + signum)


# the modules that are the command line when run with `python -m`
_COMMAND_MODULES = ("attnbench", "attnbench.cli", "attnbench.benchmarks")


def _run_as_command() -> bool:
    """Whether this process is `bench` (its console script) or `python -m` of a command module."""
    command = _os.path.basename((getattr(_sys, "argv", None) or [""])[0])
    if command in ("bench", "bench.exe", "bench-script.py"):
        return True
    # under `python -m MODULE ARGS`, argv is ["-m", ARGS] while the package imports, and orig_argv the
    # whole line, so MODULE (or "-mMODULE") stands just before ARGS there
    orig = getattr(_sys, "orig_argv", None) or []
    if command != "-m" or len(orig) <= len(_sys.argv):
        return False
    module = orig[len(orig) - len(_sys.argv)]
    return (module[2:] if module.startswith("-m") else module) in _COMMAND_MODULES


def _catch_sigterm_early() -> None:
    """Run as the command line (`_run_as_command`), catch SIGTERM and SIGINT from here on: the
    imports below take torch's second or more, and a `kill`, a `timeout` or a Ctrl-C in them ended
    the command without its line (Ctrl-C with a traceback). `attnbench.cli.main` gives SIGINT back
    to Python's KeyboardInterrupt (`restore_sigint`). Imported as a library, nothing changes."""
    if not _run_as_command():
        return
    try:
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, _bench_terminated_early)
        if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            _signal.signal(_signal.SIGINT, _bench_terminated_early)
    except ValueError:  # not the main thread: signals stay as they are
        pass


def restore_sigint() -> None:
    """SIGINT raises KeyboardInterrupt again where `_catch_sigterm_early` took it over: the command
    (which unwinds a Ctrl-C through its clean-up) has started."""
    try:
        if _signal.getsignal(_signal.SIGINT) is _bench_terminated_early:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    except ValueError:
        pass


_catch_sigterm_early()

from attnbench.errors import (  # noqa: E402
    AttnbenchError, NoBackwardError, OptionError, PluginError, UnknownNameError, UnsupportedError,
)
from attnbench.options import Option  # noqa: E402
from attnbench.variants.base import (  # noqa: E402
    VARIANTS,
    AttentionLayer,
    ProjectedAttention,
    VariantSpec,
    build_variant,
    get_variant_spec,
    list_variants,
    register_variant,
)
import attnbench.variants  # noqa: E402,F401  (registers the built-in variants)
from attnbench.tasks import (  # noqa: E402  (importing it registers the built-in tasks)
    GeneratedTask,
    Task,
    TaskSpec,
    build_task,
    get_task_spec,
    list_tasks,
    register_task,
)


def load_results(run_dir):
    """The cells of a run directory as a pandas DataFrame (one row per cell, nested fields
    flattened with '.'); see attnbench.runner.store."""
    from attnbench.runner.store import load_results as load

    return load(run_dir)


__version__ = "0.1.0"

__all__ = [
    "AttentionLayer",
    "AttnbenchError",
    "GeneratedTask",
    "Task",
    "TaskSpec",
    "build_task",
    "get_task_spec",
    "list_tasks",
    "load_results",
    "register_task",
    "NoBackwardError",
    "Option",
    "OptionError",
    "PluginError",
    "ProjectedAttention",
    "UnknownNameError",
    "UnsupportedError",
    "VARIANTS",
    "VariantSpec",
    "build_variant",
    "get_variant_spec",
    "list_variants",
    "register_variant",
]
