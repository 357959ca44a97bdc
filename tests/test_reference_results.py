"""The committed reference run (results/reference/quick) regenerates its report, and the README
shows that run's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.runner.report import load_run, render_markdown
from attnbench.runner.store import read_records

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path("results") / "reference" / "quick"


def test_the_committed_report_regenerates_from_the_committed_files(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the report names the run directory as it was given
    committed = (REFERENCE / "report.md").read_text()
    assert render_markdown(load_run(REFERENCE)).rstrip("\n") == committed.rstrip("\n")


def test_the_reference_run_is_complete_and_its_plots_exist() -> None:
    records = read_records(ROOT / REFERENCE)
    assert len(records) == 70 and len({r["key"] for r in records}) == 70
    for name in ("accuracy-heatmap", "accuracy-by-distance", "scaling", "accuracy-speed-memory"):
        assert (ROOT / REFERENCE / "plots" / f"{name}.png").stat().st_size > 10_000


def test_readme_table_is_the_reference_reports_table() -> None:
    readme = (ROOT / "README.md").read_text()
    report = (ROOT / REFERENCE / "report.md").read_text()
    table = report.split("## Accuracy\n\n", 1)[1].split("\n\n", 1)[0]
    if "| variant |" not in table:
        pytest.fail("the report has no accuracy table")
    assert table in readme, "README's accuracy table differs from results/reference/quick/report.md"
