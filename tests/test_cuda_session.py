"""benchmarks/cuda_session.sh, the one-call script for a GPU machine: it cannot be run here (no
GPU), so what can go stale without one is checked: its syntax and usage line, that every option
and variant selection it passes to `bench` still exists and parses, and (with a stub `python`)
that a step past its time limit is cut, recorded, and leaves the later steps to run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.cli import cli
from attnbench.selection import parse_selection
from attnbench.variants.base import VARIANTS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_session.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _commands() -> str:
    """The script without its comment lines (which show commands too)."""
    return "".join(line for line in SCRIPT.read_text().splitlines(keepends=True) if not line.lstrip().startswith("#"))


@needs_bash
def test_the_script_parses_and_refuses_an_unknown_argument_with_its_usage():
    assert subprocess.run(["bash", "-n", SCRIPT], capture_output=True).returncode == 0
    done = subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: OUT=DIR bash benchmarks/cuda_session.sh")


def test_every_variant_selection_it_passes_to_bench_parses():
    selections = re.findall(r"--variants '?([^' \n]+)'?", _commands())
    assert len(selections) == 5, selections  # perf, the three check steps and the smoke run
    for text in selections:
        chosen = parse_selection(text, VARIANTS, lambda n: VARIANTS[n].spec.options)
        assert chosen and all(c.name in VARIANTS for c in chosen)


def test_every_option_it_passes_to_bench_exists():
    text = _commands().replace("\\\n", " ")  # continuation lines joined
    calls = re.findall(r'"\$\{BENCH\[@\]\}" (\w+) (.*)', text)
    assert sorted({command for command, _ in calls}) == ["check", "perf", "report", "run"]
    for command, rest in calls:
        known = {opt for param in cli.commands[command].params for opt in param.opts}
        used = set(re.findall(r"(--[a-z-]+)", rest))
        assert used and used <= known, (command, used - known)


@needs_bash
@pytest.mark.skipif(shutil.which("timeout") is None or shutil.which("realpath") is None, reason="needs coreutils")
@pytest.mark.parametrize("interpreter", ["python", "python3"])
def test_a_step_past_its_limit_is_cut_and_recorded_and_the_later_steps_still_run(tmp_path, interpreter):
    """With `interpreter` the first of python, python3 that imports torch (the GPU image's is python3)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / interpreter
    stub.write_text(  # the real python for the install step's import check; the others pretend
        '#!/usr/bin/env bash\n'
        'echo "$0" >>"$CALLS"\n'
        '[[ " $* " == *"import attnbench.cli"* ]] && exec "$REAL_PYTHON" "$@"\n'
        '[[ " $* " == *" perf --device "* ]] && exec sleep 30\n'
        'exit 0\n'
    )
    if interpreter == "python3":  # a `python` without torch comes first on PATH, and is passed over
        (bin_dir / "python").write_text('#!/usr/bin/env bash\n[[ "$*" == *"import torch"* ]] && exit 1\nexit 0\n')
        (bin_dir / "python").chmod(0o755)
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": "out", "PERF_S": "1", "CHECK_S": "5",
           "COMPILED_CHECK_S": "5",
           "REAL_PYTHON": sys.executable, "CALLS": str(tmp_path / "calls")}
    done = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    out = tmp_path / "out"  # OUT relative to the caller
    steps = (out / "steps.txt").read_text().splitlines()
    assert [line.split()[0] for line in steps] == ["install", "env", "gpu-test", "perf", "graphs", "linear-state",
                                                   "check-eager", "check-linear", "check-local", "smoke-run",
                                                   "smoke-report"]
    assert [line.split()[1] for line in steps] == ["rc=0"] * 3 + ["rc=124"] + ["rc=0"] * 7
    assert done.returncode == 1
    # two files (the device tool brings back at most 8); every step's output is in log.txt, in order
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "steps.txt"]
    log = (out / "log.txt").read_text()
    ends = re.findall(r"^===== ([\w-]+): (rc=\d+)$", log, flags=re.M)
    assert ends == [tuple(line.split()[:2]) for line in steps]
    # the install step imported attnbench (subpackages included) from the linked tree, not the repo
    install = log.split("===== install: rc=0")[0].splitlines()[-1].split()
    assert install[:2] == ["attnbench", "from"] and not install[2].startswith(str(SCRIPT.parents[1]))
    # every step ran under the stub (through the wrapper), the failing `python` only asked for torch
    assert set((tmp_path / "calls").read_text().split()) == {str(stub)}


@needs_bash
@pytest.mark.skipif(shutil.which("timeout") is None or shutil.which("realpath") is None, reason="needs coreutils")
def test_steps_reruns_only_the_steps_named_after_the_install(tmp_path):
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\n[[ " $* " == *"import attnbench.cli"* ]] && exec "$REAL_PYTHON" "$@"\nexit 0\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "STEPS": "check-local,smoke-run", "REAL_PYTHON": sys.executable}
    done = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    steps = (tmp_path / "out" / "steps.txt").read_text().splitlines()
    assert done.returncode == 0 and [line.split()[0] for line in steps] == ["install", "check-local", "smoke-run"]


@needs_bash
@pytest.mark.parametrize(("steps", "message"), [
    ("check_linear", "STEPS: unknown step 'check_linear' (the steps: install env gpu-test perf"),
    ("check", "STEPS: unknown step 'check'"),  # a prefix of a name is not that name
    ("smoke-report", "STEPS: smoke-report reports the smoke run of the same call: name smoke-run too"),
])
def test_steps_refuses_an_unknown_step_or_a_report_without_its_run_in_one_line(tmp_path, steps, message):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "STEPS": steps}
    done = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


@needs_bash
@pytest.mark.skipif(shutil.which("timeout") is None or shutil.which("realpath") is None, reason="needs coreutils")
def test_a_python_found_through_a_relative_path_entry_runs_from_the_linked_tree_too(tmp_path):
    """The steps run from the linked tree's directory, so the wrapper holds an absolute path."""
    venv_bin = tmp_path / "venv bin"  # a space too: the wrapper quotes the path
    venv_bin.mkdir()
    stub = venv_bin / "python"
    stub.write_text('#!/usr/bin/env bash\necho "$0" >>"$CALLS"\n'
                    '[[ " $* " == *"import attnbench.cli"* ]] && exec "$REAL_PYTHON" "$@"\nexit 0\n')
    stub.chmod(0o755)
    relative = os.path.relpath(venv_bin, SCRIPT.parents[1])  # the script runs from the repository's root
    deeper = tmp_path / "a" / "b" / "c"  # the linked tree's directory, where that relative path is wrong
    deeper.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{relative}:{os.environ['PATH']}", "OUT": "out", "STEPS": "env",
           "REAL_PYTHON": sys.executable, "CALLS": str(tmp_path / "calls"), "TMPDIR": str(deeper)}
    done = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    steps = (tmp_path / "out" / "steps.txt").read_text().splitlines()
    assert done.returncode == 0 and [line.split()[:2] for line in steps] == [["install", "rc=0"], ["env", "rc=0"]]
    assert len((tmp_path / "calls").read_text().splitlines()) >= 3  # the torch probe, the install, env


@needs_bash
def test_the_script_stops_in_one_line_when_no_python_imports_torch(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        (bin_dir / name).write_text("#!/usr/bin/env bash\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "neither python nor python3 imports torch\n")


def test_the_tree_it_links_is_pyproject_s_package_dir_mapping():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    mapping = tomllib.loads((SCRIPT.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    linked = re.search(r"for sub in ([a-z ]+); do", SCRIPT.read_text()).group(1).split()
    assert {f"attnbench.{sub}": sub for sub in linked} == {k: v for k, v in mapping.items() if k != "attnbench"}
