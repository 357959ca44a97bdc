"""Third-party tasks: entry points (group attnbench.tasks), --plugin, broken plugins, and a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.errors import PluginError
from attnbench.registry import PluginWarning
from attnbench.tasks import TASKS, build_task, list_tasks

PARITY = '''
import numpy as np
from attnbench.tasks import Example, GeneratedTask, TaskSpec


class Parity(GeneratedTask):
    """Parity of a bit string: a third-party task in a few lines."""

    spec = TaskSpec(kind="classify", metric="accuracy", description="parity of bits",
                    source="a test plugin", licence="generated (no data)")
    vocab_size, n_classes, chance, pad_id = 3, 2, 0.5, 0

    def sample(self, rng, seq_len):
        bits = rng.integers(0, 2, size=seq_len)
        return Example(bits + 1, int(bits.sum() % 2))
'''


@pytest.fixture
def task_sandbox():
    with TASKS.temporary():
        yield TASKS


def bench(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", "from attnbench.cli import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_entry_point_task_loads_lazily_and_builds(tmp_path, monkeypatch, task_sandbox, make_distribution):
    make_distribution(tmp_path, "parity-task", {"parity": "parity_plugin:Parity"}, {"parity_plugin": PARITY},
                      group="attnbench.tasks")
    monkeypatch.syspath_prepend(str(tmp_path))
    task_sandbox.load_plugins(reload=True)
    assert "parity" in list_tasks()
    assert task_sandbox.get("parity").origin == "plugin:parity-task"
    batch = build_task("parity").build("test", 16, 12, 0)
    assert batch.tokens.shape == (16, 12)
    assert (batch.target == ((batch.tokens - 1).sum(dim=1) % 2)).all()


def test_broken_task_plugins_are_named_and_the_rest_work(tmp_path, monkeypatch, task_sandbox, make_distribution):
    make_distribution(
        tmp_path,
        "tasks-broken",
        {"exploding": "task_exploding:Task", "not-a-task": "task_value:VALUE"},
        {"task_exploding": "import definitely_not_installed_module\n", "task_value": "VALUE = 7\n"},
        group="attnbench.tasks",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning) as caught:
        task_sandbox.load_plugins(reload=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert "'exploding' failed to load: ModuleNotFoundError" in messages
    assert "'not-a-task' failed to load: PluginError" in messages
    with pytest.raises(PluginError, match="'exploding' is unavailable"):
        build_task("exploding")
    assert build_task("copy").build("train", 2, 16, 0).tokens.shape == (2, 16)
    listing = bench("ls", "tasks", pythonpath=tmp_path)
    assert listing.returncode == 0 and "mqar" in listing.stdout
    assert "broken task plugin 'exploding'" in listing.stderr and "Traceback" not in listing.stderr


def test_plugin_file_task_runs_in_a_sweep(tmp_path, task_sandbox):
    plugin = tmp_path / "parity_plugin.py"
    plugin.write_text(PARITY + '\nfrom attnbench import register_task\nregister_task("parity", Parity)\n')
    out = tmp_path / "run"
    done = bench("run", "--plugin", str(plugin), "--profile", "smoke", "--variants", "multi-head",
                 "--tasks", "parity", "--lengths", "8", "--kinds", "accuracy", "--device", "cpu",
                 "--executor", "subprocess", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert record["task"] == "parity" and record["status"] == "ok", record["message"]
    shown = bench("show-task", "parity", "--plugin", str(plugin), "--seq-len", "6", "-n", "1")
    assert shown.returncode == 0 and "parity of bits" in shown.stdout
