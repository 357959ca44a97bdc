"""Reliability (issue 9): faults lose nothing, bad input is one line — the gaps the other suites leave.

docs/reliability.md tables every fault and bad input with the test that proves it; the ones
tested here are repeated kills, a corrupted middle line, `bench check` on faulty variants, an
unwritable or full disk, data files through the CLI, a task's maximum length, a fuzz of every
`bench run` option through the entry point, and that results are never pickled.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import multiprocessing
import os
import random
import re
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import event, given, settings
from hypothesis import strategies as st

from attnbench import cli_run
from attnbench.cli import main
from attnbench.runner import store as store_module
from attnbench.runner import sweep as sweep_module
from attnbench.runner.store import StoreWarning, read_records
from attnbench.tasks.base import TASKS
from support import CAPPED, one_error_line

ROOT = Path(__file__).resolve().parents[1]
FAULTS = str(Path(__file__).parent / "fixtures" / "fault_variants.py")
TIMING_FIELDS = {"train_seconds", "tokens_per_s", "curve_seconds"}  # wall clock: differ run to run
# six accuracy cells of about a second each: small enough to kill and resume several times
GRID = ["--profile", "smoke", "--variants", "multi-head,linear", "--tasks", "copy", "--lengths", "16",
        "--seeds", "0,1,2", "--kinds", "accuracy", "--threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(sandbox):
    """--plugin registrations (variants and tasks) made by a test end with it."""
    with TASKS.temporary():
        yield


def deterministic(record: dict) -> dict:
    """A record without its wall-clock fields."""
    record = {k: v for k, v in record.items() if k != "seconds"}
    if isinstance(record.get("result"), dict):
        record["result"] = {k: v for k, v in record["result"].items() if k not in TIMING_FIELDS}
    return record


def raw_lines(run: Path) -> list[str]:
    cells = run / "cells.jsonl"
    return [line for line in cells.read_text(errors="replace").split("\n") if line] if cells.exists() else []


def parsed(lines: list[str]) -> list[dict]:
    """The complete records among raw lines (torn or corrupted ones dropped)."""
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _sigint_as_from_a_terminal() -> None:
    """In a child about to exec Python: SIGINT at its default, so Python raises KeyboardInterrupt for
    it, as under a terminal (a test run started as a shell's background job inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---------------------------------------------------------------------------- repeated SIGKILL
def _bench_child(argv: list[str], err: str = os.devnull) -> None:
    """A forked `bench`: the test process's imports, none of a fresh interpreter's start-up; stderr to `err`.

    Ctrl-C reaches it as from a terminal: a test run started as a shell's background job (`pytest &`
    in a script) inherits SIGINT ignored, as the shell sets it for such jobs, and so would the
    child, which then ran every cell and exited 0 however often it was interrupted."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the child exits with main)
    sys.stderr = open(err, "w", buffering=1)  # noqa: SIM115
    os.dup2(sys.stdout.fileno(), 1)
    os.dup2(sys.stderr.fileno(), 2)
    main(argv)


def test_repeated_sigkill_and_resume_record_every_cell_exactly_once(tmp_path: Path, bench) -> None:
    reference = tmp_path / "reference"
    assert bench("run", *GRID, "--out", str(reference)) == 0
    expected = {r["key"]: deterministic(r) for r in read_records(reference)}
    assert len(expected) == 6
    # a run directory holds JSON only (plus the lock): never a pickle
    assert {p.name for p in reference.iterdir()} <= {"env.json", "grid.json", "cells.jsonl", "run.lock"}

    out, fork, rng = tmp_path / "killed", multiprocessing.get_context("fork"), random.Random(9)
    landed = []  # complete records in the file after each kill
    for round_ in range(4):
        where = "--resume" if (out / "grid.json").exists() else "--out"  # killed before the run existed
        before = len(parsed(raw_lines(out)))
        # the first kill may land anywhere from start-up on; the others after 1-2 new records and a
        # random part of the next cell
        target, extra = before + (rng.randint(1, 2) if round_ else 0), rng.uniform(0.0, 0.6)
        child = fork.Process(target=_bench_child, args=(["run", *GRID, where, str(out)],))
        child.start()
        deadline = time.time() + 60
        while time.time() < deadline and child.is_alive() and len(parsed(raw_lines(out))) < target:
            time.sleep(0.02)
        time.sleep(extra)
        child.kill()  # SIGKILL
        child.join()
        landed.append(len(parsed(raw_lines(out))))
        complete = parsed(raw_lines(out))
        assert len({r["key"] for r in complete}) == len(complete), "a kill duplicated a record"
    assert any(0 < n < 6 for n in landed), f"no kill landed mid-sweep: {landed}"

    assert bench("run", *GRID, "--resume" if (out / "grid.json").exists() else "--out", str(out)) == 0
    lines = raw_lines(out)
    complete = parsed(lines)
    keys = [r["key"] for r in complete]
    assert sorted(keys) == sorted(expected), "every cell exactly once"
    assert len(lines) - len(complete) <= 4, "at most one torn line per kill"
    assert {r["key"]: deterministic(r) for r in complete} == expected


def test_ctrl_c_stops_the_run_keeping_every_record(tmp_path: Path, bench) -> None:
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_bench_child, args=(["run", *GRID, "--out", str(out)], str(err)))
    child.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(parsed(raw_lines(out))) < 1:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGINT)
    child.join(60)
    assert child.exitcode == 130
    assert err.read_text().strip() == "bench: aborted"
    kept = parsed(raw_lines(out))
    assert 1 <= len(kept) < 6 and len(raw_lines(out)) == len(kept)  # no torn line either
    assert bench("run", *GRID, "--resume", str(out)) == 0
    assert len(parsed(raw_lines(out))) == len({r["key"] for r in parsed(raw_lines(out))}) == 6


# ---------------------------------------------------------------------------- SIGTERM, a killed parent
HANGING_RUN = ["run", "--plugin", FAULTS, "--profile", "smoke", "--variants", "fault-hang", "--tasks", "copy",
               "--lengths", "16", "--seeds", "0", "--kinds", "accuracy", "--threads", "1", "--quiet"]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which nobody may reap in a container, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_hanging_run(out: Path, executor: str) -> tuple[subprocess.Popen, int | None]:
    """`bench run` of one cell that sleeps an hour; (the process, its worker's pid once the worker
    runs; None for the local executor)."""
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", *HANGING_RUN,
                             "--executor", executor, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.time() + 60
    worker = None
    while time.time() < deadline and worker is None:
        time.sleep(0.1)
        if executor == "local":
            if (out / "grid.json").exists():  # planned; the cell starts next
                time.sleep(2)
                break
        elif found := children.read_text().split():
            worker = int(found[0])
            time.sleep(2)  # past the worker's imports, into the cell
    assert proc.poll() is None, proc.communicate()
    assert executor == "local" or worker is not None, "no worker process appeared"
    return proc, worker


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("executor", ["local", "subprocess"])
def test_sigterm_stops_the_run_in_one_line_and_takes_its_worker_along(tmp_path: Path, executor: str) -> None:
    proc, worker = _start_hanging_run(tmp_path / "run", executor)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["bench: terminated"], err
    if worker is not None:  # killed by the parent, not left to finish its hour
        assert _gone_within(worker, 5)
    FileLock(tmp_path / "run" / "run.lock", timeout=0).acquire()  # released: a resume may take it


CHATTY = """
import sys
from attnbench import register_variant
from attnbench.variants.multi_head import MultiHeadAttention

@register_variant("chatty")
class Chatty(MultiHeadAttention):
    def forward(self, *args, **kwargs):
        print("chatty forward", file=sys.stderr, flush=True)  # to the parent's stderr, from a worker
        return super().forward(*args, **kwargs)
"""


@pytest.mark.parametrize("stderr, executor", [("apart", "local"), ("with stdout", "local"),
                                              ("with stdout", "subprocess")])
def test_a_run_whose_output_reader_goes_away_still_runs_and_records_every_cell(
        tmp_path: Path, stderr: str, executor: str) -> None:
    # `bench run … | head -1`: click ends a command whose stdout pipe closed with exit 1 and no
    # word, which had ended the sweep after its second cell; `2>&1 | head -1` closes stderr with
    # it, for the parent and for its workers, whose cells had failed on a print to stderr
    (tmp_path / "chatty.py").write_text(CHATTY)
    grid = [a for a in GRID if a != "--quiet"]  # the per-cell lines: what the closed pipe meets
    grid[grid.index("--variants") + 1] = "chatty,linear"
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", "run", *grid,
                             "--plugin", str(tmp_path / "chatty.py"), "--executor", executor,
                             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT if stderr == "with stdout" else subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader is gone
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.wait(timeout=120) == 0, err
    assert first.startswith(("ok accuracy ", "chatty forward", "bench: warning"))
    if stderr == "apart":
        assert "bench: the output's reader closed; the run goes on without printing" in err.splitlines()
    assert [r["status"] for r in read_records(tmp_path / "run")] == ["ok"] * 6


# a startup hook (sitecustomize.py on PYTHONPATH): holds `import torch` (the first and slowest of `bench`'s imports)
# until the test has sent its signal, so that the signal lands in the imports every time
HOLD_TORCH = """
import os, sys, time

class HoldTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            open(os.environ["ATTNBENCH_TEST_HELD"], "w").close()
            for _ in range(6000):  # the signal ends this; else the import goes on after a minute
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, HoldTorch())
"""
# what pip writes as the `bench` console script (entry point attnbench.cli:main)
CONSOLE_SCRIPT = "import sys\nfrom attnbench.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"


@pytest.mark.parametrize(("sent", "code", "line"), [(signal.SIGTERM, 143, "bench: terminated"),
                                                   (signal.SIGINT, 130, "bench: aborted")], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("how", ["console script", "python -m attnbench.cli", "python -mattnbench.cli",
                                 "python -m attnbench.benchmarks", "python -m attnbench"])
def test_a_signal_while_bench_still_imports_torch_is_its_one_line_and_exit_code(tmp_path: Path, how: str, sent,
                                                                                 code: int, line: str) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_TORCH)
    (tmp_path / "bench").write_text(CONSOLE_SCRIPT)
    held = tmp_path / "held"
    env = {**os.environ, "ATTNBENCH_TEST_HELD": str(held),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    command = {"console script": [str(tmp_path / "bench"), "ls", "variants"],
               "python -m attnbench.cli": ["-m", "attnbench.cli", "ls", "variants"],
               "python -mattnbench.cli": ["-X", "utf8", "-mattnbench.cli", "ls", "variants"],
               "python -m attnbench.benchmarks": ["-m", "attnbench.benchmarks", "--help"],
               "python -m attnbench": ["-m", "attnbench", "ls", "variants"]}[how]
    proc = subprocess.Popen([sys.executable, *command], env=env, cwd=tmp_path, preexec_fn=_sigint_as_from_a_terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not held.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert held.exists() and proc.poll() is None, proc.communicate()
    proc.send_signal(sent)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.strip(), out) == (code, line, "")  # before: -15 and "", or a traceback and -2


@pytest.mark.parametrize("after", [[], ["-m", "attnbench.cli"]], ids=["alone", "with -m attnbench.cli as its arguments"])
def test_importing_attnbench_as_a_library_leaves_sigterm_alone(after: list[str]) -> None:
    code = ("import signal, attnbench; print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL "
            "and signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    done = subprocess.run([sys.executable, "-c", code, *after], capture_output=True, text=True, timeout=120,
                          preexec_fn=_sigint_as_from_a_terminal)
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker through /proc")
def test_a_worker_whose_bench_run_is_killed_outright_exits_too(tmp_path: Path) -> None:
    proc, worker = _start_hanging_run(tmp_path / "run", "subprocess")
    proc.kill()  # SIGKILL: no clean-up runs in the parent
    proc.communicate(timeout=30)
    assert _gone_within(worker, 10), "the orphaned worker kept running its cell"


def test_a_worker_whose_parent_died_before_it_started_exits_too() -> None:
    """The parent's pid comes from the executor, so a parent killed while the worker was still
    starting (before it could ask for its parent) is noticed as well."""
    from attnbench.runner.worker import PARENT_ENV

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    worker = subprocess.Popen([sys.executable, "-m", "attnbench.runner.worker"], stdin=subprocess.PIPE,
                              env={**os.environ, PARENT_ENV: str(gone.pid)})
    try:  # its stdin stays open: only the check for its parent can end it
        assert worker.wait(timeout=60) == 1
    finally:
        worker.kill()
        worker.wait()


LAZY_IMPORTS_PROBE = """
import contextlib, sys
import attnbench.runner.execute as execute
from attnbench.runner.cells import Cell
from attnbench.runner.profiles import PROFILES

seen = []
limit = execute._time_limit

@contextlib.contextmanager
def probe(seconds):
    seen.append([name in sys.modules for name in execute.LAZY_IMPORTS])
    with limit(seconds):
        yield

execute._time_limit = probe
p = PROFILES["smoke"]
plan = execute.Plan(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=p.efficiency.to_dict(), threads=1)
record = execute.execute_cell(Cell.make("accuracy", "multi-head", {}, "copy", {}, 16, 0), plan)
print(record["status"], seen)
"""


def test_what_a_first_cell_imports_lazily_is_imported_before_its_time_limit_is_armed() -> None:
    """An alarm inside torch._dynamo's first import (an optimizer's first construction) left sympy
    half made in sys.modules, and every later cell of a `--executor local` run failed on it
    (`module 'sympy' has no attribute 'printing'`): those imports come before any alarm."""
    done = subprocess.run([sys.executable, "-c", LAZY_IMPORTS_PROBE], capture_output=True, text=True, timeout=300)
    # two limits armed, the layer checks' and the training's: each after every lazy import
    assert done.stdout.strip() == "ok [[True, True, True, True], [True, True, True, True]]", done.stdout + done.stderr


def test_a_worker_whose_records_reader_has_gone_exits_without_a_traceback() -> None:
    """A parent killed outright closes the pipe the worker answers on; the worker's next record
    finds it broken before its orphan poll does: it ends quietly (before: a BrokenPipeError
    traceback on the terminal after `bench` had gone)."""
    from attnbench.runner.cells import Cell
    from attnbench.runner.execute import Plan
    from attnbench.runner.profiles import PROFILES
    from attnbench.runner.worker import PARENT_ENV

    p = PROFILES["smoke"]
    plan = Plan(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=p.efficiency.to_dict(), threads=1)
    cell = Cell.make("accuracy", "multi-head", {}, "copy", {}, 16, 0)
    worker = subprocess.Popen([sys.executable, "-m", "attnbench.runner.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, PARENT_ENV: str(os.getpid())})
    try:
        worker.stdout.close()  # the reader gone: its READY line, or the record, meets a broken pipe
        worker.stdin.write(json.dumps({"plan": plan.to_dict(), "cell": cell.to_dict()}) + "\n")
        worker.stdin.flush()
        err = worker.stderr.read()
        assert worker.wait(timeout=120) == 1
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
    finally:
        worker.kill()
        worker.wait()


# ---------------------------------------------------------------------------- corrupted line
def test_a_corrupted_middle_line_is_reported_once_and_its_cell_reruns(tmp_path: Path, capsys, bench) -> None:
    out = tmp_path / "run"
    grid = [*GRID]
    grid[grid.index("--seeds") + 1] = "0"  # two cells
    assert bench("run", *grid, "--out", str(out)) == 0
    lines = raw_lines(out)
    assert len(lines) == 2
    broken_key = json.loads(lines[0])["key"]
    (out / "cells.jsonl").write_text(lines[0][:40] + "\x00garbage\n" + lines[1] + "\n")
    capsys.readouterr()

    assert bench("run", *grid, "--resume", str(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench: warning: cells.jsonl line 1 is torn or corrupted; skipped (the cell reruns on resume)"]
    assert [r["key"] for r in parsed(raw_lines(out))] == [json.loads(lines[1])["key"], broken_key]
    with pytest.warns(StoreWarning, match="line 1 "):
        assert {r["key"] for r in read_records(out)} == {broken_key, json.loads(lines[1])["key"]}
    assert bench("report", str(out)) == 0  # the report reads past the line too
    report_err = capsys.readouterr().err
    assert report_err.count("line 1 is torn") == 1 and "Traceback" not in report_err


# ---------------------------------------------------------------------------- bench check
def test_bench_check_reports_faulty_variants_as_fail_with_the_reason(capsys, bench) -> None:
    code = bench("check", "--plugin", FAULTS, "--variants", "fault-nan,fault-raise,fault-shape,fault-oom,fault-exit",
                 "--checks", "shape,finite-grad")
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0]:
            rows[(cells[0], cells[1])] = (cells[2], cells[3])
    assert rows[("fault-nan", "finite-grad")] == ("FAIL", "non-finite output")
    assert rows[("fault-raise", "shape")][0] == "FAIL"
    assert rows[("fault-raise", "shape")][1].startswith("RuntimeError: this variant always raises")
    assert rows[("fault-shape", "shape")] == ("FAIL", "out shape (2, 10, 32) != x shape (2, 11, 32)")
    assert rows[("fault-oom", "shape")][0] == "FAIL" and "can't allocate memory" in rows[("fault-oom", "shape")][1]
    assert rows[("fault-oom", "shape")][1].startswith("RuntimeError: [enforce")  # brackets are text, not markup
    assert rows[("fault-exit", "shape")][0] == "FAIL" and rows[("fault-exit", "shape")][1].startswith("SystemExit: 5")
    assert "10 of 10 checks failed" in out  # a NaN or wrong-shape output fails every check that calls it


# ---------------------------------------------------------------------------- disk
def test_an_unwritable_out_is_refused_before_any_work(tmp_path: Path, capsys, monkeypatch, bench) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("env.json was measured before the output was found unwritable")

    monkeypatch.setattr(sweep_module, "collect", no_work)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder\n")
    target = blocker / "run"
    assert bench("run", *GRID, "--out", str(target)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"bench: error: cannot write to {target}: Not a directory"
    assert blocker.read_text() == "a file, not a folder\n"


def test_a_full_disk_mid_run_stops_cleanly_and_the_run_resumes(tmp_path: Path, capsys, monkeypatch, bench) -> None:
    out = tmp_path / "run"
    real_write = store_module._write_all
    appended = []

    def fills_up(fd: int, data: bytes) -> None:
        if data.startswith(b'{"key"'):
            if len(appended) == 2:  # the third record: half of it fits, then the disk is full
                os.write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            appended.append(data)
        real_write(fd, data)

    monkeypatch.setattr(store_module, "_write_all", fills_up)
    assert bench("run", *GRID, "--out", str(out)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"bench: error: cannot append to {out / 'cells.jsonl'}: No space left on device; the run "
                    f"stopped and the cells recorded before are intact; free space, then rerun with --resume {out}")
    with pytest.warns(StoreWarning, match="line 3 "):  # the half record
        assert [r["key"] for r in read_records(out)] == [json.loads(d)["key"] for d in appended]
    assert not (out / "run.lock.pid").exists()  # the lock was given back

    monkeypatch.setattr(store_module, "_write_all", real_write)  # space freed
    assert bench("run", *GRID, "--resume", str(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench: warning: cells.jsonl line 3 is torn or corrupted; skipped (the cell reruns on resume)",
                   # read again once the resume has rerun it
                   "bench: warning: cells.jsonl line 3 is torn or corrupted; skipped (another line records its cell)"]
    complete = parsed(raw_lines(out))
    assert len(complete) == len({r["key"] for r in complete}) == 6


def test_a_full_disk_before_the_run_starts_is_one_line(tmp_path: Path, capsys, monkeypatch, bench) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "_write_all", full)
    out = tmp_path / "run"
    assert bench("run", *GRID, "--out", str(out)) == 2
    assert one_error_line(capsys.readouterr().err) == f"bench: error: cannot write to {out}: No space left on device"
    assert not (out / "grid.json").exists()


# ---------------------------------------------------------------------------- data files
def _data_file(tmp_path: Path, name: str, content: bytes | None) -> str:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("task", "name", "content", "message"),
    [
        ("text-cls(source={})", "missing.csv", None, "no such file"),
        ("text-cls(source={})", "empty.csv", b"", "is empty"),
        ("text-cls(source={})", "latin1.csv", b"text,label\ncaf\xe9 au lait,1\n", "is not UTF-8 text"),
        ("text-cls(source={})", "nolabel.csv", b"text,stars\nhello,1\nworld,2\n", "lacks column(s) label"),
        ("text-cls(source={},group_column=g)", "onegroup.csv",
         b"text,label,g\n" + b"".join(b"row %d,%d,x\n" % (i, i % 2) for i in range(20)), "has no train examples"),
        ("listops(path={})", "missing.tsv", None, "no such file"),
        ("listops(path={})", "notarget.tsv", b"Source\tAnswer\n[MAX 1 2 ]\t2\n", "lacks column(s) Target"),
    ],
    ids=["missing", "empty", "not-utf8", "no-column", "empty-split", "listops-missing", "listops-no-column"],
)
def test_a_bad_data_file_is_one_line_before_the_run_directory_exists(
    tmp_path: Path, capsys, task: str, name: str, content: bytes | None, message: str, bench
) -> None:
    source = _data_file(tmp_path, name, content)
    out = tmp_path / "run"
    assert bench("run", "--profile", "smoke", "--variants", "linear", "--tasks", task.format(source),
                 "--kinds", "accuracy", "--device", "cpu", "--out", str(out), "--quiet") == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists(), "nothing is written for a bad data file"
    if not task.startswith("text-cls(source={},"):
        assert bench("show-task", task.format(source)) == 2
        assert message in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- other bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variants", "multi-head(window=3)"], "multi-head: takes no options, got 'window'"),
        (["--tasks", "capped", "--lengths", "8,64"], "--lengths: 64 exceeds capped's maximum of 16"),
        (["--max-cell-seconds", "nan"], "--max-cell-seconds must be positive"),
        (["--max-cell-seconds", "inf"], "--max-cell-seconds must be positive"),
        (["--seeds", "0,x"], "--seeds: expected comma-separated ints"),
    ],
)
def test_more_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args: list[str], message: str, bench) -> None:
    plugin = tmp_path / "capped_task.py"
    plugin.write_text(CAPPED)
    out = tmp_path / "run"
    assert bench("run", "--plugin", str(plugin), "--profile", "smoke", "--kinds", "accuracy", "--device", "cpu",
                 "--out", str(out), *args) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_broken_installed_plugin_named_in_a_run_is_one_error_line(tmp_path: Path, make_distribution) -> None:
    make_distribution(tmp_path, "attn-broken", {"exploding": "attn_exploding:Layer", "not-a-layer": "attn_value:VALUE"},
                      {"attn_exploding": "import definitely_not_installed_module\n", "attn_value": "VALUE = 42\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", "from attnbench.cli import main; main()", "run", *GRID,
                           "--variants", "exploding,linear", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    *warned, error = done.stderr.strip().splitlines()
    assert error.startswith("bench: error: variant 'exploding' is unavailable: its plugin failed to load: "
                            "ModuleNotFoundError")
    assert sorted(w.split("'")[1] for w in warned) == ["exploding", "not-a-layer"]  # one line per broken plugin
    assert all(w.startswith("bench: warning: variant plugin '") for w in warned)
    assert not out.exists()


# ---------------------------------------------------------------------------- fuzz of the entry point
class Planned(Exception):
    """Raised instead of opening the store: the input made a valid grid."""


VALID = {  # values that plan, so that the fuzz also reaches the planner's own checks
    "--variants": ["all", "linear", "local(window=4),multi-head", "l*", "additive(heads=2)"],
    "--tasks": ["copy", "mqar,copy", "c*", "listops(max_depth=2)"],
    "--profile": ["smoke", "quick"],
    "--lengths": ["32", "16,32", "64"],
    "--efficiency-lengths": ["8", "8,16"],
    "--seeds": ["0", "0,1", "7"],
    "--kinds": ["efficiency", "accuracy", "efficiency,accuracy"],
    "--dtype": ["fp32", "bf16", "fp16"],
    "--threads": ["1", "2"],
    "--executor": ["local", "subprocess"],
    "--cross": ["multi-head", "linear"],
    "--max-cell-seconds": ["10", "0.5", "1e9"],
    "--retry": ["error", "error,timeout", ""],
    "--device": ["cpu", "auto"],
}
NOISE = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-_(),=*?. '\"[]+", max_size=30),
    st.sampled_from(["0", "-1", "1e3", "nan", "inf", "-inf", "", " ", ",", "cuda", "all(window=3)", "9" * 30]),
    st.text(max_size=20),
)
OPTION = st.sampled_from(sorted(VALID)).flatmap(
    lambda flag: st.tuples(st.just(flag), st.one_of(st.sampled_from(VALID[flag]), NOISE))
)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(OPTION, min_size=1, max_size=3))
def test_any_option_value_plans_or_is_one_line_exit_2(pairs, tmp_path_factory, bench) -> None:
    def planned(sweep, **kwargs):
        json.dumps(sweep.grid, allow_nan=False)  # a grid that grid.json can hold
        assert sweep.cells and len({c.key for c in sweep.cells}) == len(sweep.cells)
        raise Planned

    never = tmp_path_factory.getbasetemp() / "never-made"
    argv = ["run", "--profile", "smoke", "--kinds", "efficiency", "--efficiency-lengths", "8", "--tasks", "copy",
            "--device", "cpu", "--out", str(never)]
    for flag, value in pairs:
        argv += [flag, value]
    err = io.StringIO()
    original = cli_run.open_store
    cli_run.open_store = planned
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = bench(*argv)
            except Planned:
                event("planned")
                return
    finally:
        cli_run.open_store = original
    assert code == 2, (argv, err.getvalue())
    assert not never.exists()
    event(one_error_line(err.getvalue()).split(":")[2][:30])


# ---------------------------------------------------------------------------- safety
def test_results_are_never_pickled() -> None:
    """No pickle anywhere; weights (torch.save of a state dict) only ever load with weights_only=True."""
    sources = [p for d in ("attnbench", "runner", "tasks", "variants") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bpickle\b|\bjoblib\b|\bdill\b|\bshelve\b", text), f"{path} uses pickle"
        for call in re.finditer(r"torch\.load\(", text):
            assert "weights_only=True" in text[call.start(): call.start() + 300], f"{path}: torch.load unsafe"
        assert not re.search(r"\b(np|numpy)\.save\(", text), f"{path} saves a numpy blob"


def test_a_bench_started_with_its_stdout_closed_runs_and_prints_nowhere(tmp_path: Path) -> None:
    # `bench … >&-`: Python gives such a process sys.stdout None, on which rich's console had
    # failed at import, a traceback for every command
    def closed_stdout() -> None:
        os.close(1)

    command = [sys.executable, "-c", "from attnbench.cli import main; main()"]
    done = subprocess.run([*command, "ls", "variants"], preexec_fn=closed_stdout, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    done = subprocess.run([*command, "ls", "gizmos"], preexec_fn=closed_stdout, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2 and done.stderr.startswith("bench: error: Invalid value for 'WHAT'")


NATIVE = CHATTY.replace('print("chatty forward", file=sys.stderr, flush=True)',
                        'import os; os.write(1, b"from native code\\\\n"); print("chatty", file=sys.stderr)')


@pytest.mark.parametrize("closed", [(2,), (0, 1)], ids=["2>&-", "<&- >&-"])
def test_a_run_started_with_closed_descriptors_records_every_cell_and_writes_nowhere_else(
        tmp_path: Path, closed: tuple[int, ...]) -> None:
    # 2>&-: the worker inherited no fd 2, and every print or warning of a cell failed it (sys.stderr
    # None); <&- >&-: the /dev/null for stdout took fd 0, and fd 1 became the run's lock file,
    # into which native code's writes went
    (tmp_path / "native.py").write_text(NATIVE)

    def close() -> None:
        for fd in closed:
            os.close(fd)

    grid = [a for a in GRID if a != "--quiet"]
    grid[grid.index("--variants") + 1] = "chatty"
    done = subprocess.run([sys.executable, "-c", "from attnbench.cli import main; main()", "run", *grid,
                           "--plugin", str(tmp_path / "native.py"), "--executor", "subprocess",
                           "--out", str(tmp_path / "run")], preexec_fn=close, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done
    assert [r["status"] for r in read_records(tmp_path / "run")] == ["ok"] * 3
    assert all(p.read_bytes().count(b"from native code") == 0 for p in (tmp_path / "run").iterdir() if p.is_file())


def test_every_test_the_docs_name_exists() -> None:
    """docs/reliability.md and the README name the test that proves each row: a renamed test must be
    renamed there too (four had gone stale before this check)."""
    root = Path(__file__).parent
    text = (root.parent / "docs" / "reliability.md").read_text() + (root.parent / "README.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)", text))
    assert len(named) > 250
    missing = [f"{file}::{test}" for file, test in sorted(named)
               if not (root / file).is_file() or not re.search(rf"^def {test}\(", (root / file).read_text(), re.M)]
    assert not missing, missing

