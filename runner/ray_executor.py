"""`--executor ray` (the `attnbench[ray]` extra): cells in Ray actors, on this machine or a cluster.

One `RayExecutor` holds one actor, the counterpart of the subprocess executor's worker process.
The actor asks Ray for what one cell uses (`num_cpus` = the run's threads, and a GPU for cuda),
imports attnbench and the run's plugins once, then runs cells one at a time. The driver waits for
a cell at most its budget plus a grace; past that, or when the actor dies (a segfault, Ray's
memory monitor, a lost node), the actor is killed, the cell is recorded as `timeout`, `oom` or
`error`, and the next cell gets a fresh actor. `runner.pool` runs `--jobs` executors side by side.

Ray connects to the cluster that RAY_ADDRESS names (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others) or starts one on this machine. Every machine needs attnbench
(and the run's plugins and data files, at the same absolute paths). Only accuracy cells go to
the actors: efficiency cells are timed on this machine (`executors.timing_executor`).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

from attnbench.errors import AttnbenchError, Terminated
from attnbench.plugins import recorded_plugin
from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan, execute_cell, import_what_cells_import_lazily
from attnbench.runner.executors import (
    WORKER_START_SECONDS, WorkerStartError, failed_record, worker_limit_text, worker_seconds,
)

INSTALL = "pip install 'attnbench[ray]'"
# what Ray's memory monitor says of a worker it killed (a kernel OOM kill looks like any other
# crash to Ray, with a paragraph of possible causes that mentions memory either way)
MEMORY_MONITOR = "running low on memory"
PROBE_SECONDS = 5.0  # how long a RAY_ADDRESS may take to accept a connection
_CONNECTING = threading.Lock()  # one ray.init per process, whichever thread gets there first
_QUIET = False  # `bench run --quiet`: Ray's warnings and its workers' output kept off the terminal
_HALF_STARTED = False  # a ray.init that a signal cut short (see must_exit_at_once)
_EMPTY_DIRS: list[str] = []  # the directories Ray was started from, removed at exit


def quiet(enabled: bool) -> None:
    """Set by every `bench run --executor ray`: with `--quiet`, the `ray.init` to come logs errors
    only (not, e.g., Ray 2.60's "Token authentication is enabled" warning) and forwards no worker
    output (a crashed actor's dump); what a cell's failure means is in its record. Ray takes these
    at its first `ray.init` in a process: a later run in the same process keeps them."""
    global _QUIET
    _QUIET = enabled


def check_available() -> None:
    """Ray must be installed before a sweep that asks for it plans anything (one line if not). A
    folder named `ray` on the path (Ray's own /tmp/ray, seen from /tmp) is no Ray: it has no file."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin in (None, "namespace"):
        raise AttnbenchError(f"--executor ray: Ray is not installed ({INSTALL})")


def connect():
    """The `ray` module, connected: to RAY_ADDRESS's cluster, else to a new one on this machine.

    Once per process, under a lock (the pool's threads all reach here). Ray puts the current
    directory on its workers' sys.path (and starts its local workers there), where a clone's bare
    `attnbench/` folder would shadow the installed package (as `executors.WORKER_COMMAND` avoids
    for the subprocess worker), so Ray is started from an empty directory. `ray.init` sets its own
    SIGTERM and SIGINT handlers, which would end `bench` without its line and exit code; bench's
    are put back."""
    global _HALF_STARTED
    check_available()
    import ray

    with _CONNECTING:
        if ray.is_initialized():
            return ray
        address = os.environ.get("RAY_ADDRESS") or None
        where = f"the cluster at RAY_ADDRESS={address}" if address else "a local Ray instance"
        _probe(address, where)
        handlers = _signal_handlers()
        here, empty = os.getcwd(), _empty_directory()
        os.chdir(empty)
        try:
            ray.init(address=address, logging_level=logging.ERROR if _QUIET else logging.WARNING,
                     log_to_driver=not _QUIET, include_dashboard=False)
        except BaseException as exc:  # noqa: BLE001 — a failure to connect is one line; a signal is bench's
            _shutdown(ray)  # what it started so far (its agents would outlive bench)
            signalled = interruption(exc)
            _HALF_STARTED = signalled is not None
            if isinstance(exc, Exception):
                if signalled is not None:  # a SIGTERM inside Ray's compiled code: bench's, unwrapped
                    raise signalled
                raise AttnbenchError(f"--executor ray: cannot start or reach {where}: {_why(exc)}") from None
            ours = handlers.get(signal.SIGTERM)
            if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and callable(ours):
                ours(signal.SIGTERM, None)  # Ray's handler exits 15: bench's raises, for its line and 143
            raise
        finally:
            os.chdir(here)
            for signum, handler in handlers.items():
                if handler is not None:  # None: set outside Python, not ours to put back
                    signal.signal(signum, handler)
    return ray


def _empty_directory() -> str:
    """A new empty directory, removed when this process exits. Ray's local workers also start in
    the directory the driver connected from, so it must outlive them (in a removed one, MKL
    fails to load torch's libraries)."""
    path = tempfile.mkdtemp(prefix="attnbench-ray-")
    _EMPTY_DIRS.append(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def must_exit_at_once() -> bool:
    """Whether this process should end without Python's finalization: a `ray.init` that a signal
    cut short (and that was shut down) can leave Ray's core worker half-made, and a SIGTERM that
    met Ray's own C++ failure-signal handler there aborted the process after Python had finished
    (exit 134, in 4 of 26 SIGTERMs aimed at `ray.init` with Ray 2.60), not bench's 143."""
    return _HALF_STARTED


def exit_at_once(code: int) -> None:
    """End the process with `code` now: the directories Ray was started from removed, output
    flushed, and nothing else of Python's or Ray's exit run."""
    for path in _EMPTY_DIRS:
        shutil.rmtree(path, ignore_errors=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 — a closed stream: nothing to flush
            pass
    os._exit(code)


def _shutdown(ray) -> None:
    """Stop what a failed or interrupted `ray.init` started; its own failure changes nothing."""
    try:
        ray.shutdown()
    except BaseException:  # noqa: BLE001
        pass


def _probe(address: str | None, where: str) -> None:
    """A `host:port` address that does not answer is one line at once; Ray would retry for
    minutes, printing C++ warnings."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # none (start one here), "auto", or ray://: Ray's own business
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()  # [::1]:6379 too
    except OSError as err:
        raise AttnbenchError(f"--executor ray: cannot reach {where}: {err.strerror or err}") from None


def _signal_handlers() -> dict:
    """This process's SIGTERM and SIGINT handlers, where it may set them (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}


def actor_options(plan: Plan) -> dict[str, Any]:
    """What one cell's actor reserves: the run's threads, and a GPU for a cuda run."""
    return {"num_cpus": plan.threads, "num_gpus": 1 if plan.device == "cuda" else 0, "max_restarts": 0}


def cluster_slots(plan: Plan) -> int:
    """How many actors the cluster's live machines can hold at once (the default --jobs); one line
    if not one of them can hold an actor, which Ray would otherwise wait for forever."""
    ray = connect()
    need = actor_options(plan)
    slots = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = int(have.get("CPU", 0) // need["num_cpus"])
        if need["num_gpus"]:
            fits = min(fits, int(have.get("GPU", 0)))
        slots += fits
    if not slots:
        gpu = " and a GPU" if need["num_gpus"] else ""
        raise AttnbenchError(
            f"--executor ray: no machine of the Ray cluster has {need['num_cpus']} CPUs{gpu} for a cell "
            "(--threads sets the CPUs a cell takes)"
        )
    return slots


class CellActor:
    """Runs in a Ray worker process: the remote end of one RayExecutor."""

    def __init__(self, plugins: list[str]) -> None:
        import attnbench  # noqa: F401  (registers built-ins)
        import attnbench.tasks  # noqa: F401
        from attnbench.plugins import import_plugin

        for target in plugins:
            import_plugin(target)
        import_what_cells_import_lazily()  # as the subprocess worker does: not inside its first cell

    def ready(self) -> int:
        return os.getpid()

    def run(self, cell: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        return execute_cell(Cell.from_dict(cell), Plan.from_dict(plan))


class RayExecutor:
    name = "ray"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.actor = None
        self.started = 0  # actors that answered: after the first, a failed restart costs one cell
        self.closed = False
        self.ray = connect()  # here, in the thread that makes the pool, not in its threads

    def _start(self) -> None:
        plugins = [recorded_plugin(t) for t in self.plan.plugins]  # as a run records them: from any directory
        try:
            self.actor = self.ray.remote(**actor_options(self.plan))(CellActor).remote(plugins)  # close() may end it now
        except Exception as exc:  # noqa: BLE001 — Ray's compiled code: a signal comes back wrapped
            raise_interruption(exc)
            raise
        if self.closed:  # abandoned while it was being asked for: close() may have looked too early
            self._end_actor()
            raise WorkerStartError("--executor ray: the sweep stopped")
        try:
            self.ray.get(self.actor.ready.remote(), timeout=WORKER_START_SECONDS)
        except Exception as exc:  # noqa: BLE001 — an import error, a plugin's, a timeout: one line
            self._end_actor()  # the next cell tries a fresh one (once one has started: `run`)
            raise_interruption(exc)
            raise WorkerStartError(f"--executor ray: the actor could not start ({_why(exc)})") from None
        self.started += 1

    def run(self, cell: Cell) -> dict[str, Any]:
        started = time.perf_counter()
        if self.closed:  # the sweep was interrupted while this cell waited for its turn
            return failed_record(cell, started, "error", "not run: the sweep stopped")
        if self.actor is None:
            try:
                self._start()
            except WorkerStartError as exc:
                if not self.started:  # the environment is broken for every cell: stop the sweep
                    raise
                return failed_record(cell, started, "error", str(exc))
        ray, actor = self.ray, self.actor
        if actor is None:  # closed meanwhile, from the thread that was interrupted
            return failed_record(cell, started, "error", "not run: the sweep stopped")
        try:  # the actor's own SIGALRMs fire where Ray runs the cell on its main thread (`worker_seconds`)
            ref = actor.run.remote(cell.to_dict(), self.plan.to_dict())
            record = ray.get(ref, timeout=worker_seconds(cell, self.plan))
        except ray.exceptions.GetTimeoutError:
            self._end_actor()
            return failed_record(cell, started, "timeout", f"over {worker_limit_text(cell, self.plan)}; Ray actor killed")
        except ray.exceptions.RayError as exc:  # the actor died, its node was lost, Ray evicted it
            self._end_actor()
            oom = isinstance(exc, ray.exceptions.OutOfMemoryError) or MEMORY_MONITOR in str(exc)
            return failed_record(cell, started, "oom" if oom else "error", f"Ray actor died: {_why(exc)}")
        except Exception as exc:  # e.g. the SystemError of a SIGTERM inside Ray's compiled code
            raise_interruption(exc)
            raise
        if record.get("status") == "timeout":  # stopped mid-cell by its alarm: maybe mid-import, start afresh
            self._end_actor()
        return record

    def _end_actor(self) -> None:
        if self.actor is not None:
            self.ray.kill(self.actor)
            self.actor = None

    def close(self, *, abandon: bool = False) -> None:
        """End the actor (also one still starting). Between cells there is nothing to wait for;
        `abandon` ends one mid-cell, and the executor takes no cell after it."""
        self.closed = self.closed or abandon
        self._end_actor()


def interruption(exc: BaseException) -> BaseException | None:
    """The SIGTERM or Ctrl-C that `exc` is, or stands for: bench's `Terminated`, KeyboardInterrupt,
    Ray's own SIGTERM handler's SystemExit(15), or the SystemError ("returned a result with an
    exception set") that CPython makes of a `Terminated` or KeyboardInterrupt raised by a signal
    handler while Ray's compiled code runs in this thread, its cause. None for anything else: an
    error merely chained to some other BaseException (a CancelledError, an earlier SystemExit) is
    that error."""
    if isinstance(exc, (Terminated, KeyboardInterrupt)):
        return exc
    if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
        return exc
    if isinstance(exc, SystemError):
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if isinstance(inner, (Terminated, KeyboardInterrupt)):
            return inner
    return None


def raise_interruption(exc: BaseException) -> None:
    """Raise `interruption(exc)`, if there is one: otherwise it would read as the actor's or the
    cluster's failure (a run killed while an actor started ended 'the actor could not start',
    exit 1, not 143)."""
    found = interruption(exc)
    if found is not None:
        raise found


def _why(exc: BaseException) -> str:
    """Ray's message in one line: its tab-indented detail lines (ids, pids, addresses) and its
    paragraph of possible causes left out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("\t")]
    text = " ".join(lines).split(" Some common causes")[0]
    return text[:300] or type(exc).__name__
