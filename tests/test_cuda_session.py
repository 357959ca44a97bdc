"""benchmarks/cuda_session.sh, the one-call script for a GPU machine: it cannot be run here (no
GPU), so what can go stale without one is checked: its syntax, its usage line, and that every
variant selection it passes to `bench` still parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from attnbench.selection import parse_selection
from attnbench.variants.base import VARIANTS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_session.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@needs_bash
def test_the_script_parses_and_refuses_an_unknown_argument_with_its_usage():
    assert subprocess.run(["bash", "-n", SCRIPT], capture_output=True).returncode == 0
    done = subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: OUT=DIR bash benchmarks/cuda_session.sh")


def test_every_variant_selection_it_passes_to_bench_parses():
    selections = re.findall(r"--variants '?([^' \n]+)'?", SCRIPT.read_text())
    assert len(selections) == 4, selections  # perf and the three check steps
    for text in selections:
        chosen = parse_selection(text, VARIANTS, lambda n: VARIANTS[n].spec.options)
        assert chosen and all(c.name in VARIANTS for c in chosen)
