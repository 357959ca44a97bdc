"""The runner end to end: sweeps, statuses, executors, resume after SIGKILL, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench.runner.cells import Cell
from attnbench.runner.execute import Plan, execute_cell
from attnbench.runner.profiles import PROFILES
from attnbench.runner.store import load_results, read_records
from attnbench.variants.base import VARIANTS

FAULTS = str(Path(__file__).parent / "fixtures" / "fault_variants.py")
TIMING_FIELDS = {"train_seconds", "tokens_per_s", "curve_seconds"}


@pytest.fixture(autouse=True)
def _isolated(sandbox):
    """--plugin registrations made by a test end with it."""
    yield


def bench_process(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from attnbench.cli import main; main()", *args],
        capture_output=True, text=True, timeout=600, **kwargs,
    )


def smoke_plan(**changes) -> Plan:
    p = PROFILES["smoke"]
    base = dict(size=p.size.to_dict(), train=p.train.to_dict(), efficiency=p.efficiency.to_dict(), threads=1)
    return Plan(**{**base, **changes})


def comparable(result: dict) -> dict:
    """A result without its wall-clock fields (which differ from run to run)."""
    return {k: v for k, v in result.items() if k not in TIMING_FIELDS}


def by_variant(run: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in read_records(run)}


# ---------------------------------------------------------------------------- sweeps
def test_smoke_sweep_records_every_cell_once(tmp_path: Path, bench) -> None:
    out = tmp_path / "run"
    code = bench("run", "--profile", "smoke", "--variants", "all", "--tasks", "copy,distance",
                 "--efficiency-lengths", "64", "--device", "cpu", "--out", str(out), "--quiet")
    assert code == 0
    variants = VARIANTS.names()
    records = read_records(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == len(variants) * 2 + len(variants)
    assert {r["status"] for r in records} == {"ok"}, [r["message"] for r in records if r["status"] != "ok"]
    lines = (out / "cells.jsonl").read_text().splitlines()
    assert len(lines) == len(records) and all(json.loads(line)["key"] for line in lines)
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["threads"] >= 1 and env["matmul_peak_flops"] > 0
    frame = load_results(out)
    assert len(frame) == len(records)
    assert {"result.accuracy", "result.fwd.median_s", "result.peak_bytes_fwd_bwd",
            "result.model_step.time.median_s", "result.model_step.peak_bytes"} <= set(frame.columns)
    eff = frame[frame.kind == "efficiency"]
    assert (eff["result.flops_fwd"] > 0).all() and (eff["result.peak_fraction_fwd"] > 0).all()
    assert bench("export", str(out), "--format", "csv") == 0
    assert (out / "cells.csv").read_text().count("\n") >= len(records)


def test_same_cell_twice_gives_the_same_numbers() -> None:
    cell = Cell.make("accuracy", "linear", {}, "distance", {}, 32, 3)
    first, second = execute_cell(cell, smoke_plan()), execute_cell(cell, smoke_plan())
    assert first["status"] == second["status"] == "ok"
    assert comparable(first["result"]) == comparable(second["result"])
    other = execute_cell(Cell.make("accuracy", "linear", {}, "distance", {}, 32, 4), smoke_plan())
    assert comparable(other["result"]) != comparable(first["result"])


# ---------------------------------------------------------------------------- statuses
EXPECTED = {
    "multi-head": ("ok", ""),
    # NaN and a wrong shape are caught before training, by the checks at the cell's length
    "fault-nan": ("error", "fault-nan: its causal check fails at n=32: non-finite output (causal=True); not trained"),
    "fault-raise": ("error", "this variant always raises"),
    "fault-shape": ("error", "fault-shape: its causal check fails at n=32: out shape (3, 31, 32) != x shape (3, 32, 32)"),
    "fault-oom": ("oom", "can't allocate memory"),
    "fault-nocausal": ("unsupported", "causal"),
    "fault-exit": ("error", "SystemExit: 5"),
}


@pytest.mark.parametrize("executor", ["local", "subprocess"])
def test_every_status_is_recorded_and_the_sweep_goes_on(tmp_path: Path, executor: str, bench) -> None:
    variants = list(EXPECTED) + (["fault-segfault"] if executor == "subprocess" else [])
    out = tmp_path / "run"
    code = bench("run", "--plugin", FAULTS, "--profile", "smoke", "--variants", ",".join(variants),
                 "--tasks", "translation", "--kinds", "accuracy", "--executor", executor,
                 "--device", "cpu", "--out", str(out), "--quiet")
    assert code == 0
    records = by_variant(out)
    assert set(records) == set(variants)
    for variant, (status, message) in EXPECTED.items():
        assert records[variant]["status"] == status, (variant, records[variant]["message"])
        assert message in records[variant]["message"], (variant, records[variant]["message"])
    if executor == "subprocess":
        crashed = records["fault-segfault"]
        assert crashed["status"] == "error" and "SIGSEGV" in crashed["message"]


@pytest.mark.parametrize("executor", ["local", "subprocess"])
def test_a_hang_ends_its_cell_as_timeout(tmp_path: Path, executor: str, bench) -> None:
    out = tmp_path / "run"
    code = bench("run", "--plugin", FAULTS, "--profile", "smoke", "--variants", "fault-hang,linear",
                 "--tasks", "copy", "--kinds", "accuracy", "--executor", executor, "--max-cell-seconds", "3",
                 "--device", "cpu", "--out", str(out), "--quiet")
    assert code == 0
    records = by_variant(out)
    assert records["fault-hang"]["status"] == "timeout"  # its forward hangs: in the checks before training
    assert "its layer checks took over 10 s; not trained" in records["fault-hang"]["message"]
    assert records["linear"]["status"] in ("ok", "timeout")  # the sweep went on past the hang


def test_executors_give_identical_records(tmp_path: Path, bench) -> None:
    results = {}
    for executor in ("local", "subprocess"):
        out = tmp_path / executor
        assert bench("run", "--profile", "smoke", "--variants", "multi-head,local(window=4)",
                     "--tasks", "mqar", "--lengths", "32", "--kinds", "accuracy", "--executor", executor,
                     "--threads", "1", "--device", "cpu", "--out", str(out), "--quiet") == 0
        results[executor] = {k: comparable(r["result"]) for k, r in by_variant(out).items()}
    assert results["local"] == results["subprocess"]


def test_subprocess_worker_ignores_an_attnbench_folder_in_the_current_directory(tmp_path: Path,
                                                                              monkeypatch) -> None:
    """Run from a clone's root under a non-editable install, `python -m` imported the clone's bare
    attnbench/ folder in the worker, and every cell died at import."""
    from attnbench.runner import executors

    shadow = tmp_path / "attnbench"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the folder in the current directory')\n")
    monkeypatch.chdir(tmp_path)
    runner = executors.SubprocessExecutor(smoke_plan())
    try:
        record = runner.run(Cell.make("accuracy", "multi-head", {}, "copy", {}, 32, 0))
    finally:
        runner.close()
    assert record["status"] == "ok", record["message"]


def test_a_worker_that_cannot_start_stops_the_sweep_instead_of_failing_every_cell(
        tmp_path: Path, monkeypatch, capsys, bench) -> None:
    from attnbench.runner import executors

    monkeypatch.setattr(executors, "WORKER_COMMAND", (sys.executable, "-c", "raise SystemExit(3)"))
    out = tmp_path / "run"
    code = bench("run", "--profile", "smoke", "--variants", "multi-head,linear", "--tasks", "copy",
                 "--kinds", "accuracy", "--executor", "subprocess", "--device", "cpu", "--out", str(out), "--quiet")
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == "bench: error: --executor subprocess: the worker process could not start (exit code 3; its error is above)"
    cells = out / "cells.jsonl"
    assert not cells.exists() or cells.read_text() == ""  # no cell recorded as an error


KILLED_BY_SIGKILL = """
import os, signal
from attnbench import register_variant
from attnbench.variants.multi_head import MultiHeadAttention

@register_variant("fault-sigkill")
class Killed(MultiHeadAttention):
    def forward(self, x, context=None, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, or a user's `kill -9`
"""


@pytest.mark.parametrize(("counts", "status", "message"), [
    ((3, 4), "oom", "worker killed by the kernel's OOM killer (SIGKILL; this cgroup's oom_kill count 3 → 4)"),
    ((3, 3), "error", "worker killed by SIGKILL, not by the OOM killer (this cgroup's oom_kill count stayed 3)"),
    ((None, None), "oom", "worker killed by SIGKILL (the kernel's OOM killer?)"),
], ids=["oom-killer", "another-kill", "count-unreadable"])
def test_a_worker_killed_by_sigkill_is_oom_only_where_the_oom_killer_struck(tmp_path, sandbox, monkeypatch, counts,
                                                                           status, message) -> None:
    from attnbench.runner import executors

    import attnbench.plugins

    plugin = tmp_path / "sigkill_variant.py"
    plugin.write_text(KILLED_BY_SIGKILL)
    attnbench.plugins.import_plugin(str(plugin))
    reads = iter(counts)
    monkeypatch.setattr(executors, "oom_kill_count", lambda: next(reads))
    runner = executors.SubprocessExecutor(Plan(**{**vars(smoke_plan()), "plugins": (str(plugin),)}))
    try:
        record = runner.run(Cell.make("accuracy", "fault-sigkill", {}, "copy", {}, 32, 0))
    finally:
        runner.close()
    assert (record["status"], record["message"]) == (status, message)


def test_this_machine_s_oom_kill_count_is_read_where_a_cgroup_shows_one() -> None:
    from attnbench.runner import executors

    count = executors.oom_kill_count()
    readable = any(Path(f).exists() for f in executors._oom_count_files())
    assert count is None or (readable and count >= 0)


def test_a_replacement_worker_that_cannot_start_costs_one_cell(monkeypatch) -> None:
    """After a worker has run cells, a failed restart (after a segfault) is that cell's error; the
    sweep goes on and the next cell gets a fresh start."""
    from attnbench.runner import executors

    import attnbench.plugins

    attnbench.plugins.import_plugin(FAULTS)
    runner = executors.SubprocessExecutor(Plan(**{**vars(smoke_plan()), "plugins": (FAULTS,)}))
    working = executors.WORKER_COMMAND
    try:
        crashed = runner.run(Cell.make("accuracy", "fault-segfault", {}, "copy", {}, 32, 0))
        assert crashed["status"] == "error" and "SIGSEGV" in crashed["message"]
        monkeypatch.setattr(executors, "WORKER_COMMAND", (sys.executable, "-c", "raise SystemExit(3)"))
        failed = runner.run(Cell.make("accuracy", "multi-head", {}, "copy", {}, 32, 0))
        assert failed["status"] == "error"
        assert failed["message"] == ("--executor subprocess: the worker process could not start "
                                     "(exit code 3; its error is above)")
        monkeypatch.setattr(executors, "WORKER_COMMAND", working)
        assert runner.run(Cell.make("accuracy", "multi-head", {}, "copy", {}, 32, 0))["status"] == "ok"
    finally:
        runner.close()


def test_subprocess_executor_kills_a_hang_that_ignores_alarms(tmp_path: Path, monkeypatch) -> None:
    from attnbench.runner import executors

    monkeypatch.setattr(executors, "DEFAULT_WORKER_SECONDS", 3)
    plan = smoke_plan()  # no cell budget: the worker's alarm is off, the parent's deadline acts
    runner = executors.SubprocessExecutor(plan)
    try:
        import attnbench.plugins

        attnbench.plugins.import_plugin(FAULTS)
        runner.plan = Plan(**{**vars(plan), "plugins": (FAULTS,)})
        record = runner.run(Cell.make("accuracy", "fault-hang", {}, "copy", {}, 32, 0))
        assert record["status"] == "timeout"
        assert record["message"] == "over 3 s without an answer; worker killed"
        monkeypatch.setattr(executors, "DEFAULT_WORKER_SECONDS", 600)
        ok = runner.run(Cell.make("accuracy", "multi-head", {}, "copy", {}, 32, 0))
        assert ok["status"] == "ok"  # a fresh worker took over
    finally:
        runner.close()


def test_a_killed_worker_s_record_names_every_limit_its_wait_allowed() -> None:
    from attnbench.runner import executors

    cell = Cell.make("accuracy", "multi-head", {}, "copy", {}, 32, 0)
    plan = smoke_plan(max_cell_seconds=5)  # an accuracy cell's layer checks get max(5, CHECKS_SECONDS) s first
    assert executors.worker_seconds(cell, plan) == 10 + 5 + executors.WORKER_GRACE_SECONDS
    assert executors.worker_limit_text(cell, plan) == "the 5 s cell budget and its layer checks' 10 s"
    timed = Cell.make("efficiency", "multi-head", {}, "none", {}, 32, 0)  # no layer checks
    assert executors.worker_seconds(timed, plan) == 5 + executors.WORKER_GRACE_SECONDS
    assert executors.worker_limit_text(timed, plan) == "the 5 s cell budget"


# ---------------------------------------------------------------------------- resume
def test_resume_after_sigkill_records_every_cell_exactly_once(tmp_path: Path, bench) -> None:
    args = ["run", "--profile", "smoke", "--variants", "multi-head,linear,local(window=4)", "--tasks",
            "copy,mqar", "--lengths", "32", "--kinds", "accuracy", "--threads", "1", "--device", "cpu", "--quiet"]
    reference = tmp_path / "reference"
    assert bench(*args, "--out", str(reference)) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", *args,
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = out / "cells.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not cells.exists() or cells.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = cells.read_text().count("\n")
    assert 2 <= before < 6, "the kill should land mid-sweep"
    assert bench("run", "--resume", str(out), *args[1:]) == 0
    lines = cells.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 6
    expected = {r["key"]: comparable(r["result"]) for r in read_records(reference)}
    assert {r["key"]: comparable(r["result"]) for r in read_records(out)} == expected


def test_resume_refuses_a_different_grid_and_a_non_run(tmp_path: Path, capsys, bench) -> None:
    out = tmp_path / "run"
    base = ["run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--kinds", "accuracy",
            "--device", "cpu", "--quiet"]
    assert bench(*base, "--out", str(out)) == 0
    capsys.readouterr()
    assert bench(*base, "--seeds", "0,1", "--resume", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "seeds [0] vs [0, 1]" in err
    assert bench(*base, "--resume", str(tmp_path)) == 2
    assert "not an attnbench run" in capsys.readouterr().err
    assert bench(*base, "--out", str(out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert bench(*base, "--resume", str(out)) == 0  # everything recorded: nothing to do


def test_resume_alone_continues_with_the_options_and_plugin_the_run_started_with(tmp_path: Path, bench) -> None:
    plugin = tmp_path / "probe_attention.py"
    plugin.write_text(
        "from attnbench import register_variant\n"
        "from attnbench.variants.multi_head import MultiHeadAttention\n"
        "@register_variant('resume-probe')\n"
        "class Probe(MultiHeadAttention):\n"
        "    pass\n"
    )
    args = ["run", "--plugin", str(plugin), "--profile", "smoke", "--variants", "resume-probe,linear(chunk_size=8)", "--tasks",
            "copy", "--lengths", "16", "--seeds", "0,1", "--kinds", "accuracy", "--threads", "1", "--device", "cpu",
            "--quiet"]
    out = tmp_path / "run"
    assert bench(*args, "--out", str(out)) == 0
    cells = out / "cells.jsonl"
    lines = cells.read_text().splitlines()
    assert len(lines) == 4
    cells.write_text(lines[0] + "\n")  # as if killed after the first cell
    report = bench_process("report", str(out))
    assert f"- **cells**: 1 recorded (ok 1); 3 of the grid's 4 not run yet (`bench run --resume {out}` runs them)" \
        in report.stdout, report.stdout
    # a new process, where only the run's record can name the plugin; the line quoted as a shell needs it
    done = bench_process("run", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert ("resuming with the run's own options: --profile smoke --variants 'resume-probe,linear(chunk_size=8)' "
            f"--tasks copy --lengths 16 --seeds 0,1 --kinds accuracy --device cpu --threads 1 --plugin {plugin}"
            ) in done.stderr
    assert [json.loads(line)["key"] for line in cells.read_text().splitlines()] == [
        json.loads(line)["key"] for line in lines
    ]
    # an option given again must still plan the same grid, even when it is the option's default
    refused = bench_process("run", "--resume", str(out), "--seeds", "0", "--quiet")
    assert refused.returncode == 2 and refused.stderr.strip().endswith("seeds [0, 1] vs [0]")
    refused = bench_process("run", "--resume", str(out), "--profile", "quick", "--quiet")
    assert refused.returncode == 2 and 'profile "smoke" vs "quick"' in refused.stderr


def test_a_resume_records_its_code_and_warns_and_reports_where_it_differs_from_the_start(
    tmp_path: Path, monkeypatch, bench_output
) -> None:
    out = tmp_path / "run"
    cells = out / "cells.jsonl"
    monkeypatch.setenv("ATTNBENCH_REVISION", "a" * 40)  # the git hash env.json records
    code, _, err = bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy",
                                "--lengths", "16", "--seeds", "0,1", "--kinds", "accuracy", "--threads", "1",
                                "--device", "cpu", "--quiet", "--out", out)
    assert code == 0 and err == ""
    first = cells.read_text().splitlines()[0] + "\n"

    def resume(revision: str) -> str:
        monkeypatch.setenv("ATTNBENCH_REVISION", revision)
        code, _, err = bench_output("run", "--resume", out, "--quiet")
        assert code == 0 and len(cells.read_text().splitlines()) == 2
        return err.replace(f"bench: resuming with the run's own options: {shlex.join(RESUMED)}\n", "")

    RESUMED = ["--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--lengths", "16", "--seeds",
               "0,1", "--kinds", "accuracy", "--device", "cpu", "--threads", "1"]
    cells.write_text(first)  # as if killed after the first cell
    assert resume("a" * 40) == ""  # the same code: recorded, not warned of
    cells.write_text(first)
    assert resume("b" * 40 + "-dirty") == (
        f"bench: warning: --resume {out}: its one cell left runs on other code or another machine than the run's "
        "first (git_sha aaaaaaa → bbbbbbb-dirty); env.json and bench report name each resume\n"
    )
    assert resume("c" * 40) == ""  # nothing left to run: not a resume of the cells, not recorded
    resumes = json.loads((out / "env.json").read_text())["resumes"]
    assert [(r["git_sha"], r["recorded_before"]) for r in resumes] == [("a" * 40, 1), ("b" * 40 + "-dirty", 1)]
    assert {"attnbench", "torch", "python", "cpu", "cuda_device", "created"} < set(resumes[0])
    report = bench_output("report", out)[1]
    assert ("- **resumed**: 2 times; cells ran on other code or another machine than the first ones after 1 "
            f"recorded cells ({resumes[1]['created']}): git_sha aaaaaaa → bbbbbbb-dirty\n") in report
    env = json.loads((out / "env.json").read_text())
    (out / "env.json").write_text(json.dumps({**env, "resumes": env["resumes"][:1]}))
    assert "- **resumed**: 1 time, on the code and machine the run started with\n" in bench_output("report", out)[1]


def test_a_resume_whose_plugin_file_changed_names_it_and_the_report_gives_each_plugins_digest(
    tmp_path: Path, sandbox, bench_output
) -> None:
    plugin = tmp_path / "probe_plugin.py"
    source = ("from attnbench import register_variant\n"
              "from attnbench.variants.multi_head import MultiHeadAttention\n"
              "@register_variant('plugin-probe')\n"
              "class Probe(MultiHeadAttention):\n"
              "    pass\n")
    plugin.write_text(source)
    out = tmp_path / "run"
    code, _, err = bench_output("run", "--plugin", plugin, "--profile", "smoke", "--variants", "plugin-probe",
                                "--tasks", "copy", "--lengths", "16", "--seeds", "0,1", "--kinds", "accuracy",
                                "--threads", "1", "--device", "cpu", "--quiet", "--out", out)
    assert code == 0 and err == ""
    then = hashlib.sha256(b"probe_plugin.py\0" + source.encode()).hexdigest()
    assert json.loads((out / "env.json").read_text())["plugins"] == {str(plugin): then}
    cells = out / "cells.jsonl"
    cells.write_text(cells.read_text().splitlines()[0] + "\n")  # as if killed after the first cell
    plugin.write_text(source + "# edited since\n")
    now = hashlib.sha256(b"probe_plugin.py\0" + plugin.read_bytes()).hexdigest()
    code, _, err = bench_output("run", "--resume", out, "--quiet")
    assert code == 0 and len(cells.read_text().splitlines()) == 2
    assert (f"its one cell left runs on other code or another machine than the run's first (plugin {plugin} "
            f"sha256 {then[:12]}… → sha256 {now[:12]}…)") in err, err
    report = bench_output("report", out)[1]
    assert f"- **plugins**: `{plugin}` (sha256 {then[:12]}…)\n" in report
    assert "after 1 recorded cells (" in report and f"plugin {plugin} sha256 {then[:12]}… → sha256 {now[:12]}…" in report


def test_a_report_says_a_kind_of_cells_is_not_recorded_yet_where_the_grid_plans_it(tmp_path: Path,
                                                                                   bench_output) -> None:
    out = tmp_path / "run"
    code, _, _ = bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--lengths",
                              "16", "--threads", "1", "--device", "cpu", "--quiet", "--out", out)
    assert code == 0
    cells = out / "cells.jsonl"
    lines = cells.read_text().splitlines()
    cells.write_text("".join(line + "\n" for line in lines if json.loads(line)["kind"] == "accuracy"))
    report = bench_output("report", out)[1]
    assert f"No efficiency cells recorded yet; the grid plans 2 (`bench run --resume {out}` runs them).\n" in report
    cells.write_text("")
    report = bench_output("report", out)[1]
    long_range = report.split("## Long-range dependencies\n", 1)[1].split("##", 1)[0]
    assert "No accuracy cells recorded yet; the grid plans 1 (" in long_range  # not "no task records distances"
    assert report.count("No accuracy cells recorded yet; the grid plans 1 (") == 2
    only = tmp_path / "accuracy-only"
    assert bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--lengths", "16",
                        "--kinds", "accuracy", "--threads", "1", "--device", "cpu", "--quiet", "--out", only)[0] == 0
    assert "No efficiency cells in this run.\n" in bench_output("report", only)[1]


@contextlib.contextmanager
def _hanging_run(out: Path):
    """A `bench run` in a process of its own whose one cell never ends, once it holds `out`'s lock
    (its pid written beside it); killed on leaving."""
    args = ["run", "--plugin", FAULTS, "--profile", "smoke", "--variants", "fault-hang", "--tasks", "copy",
            "--kinds", "accuracy", "--device", "cpu", "--quiet", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "run.lock.pid").exists() and proc.poll() is None:
            time.sleep(0.05)
        assert (out / "run.lock.pid").exists(), proc.communicate()
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with _hanging_run(out):
        second = bench_process("run", "--resume", str(out), "--quiet")
        assert second.returncode == 2
        assert "in use by another bench run" in second.stderr and second.stderr.count("\n") == 1


def test_a_run_whose_lock_file_was_deleted_still_refuses_a_second_writer(tmp_path: Path) -> None:
    """run.lock stays after every run, so it looks stale; deleting it under a live run let a second
    one lock a new file and both appended the same cells. The live run's pid beside it still refuses."""
    out = tmp_path / "run"
    with _hanging_run(out) as first:
        (out / "run.lock").unlink()
        second = bench_process("run", "--resume", str(out), "--quiet")
        assert second.returncode == 2, second.stderr
        assert second.stderr == (f"bench: error: {out} is in use by another bench run (pid {first.pid}; its lock "
                                 f"file {out / 'run.lock'} was removed while it ran); wait for it or use another --out\n")


def test_a_pid_left_beside_the_lock_by_a_process_gone_or_not_bench_does_not_hold_the_run(tmp_path: Path,
                                                                                       bench) -> None:
    out = tmp_path / "run"
    args = ["run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--lengths", "16",
            "--seeds", "0,1", "--kinds", "accuracy", "--threads", "1", "--device", "cpu", "--quiet"]
    assert bench(*args, "--out", str(out)) == 0
    cells = out / "cells.jsonl"
    first = cells.read_text().splitlines()[0] + "\n"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # alive, and not bench: not a Python whose path could hold "bench" (a checkout's own venv)
    other = subprocess.Popen(["sleep", "120"])
    try:
        for pid in (gone.pid, other.pid):
            cells.write_text(first)  # as if killed after the first cell, its pid left behind
            (out / "run.lock.pid").write_text(f"{pid}\n")
            assert bench("run", "--resume", str(out), "--quiet") == 0
            assert len(cells.read_text().splitlines()) == 2
    finally:
        other.kill()
        other.wait()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variants", "local(window=-3)"], "window"),
        (["--variants", "local(window=abc)"], "window"),
        (["--variants", "multi-head(foo=1)"], "foo"),
        (["--variants", "mulit-head"], "did you mean"),
        (["--variants", ""], "empty"),
        (["--tasks", "cpy"], "did you mean"),
        (["--profile", "quik"], "did you mean"),
        (["--lengths", "abc"], "--lengths"),
        (["--lengths", "0"], "--lengths"),
        (["--lengths", "2", "--tasks", "mqar"], "too short"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "1.5"], "--seeds"),
        (["--kinds", "speed"], "--kinds"),
        (["--max-cell-seconds", "0"], "--max-cell-seconds"),
        (["--cross", "mult-head"], "did you mean"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, args: list[str], message: str, bench) -> None:
    out = tmp_path / "run"
    assert bench("run", "--profile", "smoke", "--device", "cpu", "--out", str(out), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error:") and err.count("\n") == 1 and message in err, err
    assert not out.exists(), "nothing is written for bad input"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(capsys, bench) -> None:
    assert bench("run", "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ---------------------------------------------------------------------------- learning
def test_multi_head_learns_the_distance_probe_and_local_does_not_reach() -> None:
    """The regression guard: with the quick profile's budget the harness learns the distance
    probe at every distance (0.72 when this test was written, chance 0.125), while local attention
    whose reach (window 4, 2 layers) is shorter than most distances stays far below."""
    quick = PROFILES["quick"]
    plan = smoke_plan(size=quick.size.to_dict(), train=quick.train.to_dict(), threads=2)
    scores, digests = {}, set()
    for variant, options in (("multi-head", {}), ("local", {"window": 4})):
        record = execute_cell(Cell.make("accuracy", variant, options, "distance", {}, 32, 0), plan)
        assert record["status"] == "ok", record["message"]
        scores[variant] = record["result"]["accuracy"]
        digests.add(record["result"]["data_digest"])
        far = record["result"]["by_distance"]["16"]["accuracy"]
        chance = record["result"]["chance"]
        baselines = record["result"]["baselines"]  # measured on the cell's own test data
        assert set(baselines) == {"majority", "most frequent bound value"}
        assert chance <= baselines["majority"] < 2 * chance < 3 * chance < baselines["most frequent bound value"]
        if variant == "local":
            assert far < 2 * chance, record["result"]["by_distance"]
    assert scores["multi-head"] > 4 * max(chance, baselines["majority"]), scores
    assert scores["multi-head"] > baselines["most frequent bound value"] + 0.2 > scores["local"], scores  # it reads the query
    assert scores["local"] < scores["multi-head"] / 2, scores
    assert len(digests) == 1  # one task, length and seed: both trained and were scored on the same data


def test_max_cell_seconds_bounds_efficiency_cells_too_and_a_resume_may_raise_it_to_retry_timeouts(
        tmp_path: Path, bench) -> None:
    from attnbench.runner.execute import cell_budget
    from attnbench.runner.sweep import SweepRequest, plan_sweep

    # the quick profile gives its efficiency cells 10 s of their own: --max-cell-seconds had not reached them
    sweep = plan_sweep(SweepRequest(variants="linear", kinds=("efficiency",), max_cell_seconds=60))
    assert {cell_budget(c, sweep.plan) for c in sweep.cells} == {60}
    assert {cell_budget(c, plan_sweep(SweepRequest(variants="linear", kinds=("efficiency",))).plan)
            for c in sweep.cells} == {10}
    out = tmp_path / "run"
    grid = ["--profile", "smoke", "--variants", "additive", "--kinds", "efficiency", "--efficiency-lengths", "64,256",
            "--device", "cpu", "--quiet"]
    assert bench("run", *grid, "--max-cell-seconds", "0.01", "--out", str(out)) == 0
    first = by_n(out)
    assert first[64]["status"] == "timeout" and first[256]["message"] == "not run: timeout at n=64 already"
    # the budget is not part of the grid; the cells that timed out rerun, the longer one with them
    assert bench("run", "--resume", str(out), "--retry", "timeout", "--max-cell-seconds", "600", "--quiet") == 0
    assert {n: r["status"] for n, r in by_n(out).items()} == {64: "ok", 256: "ok"}


def test_a_plugin_tasks_trivial_baselines_never_cost_a_cell_its_record() -> None:
    """Before: a numpy float32 made the record unwritable (the run, and every --resume, ended in a
    traceback) and a raising method turned the cell into an error, its score lost."""
    import json

    import numpy as np
    import torch

    from attnbench.runner.train import trivial_baselines

    class Returns:
        def __init__(self, value):
            self.value = value

        def trivial_baselines(self, train, test):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    odd = {"np": np.float32(0.25), "tensor": torch.tensor(0.5), "text": "high", "nan": float("nan")}
    got = trivial_baselines(Returns(odd), None, None)
    assert got == {"np": 0.25, "tensor": 0.5, "error": "trivial_baselines: 'text' is 'high', not a finite number"}
    json.dumps(got)  # what the store writes
    assert trivial_baselines(Returns(RuntimeError("oops")), None, None) == {
        "error": "trivial_baselines: RuntimeError: oops"}
    assert trivial_baselines(Returns([0.5]), None, None) == {
        "error": "trivial_baselines: TypeError: returned list, not a dict of name → score"}


def test_a_retry_says_how_many_of_the_cells_it_ran_were_recorded_before(tmp_path: Path, bench_output) -> None:
    out = tmp_path / "run"
    grid = ["--profile", "smoke", "--variants", "multi-head,linear", "--tasks", "copy", "--kinds", "accuracy",
            "--lengths", "16", "--threads", "1", "--device", "cpu"]
    assert bench_output("run", *grid, "--out", out)[0] == 0
    code, out_text, _ = bench_output("run", "--resume", out, "--retry", "ok")
    assert code == 0 and "2 cells run (2 of them again, for --retry), 0 already recorded, in " in out_text
    code, out_text, _ = bench_output("run", "--resume", out, "--retry", "error")
    assert code == 0 and "0 cells run, 2 already recorded, in " in out_text


def by_n(out: Path) -> dict[int, dict]:
    return {r["seq_len"]: r for r in load_results(out).to_dict("records")}


def test_a_resume_on_another_version_of_an_installed_plugin_warns_and_records_it(tmp_path: Path, bench_output,
                                                                                 monkeypatch) -> None:
    """Before: --plugin sources were compared on resume, installed plugins not, so cells of a
    plugin upgraded in between sat in one table as one code's."""
    def installed(version: str, digest: str):
        entry = {"distribution": "attn-ver", "version": version, "module": "attn_ver", "sha256": digest, "error": None}
        return lambda: {"variant:verv (attn-ver)": entry}

    monkeypatch.setattr("attnbench.runner.sweep.installed_plugins", installed("0.1", "a" * 64))
    out = tmp_path / "run"
    code, _, err = bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy",
                                "--lengths", "16", "--seeds", "0,1", "--kinds", "accuracy", "--threads", "1",
                                "--device", "cpu", "--quiet", "--out", out)
    assert code == 0 and err == ""
    assert json.loads((out / "env.json").read_text())["installed_plugins"]["variant:verv (attn-ver)"]["version"] == "0.1"
    cells = out / "cells.jsonl"
    cells.write_text(cells.read_text().splitlines()[0] + "\n")  # as if killed after the first cell
    monkeypatch.setattr("attnbench.cli_run.installed_plugins", installed("0.2", "b" * 64))
    code, _, err = bench_output("run", "--resume", out, "--quiet")
    change = "installed plugin variant:verv (attn-ver) version 0.1, sha256 aaaaaaaaaaaa… → version 0.2, sha256 bbbbbbbbbbbb…"
    assert code == 0 and change in err, err
    assert change in bench_output("report", out)[1]
