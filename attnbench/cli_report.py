"""`bench report` (LRA-style tables of a run) and `bench compare` (a regression gate between two runs)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from attnbench.cli import Choice, RunPath, cli
from attnbench.errors import AttnbenchError
from attnbench.runner.report import (
    compare_runs,
    load_run,
    nothing_compared,
    render_comparison,
    render_markdown,
    write_csv,
)
from attnbench.runner.store import write_atomically


@cli.command("report")
@click.argument("run", type=RunPath())
@click.option("--format", "fmt", type=Choice(["md", "csv"]), default="md", show_default=True,
              help="md: one GitHub-markdown report; csv: one CSV file per table.")
@click.option("--out", default=None,
              help="md: the file to write (default: stdout). csv: the path prefix, FILE → FILE_accuracy.csv, "
                   "FILE_long_range.csv, FILE_effective_range.csv, FILE_efficiency.csv, FILE_scaling.csv "
                   "(a .csv suffix is dropped; default RUN/report_*.csv). An existing folder (or a path ending "
                   "in /) gets the files inside it: DIR/report.md, or DIR/report_accuracy.csv, ...")
def report_command(run: Path, fmt: str, out: str | None) -> int:
    """Tabulate a run directory: accuracy (LRA-style), long-range ranges, speed and memory vs multi-head.

    Reads only RUN's env.json, grid.json and cells.jsonl; nothing is re-run.

    \b
    Examples:
      bench report results/runs/20260101-120000-quick
      bench report RUN --out RUN/report.md
      bench report RUN --format csv --out tables/quick   # tables/quick_accuracy.csv, ...
      bench report RUN --format csv --out tables/        # tables/report_accuracy.csv, ...
    """
    target = _report_target(out, fmt)
    loaded = load_run(run)
    if fmt == "csv":
        for path in write_csv(loaded, target if target is not None else loaded.path / "report"):
            click.echo(str(path))
        return 0
    text = render_markdown(loaded)
    if target is None:
        click.echo(text, nl=False)
        return 0
    click.echo(str(write_atomically(target, lambda tmp: tmp.write_text(text))))
    return 0


def _report_target(out: str | None, fmt: str) -> Path | None:
    """`--out` as the markdown file or the CSV prefix; a folder (existing, or written with a trailing
    /) holds report.md or report_*.csv. An empty path is refused: it would mean the current folder."""
    if out is None:
        return None
    if not out.strip():
        raise AttnbenchError("--out: empty path; name a file or folder, e.g. --out RUN/report.md")
    target = Path(out)
    if out.endswith("/") or target.is_dir():
        target = target / ("report.md" if fmt == "md" else "report")
    return target


@cli.command("compare")
@click.argument("run_a", type=RunPath())
@click.argument("run_b", type=RunPath())
@click.option("--rtol", type=float, default=0.05, show_default=True,
              help="Relative tolerance: B may be this much worse than A before it counts as a regression.")
def compare_command(run_a: Path, run_b: Path, rtol: float) -> int:
    """Compare two runs cell by cell (B against A); exit 1 if any metric regresses beyond --rtol.

    A regression: score down by more than rtol relative (bits per byte: up), the forward's or the
    forward+backward's median time or peak memory up by more than rtol (where a cell was timed
    forward only, having no backward on its device: its forward's alone), an efficiency cell timed
    fwd+bwd in A and forward only in B, or a cell ok in A and not ok in B. Cells in one run only are
    listed, not counted; but no cell in both runs fails (a gate that compared nothing). A cell whose
    data differ between the runs (its recorded data_digest: a task's generator or split changed) is
    listed as other task data, not compared. Runs whose grids differ in profile, dtype, cross
    variant, model size, training or efficiency settings, or the bytes of a data file a task reads,
    are refused: their cells share keys, not conditions (runs on different machines, or on other
    plugins, are compared, with a note naming the difference). Exit codes: 0 no regression,
    1 regressions (listed) or nothing compared, 2 bad input.

    \b
    Examples:
      bench compare results/runs/before results/runs/after
      bench compare before after --rtol 0.10     # allow 10 % noise in time and memory
    """
    if not 0 <= rtol < math.inf:  # inf would pass every regression without a word
        raise AttnbenchError(f"--rtol must be a finite number >= 0, got {rtol}")
    a, b = load_run(run_a), load_run(run_b)
    comparison = compare_runs(a, b, rtol)
    click.echo(render_comparison(a, b, comparison), nl=False)
    if comparison.compared.empty:
        click.echo(f"bench compare: nothing compared: {nothing_compared(comparison)}", err=True)
        return 1
    return 1 if not comparison.regressions.empty else 0
