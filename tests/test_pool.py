"""`--jobs`: accuracy cells side by side in worker processes (and Ray actors), efficiency cells
alone after them; the same records as one cell at a time, in reports in the grid's order."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from attnbench.runner.cells import Cell
from attnbench.runner.store import RunStore, read_records
from attnbench.runner.sweep import SweepRequest, plan_sweep, run_sweep
from support import one_error_line
from test_reliability import _gone_within
from test_runner import EXPECTED, FAULTS, by_variant, comparable, smoke_plan

ACCURACY = ["--profile", "smoke", "--variants", "multi-head,local(window=4),linear", "--tasks", "mqar,copy",
            "--lengths", "32", "--seeds", "0,1", "--threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(sandbox, monkeypatch):
    """--plugin registrations made by a test (the fault variants) end with it: a later `--variants
    all` would otherwise run fault-hang, which sleeps an hour. And a `ray.init` a test interrupts
    marks this process for a hard exit (`ray_executor.must_exit_at_once`): the mark ends with it, or
    a later in-process `bench` that exits 130 or 143 would end pytest."""
    from attnbench.runner import ray_executor

    monkeypatch.setattr(ray_executor, "_HALF_STARTED", False)
    monkeypatch.setattr(ray_executor, "_QUIET", False)
    yield


def file_order(run: Path) -> list[dict]:
    """The records as cells.jsonl holds them: in the order their cells finished."""
    return [json.loads(line) for line in (run / "cells.jsonl").read_text().splitlines()]


def test_jobs_give_the_records_of_one_cell_at_a_time_in_the_grids_order(tmp_path: Path, bench) -> None:
    runs = {}
    for name, executor, jobs in (("alone", "local", "1"), ("pool", "subprocess", "2")):
        runs[name] = tmp_path / name
        assert bench("run", *ACCURACY, "--kinds", "accuracy,efficiency", "--efficiency-lengths", "64,128",
                     "--executor", executor, "--jobs", jobs, "--out", runs[name]) == 0
    alone, pool = read_records(runs["alone"]), read_records(runs["pool"])
    assert [r["key"] for r in alone] == [r["key"] for r in pool]  # read back in the grid's order
    assert len(alone) == 3 * 2 * 2 + 3 * 2 and {r["status"] for r in pool} == {"ok"}
    assert [comparable(r["result"]) for r in alone if r["kind"] == "accuracy"] == [
        comparable(r["result"]) for r in pool if r["kind"] == "accuracy"]
    kinds = [r["kind"] for r in file_order(runs["pool"])]  # efficiency cells were timed after the pool
    assert kinds == sorted(kinds) and kinds.count("efficiency") == 6


def test_a_hang_holds_only_its_own_job(tmp_path: Path, bench) -> None:
    out = tmp_path / "run"
    assert bench("run", "--plugin", FAULTS, "--profile", "smoke", "--variants", "fault-hang,linear,dot-product,local",
                 "--tasks", "copy", "--lengths", "16", "--seeds", "0", "--kinds", "accuracy", "--threads", "1",
                 "--executor", "subprocess", "--jobs", "2", "--max-cell-seconds", "20", "--out", out, "--quiet") == 0
    finished = [(r["variant"], r["status"]) for r in file_order(out)]
    # the second job ran the three other cells while the first one's hang used up its budget (20 s:
    # room for three smoke cells and a worker's start on a crowded machine)
    assert sorted(finished[:3]) == [("dot-product", "ok"), ("linear", "ok"), ("local", "ok")], finished
    assert finished[3:] == [("fault-hang", "timeout")], finished


def test_every_status_is_recorded_by_a_pool(tmp_path: Path, bench) -> None:
    variants = [*EXPECTED, "fault-segfault"]
    out = tmp_path / "run"
    assert bench("run", "--plugin", FAULTS, "--profile", "smoke", "--variants", ",".join(variants),
                 "--tasks", "translation", "--kinds", "accuracy", "--executor", "subprocess", "--jobs", "3",
                 "--device", "cpu", "--out", out, "--quiet") == 0
    records = by_variant(out)
    for variant, (status, message) in EXPECTED.items():
        assert records[variant]["status"] == status and message in records[variant]["message"], records[variant]
    assert records["fault-segfault"]["status"] == "error" and "SIGSEGV" in records["fault-segfault"]["message"]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_sigterm_ends_every_worker_of_a_pool(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", "run", "--plugin", FAULTS,
                             "--profile", "smoke", "--variants", "fault-hang", "--tasks", "copy", "--lengths", "16",
                             "--seeds", "0,1,2", "--kinds", "accuracy", "--threads", "1", "--executor", "subprocess",
                             "--jobs", "2", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(workers) < 2:  # the pool's threads start them: any task's children
            time.sleep(0.1)
            workers = [int(pid) for task in Path(f"/proc/{proc.pid}/task").glob("*") for pid in _children(task)]
        assert len(workers) == 2, ("two workers did not start", proc.poll())
        time.sleep(3)  # past their imports, into their cells
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:  # a failed wait must not leave the run (and its workers) sleeping on
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM and err.strip().splitlines() == ["bench: terminated"], err
    assert all(_gone_within(pid, 5) for pid in workers)
    assert not (out / "cells.jsonl").exists() or not read_records(out)  # no hung cell was recorded as done


def _children(task: Path) -> list[str]:
    try:
        return (task / "children").read_text().split()
    except FileNotFoundError:  # a thread that ended while we looked
        return []


@pytest.mark.parametrize("args, expected", [
    (["--jobs", "2"], "--jobs 2: the local executor computes in this process"),
    (["--jobs", "0", "--executor", "subprocess"], "--jobs"),
])
def test_jobs_the_executor_cannot_run_are_one_line(tmp_path: Path, bench_output, args, expected) -> None:
    code, out, err = bench_output("run", *ACCURACY, "--out", tmp_path / "run", *args)
    assert code == 2 and expected in one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_an_executor_given_again_on_resume_drops_the_runs_jobs(tmp_path: Path, bench_output) -> None:
    out = tmp_path / "run"
    first = ["--variants", "linear", "--tasks", "copy", "--lengths", "16", "--kinds", "accuracy", "--profile", "smoke"]
    assert bench_output("run", *first, "--seeds", "0", "--executor", "subprocess", "--jobs", "2", "--out", out,
                        "--quiet")[0] == 0
    env = json.loads((out / "env.json").read_text())
    assert env["options"]["jobs"] == 2 and env["options"]["executor"] == "subprocess"
    code, _, err = bench_output("run", "--resume", out, "--executor", "subprocess", "--dry-run")
    assert code == 0 and "--jobs 2" in err  # the same executor again: the run's --jobs with it
    code, _, err = bench_output("run", "--resume", out, "--executor", "local", "--quiet")
    assert code == 0 and "--jobs" not in err  # not "--jobs 2: the local executor …"


@pytest.mark.parametrize(("jobs", "threads", "advice"), [("8", "1", "--jobs 2 fits"), ("2", "2", "--threads 1 fits"),
                                                          ("3", "4", "--jobs 2 --threads 1 fits")])
def test_jobs_that_crowd_the_cores_get_advice_that_fits(bench_output, monkeypatch, jobs, threads, advice) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    code, _, err = bench_output("run", "--profile", "smoke", "--executor", "subprocess", "--jobs", jobs, "--threads",
                                threads, "--dry-run")
    each = "1 thread" if threads == "1" else f"{threads} threads"
    assert code == 0 and err == (f"bench: warning: --jobs {jobs} × {each} a cell exceeds this machine's 2 "
                                 f"cores; cells will contend for them ({advice})\n")


def test_threads_past_the_cores_are_warned_of_and_jobs_only_where_accuracy_cells_run_in_a_pool(
    bench_output, monkeypatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    efficiency = ("run", "--profile", "smoke", "--variants", "linear", "--kinds", "efficiency", "--dry-run")
    code, _, err = bench_output(*efficiency, "--threads", "64")
    assert code == 0 and err == ("bench: warning: --threads 64 exceeds this machine's 2 cores; each cell's threads will "
                                 "contend for them (and every efficiency cell's timing with them) (--threads 2 fits)\n")
    code, _, err = bench_output(*efficiency, "--executor", "subprocess", "--jobs", "2", "--threads", "2")
    assert code == 0 and "warning" not in err  # efficiency cells run one at a time, whatever --jobs


def test_dry_run_bounds_a_pool_by_grahams_bound(tmp_path: Path, bench_output) -> None:
    code, out, _ = bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks", "copy",
                                "--seeds", "0,1,2,3", "--lengths", "16", "--kinds", "accuracy",
                                "--max-cell-seconds", "60", "--executor", "subprocess", "--jobs", "2", "--dry-run")
    assert code == 0
    # 4 cells of at most 60 s, each after up to 60 s of layer checks, on 2 jobs: 4·120/2 + (1 - 1/2)·120 = 300 s
    assert ("at most 5 min if every cell used its whole budget (60 s a cell, up to 60 s of layer checks before an "
            "accuracy cell, 2 accuracy cells at a time)") in " ".join(
        out.split()), out


def test_records_read_back_in_the_grids_order_whatever_order_they_finished_in(tmp_path: Path) -> None:
    """Grid labels keep the options' given order and quote values with commas; records sort theirs
    and carry the profile's task options too: each still finds its place."""
    sweep = plan_sweep(SweepRequest(
        profile="smoke", variants="local(window=4, kernel=eager),linear,local(window=4)",
        tasks="distance(distances='8,16'),copy(num_symbols=4),copy", lengths=(48, 32), seeds=(1, 0),
        efficiency_lengths=(128, 64), kinds=("accuracy", "efficiency")))
    planned = [c.to_dict() for c in sweep.cells]
    planned[-1]["task_options"] = {"unused": 1}  # an efficiency cell: its task plays no part
    copy = next(i for i, c in enumerate(planned) if c["task"] == "copy" and not c["task_options"])
    planned[copy]["task_options"] = {"sequence_kind": "x"}  # as a profile's task option would add it
    with RunStore.create(tmp_path / "run", grid=sweep.grid, env={}) as store:
        for cell in reversed(planned):
            store.append({**cell, "status": "error", "message": "x", "result": None, "seconds": 0.0})
        assert [r["key"] for r in store.records()] == [c["key"] for c in planned]
    assert [r["key"] for r in read_records(tmp_path / "run")] == [c["key"] for c in planned]
    assert sweep.grid["variants"][0] == "local(window=4, kernel=eager)"  # not a record's own label
    assert sweep.grid["tasks"][0] == "distance(distances='8,16')"


# ---------------------------------------------------------------------------- --executor ray
HAS_RAY = getattr(importlib.util.find_spec("ray"), "origin", None) not in (None, "namespace")


@pytest.mark.skipif(HAS_RAY, reason="Ray is installed here")
def test_ray_without_ray_is_one_line(tmp_path: Path, bench_output) -> None:
    code, _, err = bench_output("run", *ACCURACY, "--executor", "ray", "--out", tmp_path / "run")
    assert code == 2 and "--executor ray: Ray is not installed (pip install 'attnbench[ray]')" in one_error_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_RAY, reason="needs Ray (attnbench[ray])")
def test_ray_actors_give_the_records_of_local_cells_and_every_status(tmp_path: Path, bench) -> None:
    """A real local Ray instance (slow to start: one test does it all)."""
    assert bench("run", *ACCURACY, "--kinds", "accuracy", "--out", tmp_path / "local") == 0
    assert bench("run", *ACCURACY, "--kinds", "accuracy", "--executor", "ray", "--jobs", "2", "--out", tmp_path / "ray") == 0
    local, ray = read_records(tmp_path / "local"), read_records(tmp_path / "ray")
    assert [comparable(r["result"]) for r in local] == [comparable(r["result"]) for r in ray]
    out = tmp_path / "faults"
    variants = [*EXPECTED, "fault-segfault", "fault-hang"]
    assert bench("run", "--plugin", FAULTS, "--profile", "smoke", "--variants", ",".join(variants), "--tasks",
                 "translation", "--kinds", "accuracy", "--executor", "ray", "--max-cell-seconds", "5",
                 "--threads", "1", "--out", out, "--quiet") == 0
    records = by_variant(out)
    for variant, (status, message) in EXPECTED.items():
        assert records[variant]["status"] == status and message in records[variant]["message"], records[variant]
    assert records["fault-segfault"]["status"] == "error" and "Ray actor died" in records["fault-segfault"]["message"]
    assert records["fault-hang"]["status"] == "timeout"


class FakeRay(types.ModuleType):
    """Just enough of Ray for RayExecutor: each actor call returns (or raises) the next outcome
    of a script, so that every way a Ray call ends can be tried without Ray."""

    class exceptions:  # noqa: N801 — ray.exceptions
        class RayError(Exception):
            pass

        class GetTimeoutError(RayError, TimeoutError):
            pass

        class OutOfMemoryError(RayError):
            pass

        class ActorDiedError(RayError):
            pass

    def __init__(self, outcomes: list, *, start: list | None = None, nodes: list | None = None) -> None:
        super().__init__("ray")
        self.__spec__ = importlib.machinery.ModuleSpec("ray", None, origin=__file__)
        self.outcomes, self.start = list(outcomes), list(start or [])
        self._nodes = nodes if nodes is not None else [{"Alive": True, "Resources": {"CPU": 4.0}}]
        self.killed = 0
        self.options: dict = {}
        self.initialized = True
        self.init_cwd: str | None = None

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        """As Ray's: it notes the current directory (its workers' sys.path) and sets its own
        SIGTERM handler; `interrupt_init` plays a SIGTERM that arrives meanwhile."""
        self.init_cwd, self.init_kwargs = os.getcwd(), kwargs
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(15))
        if getattr(self, "interrupt_init", False):
            sys.exit(15)  # what Ray's handler does
        self.initialized = True

    def shutdown(self) -> None:
        self.shut_down = True

    def nodes(self) -> list:
        return self._nodes

    def remote(self, **options):
        self.options = options
        fake = self

        class Handle:
            def __init__(self, plugins):
                if getattr(fake, "create_error", None) is not None:
                    raise fake.create_error
                self.ready = SimpleNamespace(remote=lambda: fake.start.pop(0) if fake.start else 123)
                self.run = SimpleNamespace(remote=self.submit)

            def submit(self, cell, plan):
                if getattr(fake, "submit_error", None) is not None:
                    raise fake.submit_error
                return fake.outcomes.pop(0)

        return lambda cls: SimpleNamespace(remote=Handle)

    def get(self, outcome, timeout=None):
        self.timeouts = [*getattr(self, "timeouts", []), timeout]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def kill(self, actor) -> None:
        self.killed += 1


def ray_executor(monkeypatch, fake: FakeRay):
    from attnbench.runner.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", fake)
    return RayExecutor(smoke_plan(max_cell_seconds=5))


CELL = Cell.make("accuracy", "linear", {}, "copy", {}, 16, 0)


def test_ray_executor_turns_each_way_a_cell_ends_into_its_record(monkeypatch) -> None:
    errors = FakeRay.exceptions
    fake = FakeRay([
        {"key": CELL.key, "status": "ok"},  # the actor's own record, as it is
        errors.GetTimeoutError("no answer"),
        errors.ActorDiedError("The actor died unexpectedly before finishing this task.\n\tpid: 7\n"
                              "Task was killed due to the node running low on memory. Some common causes ..."),
        errors.OutOfMemoryError("evicted"),
        errors.ActorDiedError("The actor died unexpectedly before finishing this task.\n\tpid: 8\nWorker exit type: "
                              "SYSTEM_ERROR. Some common causes include: (1) the OOM killer due to high memory usage"),
    ])
    executor = ray_executor(monkeypatch, fake)
    records = [executor.run(CELL) for _ in range(5)]
    assert records[0] == {"key": CELL.key, "status": "ok"}
    assert [r["status"] for r in records[1:]] == ["timeout", "oom", "oom", "error"]
    # the actor's alarms allow the layer checks max(5, 10) s and the cell 5 s: the parent waits for both + 30 s
    assert records[1]["message"] == "over the 5 s cell budget and its layer checks' 10 s; Ray actor killed"
    assert set(fake.timeouts) == {600, 45}  # each actor's start, each cell's 10 + 5 + 30 s
    assert records[4]["message"] == ("Ray actor died: The actor died unexpectedly before finishing this task. "
                                     "Worker exit type: SYSTEM_ERROR.")  # one line: ids and the causes left out
    assert fake.killed == 4  # each lost cell's actor, and a fresh one for the next cell
    assert fake.options == {"num_cpus": 1, "num_gpus": 0, "max_restarts": 0}


def test_a_ray_actor_that_cannot_start_stops_the_sweep_only_before_any_started(monkeypatch) -> None:
    from attnbench.runner.executors import WorkerStartError

    died = FakeRay.exceptions.ActorDiedError("The actor died because of an error raised in its creation task, "
                                             "ModuleNotFoundError: No module named 'attnbench'")
    executor = ray_executor(monkeypatch, FakeRay([], start=[died]))
    with pytest.raises(WorkerStartError, match="the actor could not start .*No module named 'attnbench'"):
        executor.run(CELL)
    fake = FakeRay([FakeRay.exceptions.ActorDiedError("gone"), {"key": CELL.key, "status": "ok"}], start=[1, died, 2])
    executor = ray_executor(monkeypatch, fake)
    assert executor.run(CELL)["status"] == "error"  # the first actor started, then died in its cell
    record = executor.run(CELL)  # its replacement cannot start: this cell only
    assert record["status"] == "error" and "could not start" in record["message"]
    assert executor.run(CELL) == {"key": CELL.key, "status": "ok"}  # the next cell gets a fresh actor


def _inside_compiled_code(interruption: BaseException) -> SystemError:
    """What CPython makes of a signal handler's exception raised while C code runs: that code's
    SystemError, with the interruption as its cause."""
    try:
        try:
            raise interruption
        except BaseException as inner:
            raise SystemError("<built-in method __new__ of type object> returned a result with an exception set") from inner
    except SystemError as outer:
        return outer


@pytest.mark.parametrize("where", ["actor start", "actor creation", "cell", "cell submission"])
def test_a_sigterm_inside_ray_s_compiled_code_is_bench_s_not_the_actor_s(monkeypatch, where) -> None:
    from attnbench.cli import Terminated

    stopped = _inside_compiled_code(Terminated())
    fake = FakeRay([stopped]) if where == "cell" else FakeRay([], start=[stopped] if where == "actor start" else [])
    fake.create_error = stopped if where == "actor creation" else None
    fake.submit_error = stopped if where == "cell submission" else None
    executor = ray_executor(monkeypatch, fake)
    # before: 'the actor could not start (… returned a result with an exception set)', exit 1, not 143
    with pytest.raises(Terminated):
        executor.run(CELL)
    executor = ray_executor(monkeypatch, FakeRay([_inside_compiled_code(KeyboardInterrupt())]))
    with pytest.raises(KeyboardInterrupt):
        executor.run(CELL)


def _chained(error: Exception, earlier: BaseException, *, suppress: bool = False) -> Exception:
    """`error` raised while `earlier` was being handled (its __context__), or `from None`."""
    try:
        try:
            raise earlier
        except BaseException:
            if suppress:
                raise error from None
            raise error
    except Exception as raised:
        return raised


def test_only_a_signal_or_its_wrapper_counts_as_an_interruption() -> None:
    import asyncio

    from attnbench.cli import Terminated
    from attnbench.runner.ray_executor import interruption

    stopped = Terminated()
    assert interruption(stopped) is stopped and interruption(_inside_compiled_code(stopped)) is stopped
    assert isinstance(interruption(_inside_compiled_code(KeyboardInterrupt())), KeyboardInterrupt)
    assert isinstance(interruption(SystemExit(signal.SIGTERM)), SystemExit)  # Ray's own SIGTERM handler
    # ordinary errors that merely carry another BaseException along are themselves (the review's cases:
    # asyncio.wait_for's TimeoutError comes from a CancelledError; an error raised while a SystemExit was
    # handled, from None)
    assert interruption(_chained(TimeoutError("init timed out"), asyncio.CancelledError())) is None
    assert interruption(_chained(ConnectionError("refused"), SystemExit(3), suppress=True)) is None
    assert interruption(_chained(ConnectionError("refused"), KeyboardInterrupt())) is None  # not a SystemError
    assert interruption(SystemExit(3)) is None


def test_a_sigterm_inside_ray_init_s_compiled_code_is_bench_s(monkeypatch) -> None:
    from attnbench.cli import Terminated
    from attnbench.runner.ray_executor import connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = FakeRay([])
    fake.initialized = False

    def init(**kwargs):
        raise _inside_compiled_code(Terminated())

    fake.init = init
    monkeypatch.setitem(sys.modules, "ray", fake)
    ours = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated):  # not 'cannot start or reach a local Ray instance'
            connect()
    finally:
        signal.signal(signal.SIGTERM, ours)
    assert fake.shut_down  # what init had started is stopped


HARD_EXIT_SCRIPT = """
import atexit, sys
from attnbench.cli import Terminated, main
from attnbench.runner import ray_executor, sweep

atexit.register(lambda: print("finalized", flush=True))  # Python's exit: skipped by a hard exit
if AS_COMMAND:
    sys.argv[0] = "bench"  # as the console script: a host program calling main() is never ended by it
sweep.check_available = lambda: None  # no Ray needed: connect below stands in for it

def connect():  # a ray.init that a SIGTERM cut short, as the real connect() leaves it
    empty = ray_executor._empty_directory()
    print(empty, flush=True)
    ray_executor._HALF_STARTED = HALF_STARTED
    raise Terminated()

ray_executor.connect = connect
main(["run", "--profile", "smoke", "--variants", "linear", "--tasks", "copy", "--kinds", "accuracy",
      "--executor", "ray", "--out", sys.argv[1]])
"""


@pytest.mark.parametrize(("half_started", "as_command"), [(True, True), (False, True), (True, False)])
def test_a_ray_init_cut_short_by_sigterm_ends_at_once_with_143(tmp_path, half_started, as_command) -> None:
    """Ray's C++ failure-signal handler, met inside ray.init, left a core worker whose destructors
    aborted the process after Python's finalization: exit 134 instead of 143 (4 of 26 SIGTERMs).
    Only the `bench` command ends at once: main() called by a host program returns through sys.exit."""
    script = HARD_EXIT_SCRIPT.replace("HALF_STARTED\n", f"{half_started}\n").replace("AS_COMMAND", str(as_command))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    empty, *rest = done.stdout.splitlines()
    assert done.returncode == 128 + signal.SIGTERM and done.stderr.strip().endswith("bench: terminated")
    assert rest == ([] if half_started and as_command else ["finalized"])  # a hard exit, or Python's own
    assert not Path(empty).exists()  # the directory Ray was started from is removed either way
    assert not (tmp_path / "run").exists()  # Ray is reached before anything is written


def test_ray_pool_size_is_what_the_cluster_holds(monkeypatch) -> None:
    from attnbench.errors import AttnbenchError
    from attnbench.runner.ray_executor import cluster_slots

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 3.0}},
             {"Alive": False, "Resources": {"CPU": 64.0}}]
    monkeypatch.setitem(sys.modules, "ray", FakeRay([], nodes=nodes))
    assert cluster_slots(smoke_plan(threads=2)) == 4 + 1  # a dead node holds nothing
    assert cluster_slots(smoke_plan(threads=2, device="cuda")) == 1
    with pytest.raises(AttnbenchError, match="no machine of the Ray cluster has 16 CPUs"):
        cluster_slots(smoke_plan(threads=16))


def test_ray_starts_from_an_empty_directory_and_gives_bench_its_signal_handlers_back(monkeypatch, tmp_path) -> None:
    from attnbench.runner.ray_executor import connect

    (tmp_path / "attnbench").mkdir()  # a clone's root: Ray's workers would import this folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = FakeRay([])
    fake.initialized = False
    monkeypatch.setitem(sys.modules, "ray", fake)
    ours = signal.getsignal(signal.SIGTERM)
    try:
        assert connect() is fake and fake.initialized
    finally:
        restored = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, ours)
    assert restored is ours  # not Ray's, which would end bench without its line and exit code
    assert fake.init_cwd != str(tmp_path) and os.listdir(fake.init_cwd) == []  # an empty one
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize("quiet", [False, True])
def test_ray_under_quiet_logs_errors_only_and_forwards_no_worker_output(monkeypatch, quiet) -> None:
    import logging

    from attnbench.runner import ray_executor

    monkeypatch.setattr(ray_executor, "_QUIET", False)  # restored after the test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = FakeRay([])
    fake.initialized = False
    monkeypatch.setitem(sys.modules, "ray", fake)
    ray_executor.quiet(quiet)
    ours = signal.getsignal(signal.SIGTERM)
    try:
        ray_executor.connect()
    finally:
        signal.signal(signal.SIGTERM, ours)
    # Ray 2.60's "Token authentication is enabled" line is a warning: kept off a --quiet run
    assert (fake.init_kwargs["logging_level"], fake.init_kwargs["log_to_driver"]) == (
        (logging.ERROR, False) if quiet else (logging.WARNING, True))


def test_bench_run_quiet_quiets_ray_before_it_reaches_the_cluster(monkeypatch, bench_output) -> None:
    from attnbench.errors import AttnbenchError
    from attnbench.runner import ray_executor

    monkeypatch.setattr(ray_executor, "_QUIET", False)
    monkeypatch.setattr("attnbench.runner.sweep.check_available", lambda: None)  # no Ray needed here
    seen = []

    def reach(executor, plan, jobs):
        seen.append(ray_executor._QUIET)
        raise AttnbenchError("stopped here")

    monkeypatch.setattr("attnbench.cli_run.resolve_jobs", reach)
    run = ("run", "--profile", "smoke", "--variants", "linear", "--tasks", "copy", "--kinds", "accuracy",
           "--executor", "ray")
    code, _, err = bench_output(*run, "--quiet")
    assert (code, err, seen) == (2, "bench: error: stopped here\n", [True])
    code, _, err = bench_output(*run)  # a later run without --quiet is not quiet
    assert (code, seen) == (2, [True, False])


def test_a_ray_address_that_does_not_answer_is_one_line_at_once(monkeypatch) -> None:
    from attnbench.errors import AttnbenchError
    from attnbench.runner.ray_executor import connect

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    fake = FakeRay([])
    fake.initialized = False
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(AttnbenchError, match=f"--executor ray: cannot reach the cluster at RAY_ADDRESS=127.0.0.1:{port}: "):
        connect()
    assert fake.init_cwd is None  # Ray was not asked (it would retry for minutes)


def test_more_jobs_than_the_ray_cluster_holds_are_refused(monkeypatch) -> None:
    from attnbench.errors import AttnbenchError
    from attnbench.runner.pool import resolve_jobs

    monkeypatch.setitem(sys.modules, "ray", FakeRay([], nodes=[{"Alive": True, "Resources": {"CPU": 2.0}}]))
    assert resolve_jobs("ray", smoke_plan(threads=1), None) == 2
    assert resolve_jobs("ray", smoke_plan(threads=1), 2) == 2
    with pytest.raises(AttnbenchError, match=r"--jobs 3: the Ray cluster holds 2 cells at once \(1 CPUs each\); give"):
        resolve_jobs("ray", smoke_plan(threads=1), 3)
    assert resolve_jobs("subprocess", smoke_plan(), None) == 1


def test_an_abandoned_executor_takes_no_further_cell(monkeypatch) -> None:
    from attnbench.runner.executors import SubprocessExecutor

    fake = FakeRay([{"key": CELL.key, "status": "ok"}])
    ray = ray_executor(monkeypatch, fake)
    ray.close(abandon=True)
    process = SubprocessExecutor(smoke_plan())
    process.close(abandon=True)
    for executor in (ray, process):  # a cell that waited for its turn while the sweep was interrupted
        record = executor.run(CELL)
        assert record["status"] == "error" and record["message"] == "not run: the sweep stopped"
    assert process.proc is None and fake.outcomes  # no worker started, no actor asked


class StubExecutor:
    """An executor that runs nothing: it answers ok, or fails to start its worker, and notes when
    it is closed."""

    def __init__(self, log: list, name: str, fail_start: bool = False) -> None:
        self.log, self.name, self.fail_start, self.started = log, name, fail_start, 0

    def run(self, cell: Cell) -> dict:
        from attnbench.runner.executors import WorkerStartError

        if self.fail_start:
            raise WorkerStartError(f"{self.name}: the worker process could not start")
        self.started = 1
        time.sleep(0.05)
        self.log.append(("run", self.name, cell.kind))
        return {**cell.to_dict(), "status": "ok", "message": "", "result": {}, "seconds": 0.0}

    def close(self, *, abandon: bool = False) -> None:
        self.log.append(("close", self.name, abandon))


def test_timing_cells_run_after_the_pools_other_workers_are_closed(monkeypatch, tmp_path) -> None:
    import attnbench.runner.pool as pool_module

    log: list = []
    names = iter(["first", "second"])
    monkeypatch.setattr(pool_module, "make_executor", lambda name, plan: StubExecutor(log, next(names)))
    sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="copy", lengths=(16,), seeds=(0, 1, 2),
                                    efficiency_lengths=(64,), kinds=("accuracy", "efficiency"), executor="subprocess",
                                    jobs=2))
    with RunStore.create(tmp_path / "run", grid=sweep.grid, env={}) as store:
        run_sweep(sweep, store, executor="subprocess", jobs=2)
    timed = log.index(("run", "first", "efficiency"))
    assert ("close", "second", False) in log[:timed]  # the other job's worker was gone before timing
    assert all(entry[2] == "accuracy" for entry in log[:timed] if entry[0] == "run")


def test_a_pool_whose_other_job_started_a_worker_loses_only_the_cell_of_one_that_cannot(monkeypatch) -> None:
    import attnbench.runner.pool as pool_module

    log: list = []
    stubs = iter([StubExecutor(log, "works"), StubExecutor(log, "broken", fail_start=True)])
    monkeypatch.setattr(pool_module, "make_executor", lambda name, plan: next(stubs))
    pool = pool_module.CellPool("subprocess", smoke_plan(), 2)
    pool.executors[0].started = 1  # the first job's worker is up
    cells = [Cell.make("accuracy", "linear", {}, "copy", {}, 16, seed) for seed in range(6)]
    statuses = sorted(r["status"] for r in pool.run(cells))
    assert "ok" in statuses and set(statuses) <= {"ok", "error"} and len(statuses) == 6
    broken = StubExecutor(log, "alone", fail_start=True)
    monkeypatch.setattr(pool_module, "make_executor", lambda name, plan: broken)
    with pytest.raises(Exception, match="could not start"):  # no job ever started one: the sweep stops
        list(pool_module.CellPool("subprocess", smoke_plan(), 2).run(cells))


def test_a_worker_whose_cell_timed_out_is_replaced() -> None:
    """Its alarm may have struck anywhere, an import included: the next cell gets a fresh worker."""
    from attnbench.plugins import import_plugin
    from attnbench.runner.executors import SubprocessExecutor

    import_plugin(FAULTS)
    executor = SubprocessExecutor(smoke_plan(max_cell_seconds=2, plugins=(FAULTS,)))
    try:
        record = executor.run(Cell.make("accuracy", "fault-hang", {}, "copy", {}, 16, 0))
        assert record["status"] == "timeout" and executor.proc is None
        assert executor.run(CELL)["status"] == "ok" and executor.started == 2
    finally:
        executor.close(abandon=True)


def test_a_worker_leaves_ctrl_c_to_its_parent() -> None:
    """Ctrl-C reaches the terminal's whole process group; the parent stops the sweep and kills the
    worker, whose own KeyboardInterrupt would print a traceback above `bench: aborted`."""
    from attnbench.runner.executors import READY, WORKER_COMMAND
    from attnbench.runner.worker import PARENT_ENV

    worker = subprocess.Popen(list(WORKER_COMMAND), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, PARENT_ENV: str(os.getpid())})
    try:
        assert worker.stdout.readline().strip() == READY
        worker.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert worker.poll() is None
        worker.stdin.close()  # between cells, a closed stdin ends it
        assert worker.wait(timeout=30) == 0 and "KeyboardInterrupt" not in worker.stderr.read()
    finally:
        worker.kill()
        worker.wait()


def test_sigterm_while_ray_starts_is_benchs_own_and_stops_what_ray_started(monkeypatch) -> None:
    from attnbench.runner.ray_executor import connect

    class Terminated(BaseException):
        pass

    def benchs(signum, frame):  # as attnbench.cli's handler: raises, so the command unwinds
        raise Terminated()

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = FakeRay([])
    fake.initialized, fake.interrupt_init = False, True
    monkeypatch.setitem(sys.modules, "ray", fake)
    before = signal.signal(signal.SIGTERM, benchs)
    try:
        with pytest.raises(Terminated):  # not Ray's SystemExit(15): bench prints its line, exits 143
            connect()
        assert signal.getsignal(signal.SIGTERM) is benchs and fake.shut_down
    finally:
        signal.signal(signal.SIGTERM, before)
    from attnbench.runner.ray_executor import must_exit_at_once

    assert must_exit_at_once()  # Ray's half-made core worker must not see Python's finalization


def test_a_worker_imports_what_cells_import_lazily_before_it_says_ready() -> None:
    """A worker started after another's timeout took them (1.4 s here) inside its first cell's wall
    seconds: that cell's record depended on what ran before it. Here no cell is sent at all."""
    from attnbench.runner.executors import READY
    from attnbench.runner.worker import PARENT_ENV

    script = ("import sys, attnbench.runner.execute as e, attnbench.runner.worker as w; "
              "real = e.import_what_cells_import_lazily; "
              "e.import_what_cells_import_lazily = lambda: (real(), print('imported', 'torch._dynamo' in sys.modules, "
              "file=sys.stderr, flush=True)); w.main()")
    # stderr into the records' pipe: the worker's own lines and its records in the order written
    worker = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, PARENT_ENV: str(os.getpid())})
    try:
        lines = []
        while not lines or lines[-1] != READY:
            lines.append(worker.stdout.readline().strip())
            assert lines[-1] or worker.poll() is None, lines  # EOF before READY: the worker failed
    finally:
        worker.stdin.close()  # no cell: a closed stdin ends it
        assert worker.wait(timeout=60) == 0
    assert "imported True" in lines[:-1], lines  # before READY
