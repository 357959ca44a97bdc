"""Executors: where cells run. All yield the same records for deterministic cells.

- `local`: in this process. Fast to start; a cell over its budget is stopped by SIGALRM between
  Python bytecodes; a segfault or an OOM kill would end the sweep (already recorded cells stay).
- `subprocess`: cells run one at a time in a worker process (`attnbench.runner.worker`, see WORKER_COMMAND)
  that is reused from cell to cell (importing torch costs seconds) and replaced when it dies or
  hangs. The parent enforces the per-cell budget by killing the worker, so a hang, a segfault or
  the kernel's OOM killer costs exactly one cell, recorded as `timeout`, `error` or `oom`.
- `ray` (the `attnbench[ray]` extra, `runner.ray_executor`): the same for a Ray actor, which may
  live on another machine of a Ray cluster; only accuracy cells go there (`timing_executor`).

An executor runs one cell at a time; `runner.pool` runs several executors side by side.

Protocol: the parent writes one JSON line per cell ({"cell": …, "plan": …}) to the worker's stdin;
the worker answers with one line `@@record <json>` on its stdout, which carries nothing else (its
prints, and native code writing to fd 1, go to stderr).
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan, cell_budget, checks_budget, execute_cell
from attnbench.errors import AttnbenchError
from attnbench.runner.worker import PARENT_ENV, READY

EXECUTORS = ("local", "subprocess", "ray")
MARK = "@@record "
# without a cell budget, a worker still gets this long before it counts as hung
DEFAULT_WORKER_SECONDS = 6 * 3600
WORKER_GRACE_SECONDS = 30  # past a cell's own alarms, before its parent ends the worker
# how long a starting worker may take to import torch and attnbench (seconds on a quiet machine)
WORKER_START_SECONDS = 600
# How the worker starts. Not `python -m attnbench.runner.worker`: -m puts the current directory
# first on sys.path, so a folder named attnbench there (a clone's own package folder, when the
# install is not editable) would be imported instead of the installed package, and every cell
# would die at import. `-c` puts '' there instead (none under PYTHONSAFEPATH), which is dropped.
WORKER_COMMAND = (
    sys.executable,
    "-c",
    # Ctrl-C reaches the terminal's whole process group: the parent stops the sweep and kills the
    # worker, whose own KeyboardInterrupt (also while it imports torch) would print a traceback
    "import runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "if sys.path[:1] == ['']: del sys.path[0]\n"
    "runpy.run_module('attnbench.runner.worker', run_name='__main__', alter_sys=True)",
)



def worker_seconds(cell: Cell, plan: Plan) -> float:
    """How long a worker process (or Ray actor) may take over `cell` before its parent ends it: the
    worker's own SIGALRMs fire at the layer checks' limit and at the cell's budget, so both and
    WORKER_GRACE_SECONDS; DEFAULT_WORKER_SECONDS where the cell has no budget."""
    budget = cell_budget(cell, plan)
    return (checks_budget(cell, plan) or 0.0) + budget + WORKER_GRACE_SECONDS if budget else DEFAULT_WORKER_SECONDS


def worker_limit_text(cell: Cell, plan: Plan) -> str:
    """What a worker killed at `worker_seconds` ran over, for its `timeout` record: the cell's
    budget and its layer checks' limit, both of which that wait allows."""
    budget, checks = cell_budget(cell, plan), checks_budget(cell, plan)
    if not budget:
        return f"{DEFAULT_WORKER_SECONDS} s without an answer"
    return f"the {budget:g} s cell budget" + (f" and its layer checks' {checks:g} s" if checks else "")

class WorkerStartError(AttnbenchError):
    """The worker process could not start (it died or hung while importing): the environment is
    broken for every cell, so the sweep stops instead of recording each cell as an error."""

    exit_code = 1


class LocalExecutor:
    name = "local"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def run(self, cell: Cell) -> dict[str, Any]:
        return execute_cell(cell, self.plan)

    def close(self, *, abandon: bool = False) -> None:
        pass


class SubprocessExecutor:
    name = "subprocess"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.proc: subprocess.Popen | None = None
        self.started = 0  # workers that reached READY: after the first, a failed restart costs one cell
        self.closed = False  # abandoned (Ctrl-C, SIGTERM): no worker is started for a cell after that

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(
            list(WORKER_COMMAND),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self.closed:  # abandoned while it was being started: close() may have looked too early
            self._kill()
            raise WorkerStartError("--executor subprocess: the sweep stopped")
        for line in self._lines(time.perf_counter() + WORKER_START_SECONDS):
            if line.rstrip("\n") == READY:
                self.started += 1
                return self.proc
        try:
            code = self.proc.wait(timeout=5)
            # an exit code is the worker's own failure, printed on stderr; a signal came from outside
            why = _exit_reason(code) + ("; its error is above" if code > 0 else "")
        except subprocess.TimeoutExpired:
            why = f"no answer in {WORKER_START_SECONDS} s"
        self._kill()
        raise WorkerStartError(f"--executor subprocess: the worker process could not start ({why})")

    def run(self, cell: Cell) -> dict[str, Any]:
        started = time.perf_counter()
        if self.closed:  # a pool's cell that waited for its turn while the sweep was interrupted
            return failed_record(cell, started, "error", "not run: the sweep stopped")
        if self.proc is None or self.proc.poll() is not None:
            try:
                self.proc = self._start()
            except WorkerStartError as exc:
                if not self.started:  # the environment is broken for every cell: stop the sweep
                    raise
                # a replacement (after a crash, a hang or an OOM kill) failed: this cell only
                return failed_record(cell, started, "error", str(exc))
        kills = oom_kill_count()  # to tell the OOM killer's SIGKILL from another's
        message = json.dumps({"cell": cell.to_dict(), "plan": self.plan.to_dict()})
        try:
            self.proc.stdin.write(message + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return failed_record(cell, started, "error", "the worker process died before the cell started")
        deadline = started + worker_seconds(cell, self.plan)
        for line in self._lines(deadline):
            if line.startswith(MARK):
                record = json.loads(line[len(MARK) :])
                if record.get("status") == "timeout":  # its alarm may have struck mid-import: start afresh
                    self._kill()
                return record
        try:  # EOF: the worker is exiting (its status may lag its closed pipe by a moment)
            self.proc.wait(timeout=max(0.0, min(5.0, deadline - time.perf_counter())))
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:  # hung past the deadline
            self._kill()
            return failed_record(cell, started, "timeout", f"over {worker_limit_text(cell, self.plan)}; worker killed")
        code = self.proc.returncode
        self.proc = None
        if code == -signal.SIGKILL:
            return _killed_record(cell, started, kills, oom_kill_count())
        return failed_record(cell, started, "error", f"worker process died ({_exit_reason(code)})")

    def _lines(self, deadline: float) -> Iterator[str]:
        """Lines from the worker until EOF or the deadline (the worker's stdout carries only
        records: it points its own prints at stderr, so no line waits in a read buffer)."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.perf_counter()) > 0:
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                line = self.proc.stdout.readline()
                if line == "":
                    return
                yield line

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self, *, abandon: bool = False) -> None:
        """End the worker: between cells it exits when its stdin closes; `abandon` (the sweep was
        interrupted, a cell may be in flight) kills it at once instead of waiting for the cell."""
        if abandon:
            self.closed = True
            self._kill()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self._kill()
        self.proc = None


def _killed_record(cell: Cell, started: float, before: int | None, after: int | None) -> dict[str, Any]:
    """The record of a cell whose worker died of SIGKILL: `oom` where this cgroup's count of OOM
    kills rose meanwhile (`before` → `after`), `error` where it did not (another process's kill:
    a `--retry error` resume reruns it, and an efficiency cell's longer lengths are not skipped as
    out of memory), `oom` with a question mark where the count cannot be read."""
    if before is None or after is None:
        return failed_record(cell, started, "oom", "worker killed by SIGKILL (the kernel's OOM killer?)")
    if after > before:
        return failed_record(cell, started, "oom", f"worker killed by the kernel's OOM killer (SIGKILL; this "
                                                   f"cgroup's oom_kill count {before} → {after})")
    return failed_record(cell, started, "error", f"worker killed by SIGKILL, not by the OOM killer (this cgroup's "
                                                 f"oom_kill count stayed {after})")


def oom_kill_count() -> int | None:
    """How many of this cgroup's processes the kernel's OOM killer has killed (cgroup v2
    memory.events, v1 memory.oom_control: `oom_kill N`); None where neither can be read."""
    for path in _oom_count_files():
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


@functools.cache
def _oom_count_files() -> tuple[str, ...]:
    """This process's cgroup's OOM counters, its own first, then the root the container sees (read
    once: a process keeps its cgroup, and the count is read before and after every cell)."""
    files = []
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2
            files.append(f"/sys/fs/cgroup{path.rstrip('/')}/memory.events")
        elif "memory" in controllers.split(","):
            files.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control")
    return tuple(dict.fromkeys([*files, "/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]))


def failed_record(cell: Cell, started: float, status: str, message: str) -> dict[str, Any]:
    """The record of a cell whose executor lost it (a killed or dead worker): no result."""
    return {
        **cell.to_dict(),
        "status": status,
        "message": message,
        "result": None,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _exit_reason(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def make_executor(name: str, plan: Plan):
    if name == "ray":  # imported only when asked for: Ray is an optional extra
        from attnbench.runner.ray_executor import RayExecutor

        return RayExecutor(plan)
    return {"local": LocalExecutor, "subprocess": SubprocessExecutor}[name](plan)


def timing_executor(name: str) -> str:
    """The executor that times efficiency cells for a sweep that runs its others on `name`: itself,
    except Ray, whose actors may sit on any machine of a cluster. A timing belongs to the machine
    that env.json describes (its matmul peak, its CPU), and a cluster's machines need not match
    it or each other, so these cells run here, in a worker process."""
    return "subprocess" if name == "ray" else name
