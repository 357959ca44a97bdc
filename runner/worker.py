"""The worker process of the subprocess executor: reads cells on stdin, answers records on stdout.

Started by `SubprocessExecutor` (executors.WORKER_COMMAND); see executors.py for the
protocol. Only records go to the real stdout: fd 1 is pointed at stderr so that prints (Python's
or native code's) cannot interleave with a record.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

# how often the worker looks whether its parent is still there
ORPHAN_POLL_SECONDS = 0.5
PARENT_ENV = "ATTNBENCH_WORKER_PARENT"  # set by the executor that starts the worker
READY = "@@ready"  # the worker's first line: its imports succeeded


def _exit_when_orphaned(parent: int) -> None:
    """End this process as soon as its parent has gone (it is then re-parented): a `bench run`
    killed outright (SIGKILL, or anything that skips its clean-up) must not leave its worker
    computing the rest of a cell nobody will record. A daemon thread: `time.sleep` and torch's
    kernels release the GIL, so it runs during a cell."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(1)


def main() -> None:
    # the parent's pid as the parent gave it: one that died before this line ran is noticed too
    parent = int(os.environ.get(PARENT_ENV, os.getppid()))
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as WORKER_COMMAND does first (for `python -m` too)
    from attnbench.runner.streams import Outliving, devnull_if_closed

    devnull_if_closed(2, "stderr")  # before the dup: else the records' copy of fd 1 would take fd 2
    records = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # stderr is the parent's: a `bench run 2>&1 | head` whose reader has gone must not fail the cells
    sys.stdout = sys.stderr = Outliving(sys.stderr)
    import attnbench  # noqa: F401  (registers built-ins; entry-point plugins load lazily)
    import attnbench.tasks  # noqa: F401
    from attnbench.plugins import import_plugin
    from attnbench.runner.cells import Cell
    from attnbench.runner.execute import Plan, import_what_cells_import_lazily, execute_cell
    from attnbench.runner.executors import MARK

    # before READY: a worker started after another's timeout would else take them (1.4 s) within
    # its first cell's wall seconds, and the cell's record would depend on what ran before it
    import_what_cells_import_lazily()
    try:
        records.write(READY + "\n")
        records.flush()
        imported: set[str] = set()
        for line in sys.stdin:
            if not line.strip():
                continue
            message = json.loads(line)
            plan = Plan.from_dict(message["plan"])
            for target in plan.plugins:
                if target not in imported:
                    import_plugin(target)
                    imported.add(target)
            record = execute_cell(Cell.from_dict(message["cell"]), plan)
            records.write(MARK + json.dumps(record) + "\n")
            records.flush()
    except (BrokenPipeError, ConnectionResetError):
        # the parent has gone (killed outright) before the orphan poll noticed: nobody reads the
        # record, and a traceback on its terminal after `bench` ended would only alarm
        os._exit(1)


if __name__ == "__main__":
    main()
