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


def test_the_reference_cells_were_trained_on_the_data_this_code_builds() -> None:
    """Each committed accuracy cell's data_digest is what this tree's tasks build for it: a task whose
    generator, split or sampling changed (char-lm's offsets) cannot keep the old run as its reference
    without this test failing."""
    import json

    from attnbench.runner.train import data_digest, task_data
    from attnbench.tasks import build_task

    train = json.loads((ROOT / REFERENCE / "grid.json").read_text())["train"]
    sizes = {"train": train["n_train"], "valid": train["n_valid"], "test": train["n_test"]}
    seen: dict[tuple, str] = {}
    for record in read_records(ROOT / REFERENCE):
        if record["kind"] != "accuracy" or record["status"] != "ok":
            continue
        cell = (record["task"], json.dumps(record["task_options"], sort_keys=True), record["seq_len"], record["seed"])
        if cell not in seen:
            task = build_task(record["task"], **record["task_options"])
            seen[cell] = data_digest({split: task_data(task, split, n, record["seq_len"], record["seed"])
                                      for split, n in sizes.items()})
        assert record["result"]["data_digest"] == seen[cell], record["key"]
    assert len(seen) == 11  # every task the quick profile runs
