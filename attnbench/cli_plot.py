"""`bench plot`: a run's figures (accuracy heatmap, accuracy by distance, scaling, bubble chart)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from attnbench.cli import RunPath, cli, console


@cli.command("plot")
@click.argument("run", type=RunPath())
@click.option("--out", default=None, help="Folder for the figures (default RUN/plots).")  # text: '' is refused
def plot_command(run: Path, out: str | None) -> None:
    """Draw a run's figures as PNG and SVG from its files (nothing is re-run).

    \b
    Figures (each skipped, with a note, when the run lacks the cells it needs):
      accuracy-heatmap        variant × task test score (bits-per-byte tasks in their own panel)
      accuracy-by-distance    accuracy per dependency-distance bucket; local's reach dashed
      scaling                 fwd+bwd time and peak memory vs n, log–log, fitted slope in the legend
      accuracy-speed-memory   LRA-style bubbles: speed-up vs multi-head, mean accuracy, peak memory

    \b
    Examples:
      bench plot results/runs/20261127-101500-quick
      bench plot results/runs/20261127-101500-quick --out figures/
    """
    from attnbench.runner.plots import draw_run  # matplotlib loads only for this command

    outcome = draw_run(run, out)
    for note in outcome.skipped:
        console.print(Text(note, style="yellow"), highlight=False)
    for path in outcome.files:
        console.print(str(path), highlight=False, soft_wrap=True)
    console.print(f"wrote {len(outcome.files)} files", highlight=False)
