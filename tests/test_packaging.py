"""A regular (wheel) install maps variants/, tasks/, runner/ under attnbench and nothing else at the top."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (found,) = out.glob("attnbench-*.whl")
    return found


def test_wheel_holds_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"attnbench"}, top
    sources = [p for folder in ("attnbench", "variants", "tasks", "runner") for p in (ROOT / folder).rglob("*.py")]
    expected = {
        "attnbench/" + str(p.relative_to(ROOT)).removeprefix("attnbench/")
        for p in sources
        if "__pycache__" not in p.parts
    }
    assert expected - set(names) == set(), "every source module ships in the wheel (packages list)"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bench = attnbench.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_regular_install_imports_and_lists_variants(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        "import attnbench, sys; "
        "import attnbench.tasks, attnbench.runner.sweep; "
        "print(attnbench.__file__); print(','.join(attnbench.list_variants())); "
        "print(','.join(attnbench.tasks.list_tasks()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    where, names, tasks = result.stdout.split()
    assert where.startswith(str(site))  # the installed copy, not the source tree
    assert names == "additive,dot-product,linear,local,multi-head"
    assert {"copy", "mqar", "listops", "text-cls", "translation"} <= set(tasks.split(","))


def test_editable_install_is_the_source_tree():
    import attnbench.variants.local as local

    assert Path(local.__file__).resolve() == ROOT / "variants" / "local.py"
