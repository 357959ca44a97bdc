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

import importlib.util
import logging
import os
import time
from typing import Any

from attnbench.errors import AttnbenchError
from attnbench.plugins import recorded_plugin
from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan, cell_budget, execute_cell
from attnbench.runner.executors import DEFAULT_WORKER_SECONDS, WORKER_START_SECONDS, WorkerStartError, failed_record

INSTALL = "pip install 'attnbench[ray]'"
# what Ray's memory monitor says of a worker it killed (a kernel OOM kill looks like any other
# crash to Ray, with a paragraph of possible causes that mentions memory either way)
MEMORY_MONITOR = "running low on memory"


def check_available() -> None:
    """Ray must be installed before a sweep that asks for it plans anything (one line if not). A
    folder named `ray` on the path (Ray's own /tmp/ray, seen from /tmp) is no Ray: it has no file."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin in (None, "namespace"):
        raise AttnbenchError(f"--executor ray: Ray is not installed ({INSTALL})")


def connect():
    """The `ray` module, connected: to RAY_ADDRESS's cluster, else to a new one on this machine."""
    check_available()
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 — any failure to connect is one line
            where = f"the cluster at RAY_ADDRESS={address}" if address else "a local Ray instance"
            raise AttnbenchError(f"--executor ray: cannot start or reach {where}: {_why(exc)}") from None
    return ray


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

    def _start(self) -> None:
        ray = connect()
        plugins = [recorded_plugin(t) for t in self.plan.plugins]  # as a run records them: from any directory
        actor = ray.remote(**actor_options(self.plan))(CellActor).remote(plugins)
        try:
            ray.get(actor.ready.remote(), timeout=WORKER_START_SECONDS)
        except Exception as exc:  # noqa: BLE001 — an import error, a plugin's, a timeout: one line
            ray.kill(actor)
            raise WorkerStartError(f"--executor ray: the actor could not start ({_why(exc)})") from None
        self.actor = actor
        self.started += 1

    def run(self, cell: Cell) -> dict[str, Any]:
        started = time.perf_counter()
        if self.actor is None:
            try:
                self._start()
            except WorkerStartError as exc:
                if not self.started:  # the environment is broken for every cell: stop the sweep
                    raise
                return failed_record(cell, started, "error", str(exc))
        ray = connect()
        budget = cell_budget(cell, self.plan)
        ref = self.actor.run.remote(cell.to_dict(), self.plan.to_dict())
        try:  # the actor's own SIGALRM fires at `budget` where Ray runs the cell on its main thread
            return ray.get(ref, timeout=budget + 30 if budget else DEFAULT_WORKER_SECONDS)
        except ray.exceptions.GetTimeoutError:
            self.close(abandon=True)
            limit = f"the {budget:g} s cell budget" if budget else f"{DEFAULT_WORKER_SECONDS} s without an answer"
            return failed_record(cell, started, "timeout", f"over {limit}; Ray actor killed")
        except ray.exceptions.RayError as exc:  # the actor died, its node was lost, Ray evicted it
            self.close(abandon=True)
            oom = isinstance(exc, ray.exceptions.OutOfMemoryError) or MEMORY_MONITOR in str(exc)
            return failed_record(cell, started, "oom" if oom else "error", f"Ray actor died: {_why(exc)}")

    def close(self, *, abandon: bool = False) -> None:
        """End the actor. Between cells there is nothing to wait for; `abandon` ends one mid-cell."""
        if self.actor is not None:
            connect().kill(self.actor)
            self.actor = None


def _why(exc: BaseException) -> str:
    """Ray's message in one line: its tab-indented detail lines (ids, pids, addresses) and its
    paragraph of possible causes left out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("\t")]
    text = " ".join(lines).split(" Some common causes")[0]
    return text[:300] or type(exc).__name__
