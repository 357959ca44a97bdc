"""Shared fixtures: a sandboxed variant registry, simulated installed plugin packages, `bench` in-process;
and the `compiler` marker, which skips a test where kernel=compiled cannot be built."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import pytest

from attnbench.cli import main
from attnbench.variants.base import VARIANTS
from attnbench.variants.compiled import has_compiler


@pytest.fixture
def sandbox():
    """Every registration made in the test is undone afterwards."""
    with VARIANTS.temporary():
        yield VARIANTS


@pytest.fixture(scope="session")
def bench():
    """`bench(*args)`: run `bench ARGS` in this process; its exit code (the output stays for capsys)."""
    return exit_code


@pytest.fixture
def bench_output(capsys):
    """`bench_output(*args)`: run `bench ARGS` in this process; (exit code, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        code = exit_code(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def exit_code(*args) -> int:
    """The exit code of `bench ARGS` run in this process (arguments may be paths)."""
    try:
        main([str(a) for a in args])
    except SystemExit as done:
        return done.code
    raise AssertionError("main() did not exit")


@pytest.fixture
def make_distribution():
    """`make_distribution(root, dist, entry_points, modules)`: a simulated installed package."""
    return write_distribution


def write_distribution(
    root: Path,
    dist: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
    group: str = "attnbench.variants",
) -> Path:
    """Lay out what `pip install` leaves for a package: its modules and a .dist-info with entry points.

    `importlib.metadata` finds it once `root` is on sys.path, exactly as for a real install.
    """
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    return root


@functools.cache
def _compiler_missing() -> bool:
    return not has_compiler()


def pytest_runtest_setup(item):
    """`@pytest.mark.compiler`: skipped where torch.compile cannot build CPU kernels."""
    if item.get_closest_marker("compiler") and _compiler_missing():
        pytest.skip("kernel=compiled needs a C++ compiler")
