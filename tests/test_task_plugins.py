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
    assert "bench: warning: task plugin 'exploding' failed to load" in listing.stderr and "Traceback" not in listing.stderr


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


def test_a_plugin_task_with_a_string_max_seq_len_is_one_line(tmp_path, task_sandbox):
    """Before: registered, then `TypeError: '>' not supported between 'int' and 'str'` in show-task."""
    plugin = tmp_path / "parity_plugin.py"
    spec = PARITY.replace('licence="generated (no data)")', 'licence="generated (no data)", max_seq_len="64")')
    plugin.write_text(spec + '\nfrom attnbench import register_task\nregister_task("parity", Parity)\n')
    for args in (["show-task", "parity", "--seq-len", "8"], ["run", "--tasks", "parity", "--dry-run"]):
        done = bench(*args, "--plugin", str(plugin))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip() == (f"bench: error: --plugin {plugin}: task 'parity': class Parity: "
                                       "spec.max_seq_len must be int | None, got str '64'")


def _task(kind: str, **attrs):
    """A one-example-shape plugin task whose `sample` and sizes a test sets: what authors get wrong."""
    from attnbench.tasks import Example, GeneratedTask, TaskSpec

    class Broken(GeneratedTask):
        spec = TaskSpec(kind=kind, metric="accuracy", has_distance=attrs.get("has_distance", False))
        vocab_size, n_classes, chance = 3, 2, 0.5

        def sample(self, rng, seq_len):
            tokens = (rng.integers(1, self.vocab_size, size=seq_len)).tolist()  # ValueError at vocab_size 0
            target = attrs.get("target", 1 if kind == "classify" else [1] * seq_len)
            return Example(attrs.get("tokens", tokens), target, attrs.get("meta", {}))

    for name in ("vocab_size", "n_classes", "chance"):
        if name in attrs:
            setattr(Broken, name, attrs[name])
    Broken.task_name = "broken"
    return Broken()


@pytest.mark.parametrize(
    ("kind", "attrs", "message"),
    [
        ("classify", {"vocab_size": 0}, "broken: vocab_size is 0; set it in setup()"),
        ("classify", {"n_classes": None}, "broken: n_classes is None; set it in setup()"),
        ("classify", {"tokens": [7] * 6}, "broken: built a token id of 7, not below vocab_size = 3 (set in setup())"),
        ("classify", {"target": 2}, "broken: built a target of 2, not below n_classes = 2 (set in setup())"),
        ("classify", {"target": -1}, "broken: built a target of -1; ids are in [0, n_classes)"),
        ("tag", {"target": [1, 1, 5, -100, 0, 0]}, "broken: built a target of 5, not below n_classes = 2 (set in setup())"),
        ("lm", {"target": [3] * 6}, "broken: built a target of 3, not below vocab_size = 3 (set in setup())"),
        ("tag", {"target": 1}, "broken: a tag task's Example.target is a sequence of at most 6 (one per position), got one int"),
        ("tag", {"target": [1] * 7}, "broken: a tag task's Example.target is a sequence of at most 6 (one per position), got 7 targets"),
        ("classify", {"target": [1]}, "broken: a classify task's Example.target is one int, got list"),
        ("classify", {"tokens": [1] * 7}, "broken: sample() gave 7 tokens for seq_len=6"),
        # before: each of these was recorded as something else (a score, or the variant diverging)
        ("classify", {"tokens": [1, 2, 0, 1, 2]}, "broken: sample() gave the pad id 0 at position 2 of an example's "
         "tokens; padding is masked from attention, so give content ids other than the pad id"),
        ("tag", {"target": [-100] * 6}, "broken: built 4 examples whose every target is IGNORE_INDEX (-100): nothing "
         "to learn or score; label at least one position"),
        ("classify", {"has_distance": True}, "broken: declares has_distance=True but records no meta['distance'] (an "
         "int per example for a classify task, else one per target position)"),
        ("classify", {"has_distance": True, "meta": {"distance": [1] * 6}}, "broken: meta['distance'] must be int64 "
         "of the targets' shape (4,) (an int per example for a classify task, else one per target position), got "
         "(4, 6) torch.int64"),  # before: an IndexError in training's distance buckets
        ("tag", {"has_distance": True, "meta": {"distance": 2.5}}, "broken: meta['distance'] must be int64 of the "
         "targets' shape (4, 6) (an int per example for a classify task, else one per target position), got list "
         "(not ints)"),  # before: "records no meta['distance']"
        ("classify", {"meta": {"distance": 3}}, "broken: records meta['distance'] but does not declare "
         "has_distance=True in its TaskSpec"),
        ("classify", {"chance": 5.0}, "broken: chance is 5.0; set it in setup() to the score of answering at random, "
         "from 0 to 1"),
        ("classify", {"chance": None}, "broken: chance is None; set it in setup() to the score of answering at random, "
         "from 0 to 1"),
    ],
)
def test_a_task_that_builds_outside_its_contract_is_one_line(kind, attrs, message):
    """Before: an IndexError inside the model's embedding or loss, in every cell of the task."""
    from attnbench.tasks.base import TaskError

    with pytest.raises(TaskError) as caught:
        _task(kind, **attrs).build("train", n=4, seq_len=6, seed=0)
    assert str(caught.value) == message


def test_a_numpy_chance_is_a_number_and_recorded_as_one():
    import json

    import numpy as np

    task = _task("classify", chance=np.float32(0.5))
    assert task.build("train", n=4, seq_len=6, seed=0).target.shape == (4,)
    assert json.dumps({"chance": task.chance}) == '{"chance": 0.5}'  # before: float32 is not JSON serializable


def test_a_task_within_its_contract_builds_with_unlabelled_positions():
    batch = _task("tag", target=[-100, 1, 0, -100, 1, 1]).build("train", n=4, seq_len=6, seed=0)
    assert batch.target.shape == (4, 6)


def test_a_task_whose_make_returns_the_wrong_shapes_is_one_line():
    import torch

    from attnbench.tasks import TaskSpec
    from attnbench.tasks.base import Batch, Task, TaskError

    class Corpus(Task):
        spec = TaskSpec(kind="classify", metric="accuracy")
        vocab_size, n_classes, chance, task_name = 5, 2, 0.5, "corpus"
        shapes = ((4, 6), (4, 1))

        def make(self, split, n, seq_len, seed):
            tokens = torch.ones(self.shapes[0], dtype=torch.long)
            return Batch(tokens, tokens == 0, torch.zeros(self.shapes[1], dtype=torch.long))

    with pytest.raises(TaskError, match=r"^corpus: built targets of shape \(4, 1\) and dtype torch.int64; "
                                        r"a classify task's are \(4,\) int64$"):
        Corpus().build("train", n=4, seq_len=6, seed=0)
    Corpus.shapes = ((4, 5), (4,))
    with pytest.raises(TaskError, match=r"^corpus: built tokens of shape \(4, 5\) and dtype torch.int64, "
                                        r"expected \(4, 6\) int64$"):
        Corpus().build("train", n=4, seq_len=6, seed=0)
