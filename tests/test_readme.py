"""The README's examples run, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from attnbench import build_task, list_tasks, list_variants
from attnbench.tasks.base import accuracy_of

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(registers: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if f"{registers}(" in b]


def test_the_add_a_variant_example_runs_and_passes_the_checks(sandbox):
    blocks = python_blocks("register_variant")
    assert len(blocks) == 1
    namespace: dict = {"__name__": "__main__"}  # as `python my_attention.py`: the block checks itself
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "cosine-demo" in list_variants()
    layer = namespace["layer"]
    assert layer.options == {"temperature": 5.0}
    x = torch.randn(2, 7, 64)
    out, weights = layer(x, need_weights=True)
    assert out.shape == (2, 7, 64) and weights.shape == (2, 4, 7, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 7))


def test_the_add_a_task_example_builds_disjoint_splits_at_chance(sandbox):
    blocks = python_blocks("register_task")
    assert len(blocks) == 1
    namespace: dict = {"__name__": "__main__"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "majority-demo" in list_tasks()
    task = build_task("majority-demo", symbols=4)
    assert (task.vocab_size, task.n_classes, task.chance) == (5, 4, 0.25)
    batch = namespace["batch"]
    assert batch.tokens.shape == (8, 33) and int(batch.tokens.min()) >= 1 and int(batch.tokens.max()) <= 4
    counts = torch.stack([(batch.tokens == s).sum(1) for s in range(1, 5)], 1)
    assert torch.equal(counts.argmax(1), batch.target)  # the target is the majority symbol
    splits = {split: {tuple(row) for row in task.build(split, n=50, seq_len=9, seed=1).tokens.tolist()}
              for split in ("train", "valid", "test")}
    assert not (splits["train"] & splits["valid"]) and not (splits["train"] & splits["test"])


def test_ci_runs_the_readme_test_command_verbatim():
    commands = re.findall(r"^# 2\. install and run the tests\n(.+)$", README, flags=re.M)
    assert len(commands) == 1
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci_lines
    assert "torch==2.13.0" in commands[0] and commands[0].rstrip().endswith("pytest")


def test_the_trivial_baseline_override_the_readme_shows_runs_on_its_task(sandbox):
    exec(compile(python_blocks("register_task")[0], "README.md", "exec"), {"__name__": "__main__"})
    line = re.search(r"e\.g\. `(return \{\*\*super\(\)\.trivial_baselines.*?)`", README, flags=re.S)
    assert line, "the README's trivial-baseline example moved"
    task = build_task("majority-demo", symbols=4)
    namespace = {"accuracy_of": accuracy_of, "Base": type(task)}
    exec("class FirstSymbol(Base):\n    def trivial_baselines(self, train, test):\n        "
         + " ".join(line.group(1).split()), namespace)
    train, test = task.build("train", 400, 9, 0), task.build("test", 400, 9, 0)
    baselines = namespace["FirstSymbol"](symbols=4).trivial_baselines(train, test)
    assert set(baselines) == {"majority", "first symbol"}
    first = int(((test.tokens[:, 0] - 1) == test.target).sum()) / len(test)
    assert baselines["first symbol"] == first and 0.25 < first < 0.6  # the first symbol is likelier the majority
