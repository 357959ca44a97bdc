"""The README's examples run, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

from attnbench import list_variants

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "register_variant(" in b]


def test_the_add_a_variant_example_runs_and_passes_the_checks(sandbox):
    blocks = python_blocks()
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the block asserts its own checks
    assert "cosine-demo" in list_variants()
    assert namespace["layer"].spec.returns_weights is False


def test_ci_runs_the_readme_test_command_verbatim():
    commands = re.findall(r"^# 2\. install and run the tests\n(.+)$", README, flags=re.M)
    assert len(commands) == 1
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci_lines
    assert "torch==2.13.0" in commands[0] and commands[0].rstrip().endswith("pytest")
