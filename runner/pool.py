"""Several cells at once: `--jobs N` executors, each running one cell at a time in its own thread.

    pool = CellPool("subprocess", plan, jobs=4)
    for record in pool.run(cells):      # records in the order the cells finish
        store.append(record)
    for executor in pool.executors:     # (abandon=True after Ctrl-C: kills the cells in flight)
        executor.close()

Each executor keeps what makes one cell's failure cost that cell only (a worker process or a Ray
actor that is killed at the budget and replaced), so a pool is the same guarantee `jobs` times
over. The threads only wait on their executors' pipes or Ray's futures; the cells compute in
other processes, so the GIL is not shared between them. The local executor computes in this
process and cannot run two cells at once (`check_jobs` refuses it).

Timing cells never run in a pool: the sweep runs them one at a time after the accuracy cells,
so that nothing else of the sweep shares the machine while they are timed.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from attnbench.errors import AttnbenchError
from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan
from attnbench.runner.executors import WorkerStartError, failed_record, make_executor

MAX_JOBS = 1024
CONCURRENT = ("subprocess", "ray")  # executors whose cells compute outside this process


def check_jobs(jobs: int | None, executor: str) -> None:
    """`--jobs` must name a pool the executor can run: one line otherwise."""
    if jobs is None:
        return
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
        raise AttnbenchError(f"--jobs: give an int from 1 to {MAX_JOBS}, got {jobs!r}")
    if jobs > 1 and executor not in CONCURRENT:
        raise AttnbenchError(
            f"--jobs {jobs}: the {executor} executor computes in this process, one cell at a time; "
            "use --executor subprocess (worker processes on this machine) or --executor ray"
        )


def resolve_jobs(executor: str, plan: Plan, jobs: int | None) -> int:
    """How many cells the pool runs at once: `jobs`, or by default one (cells on one machine
    contend for its cores) or, for Ray, as many actors as the cluster holds (a cluster is there
    to be used). For Ray this connects, so call it before anything is written: a cluster that
    cannot be reached or holds no actor is then one line, and so is a `jobs` above what it holds
    (the extra actors would wait for resources until their start ran out of time)."""
    if executor != "ray":
        return jobs or 1
    from attnbench.runner.ray_executor import actor_options, cluster_slots

    slots = cluster_slots(plan)
    if jobs and jobs > slots:
        each = actor_options(plan)
        gpu = " and a GPU" if each["num_gpus"] else ""
        raise AttnbenchError(f"--jobs {jobs}: the Ray cluster holds {slots} cells at once "
                             f"({each['num_cpus']} CPUs{gpu} each); give --jobs {slots} or fewer")
    return jobs or slots


class CellPool:
    """`jobs` executors of one kind; `run` keeps each busy with the next cell until none are left."""

    def __init__(self, executor: str, plan: Plan, jobs: int | None = 1) -> None:
        jobs = resolve_jobs(executor, plan, jobs)
        self.executors = [make_executor(executor, plan) for _ in range(jobs)]  # workers start on first use

    def run(self, cells: Iterable[Cell]) -> Iterator[dict[str, Any]]:
        """The record of each cell, as it finishes. An executor error that is not a cell's (a
        worker that cannot start at all) stops the pool and is raised here."""
        cells = list(cells)
        if len(self.executors) == 1 or len(cells) <= 1:  # no threads where there is nothing to overlap
            for cell in cells:
                yield self.executors[0].run(cell)
            return
        free: queue.SimpleQueue = queue.SimpleQueue()
        for executor in self.executors:
            free.put(executor)

        def run_one(cell: Cell) -> dict[str, Any]:
            executor = free.get()  # one is free: at most `jobs` threads hold one each
            try:
                return executor.run(cell)
            except WorkerStartError as exc:  # the sweep stops only if no job has started a worker yet
                if not any(e.started for e in self.executors):
                    raise
                return failed_record(cell, time.perf_counter(), "error", str(exc))
            finally:
                free.put(executor)

        threads = ThreadPoolExecutor(len(self.executors), thread_name_prefix="attnbench-cell")
        try:
            pending: set[Future] = {threads.submit(run_one, cell) for cell in cells}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)  # a timeout: Ctrl-C gets in
                for future in done:
                    yield future.result()
        finally:  # finished, or interrupted: cells not started are dropped, running ones are the caller's to end
            threads.shutdown(wait=False, cancel_futures=True)
