"""`bench plot` and runner/plots.py on small hand-written run directories."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from attnbench.cli import main
from attnbench.errors import AttnbenchError
from attnbench.runner.plots import (
    bubble_data,
    draw_run,
    figure_distance,
    figure_heatmap,
    figure_scaling,
    fit_slope,
    load_run,
    plot_run,
    variant_palette,
)

VARIANTS = {"multi-head": {}, "linear": {}, "local(window=4)": {"window": 4}}
LENGTHS = (256, 512, 1024, 2048)
FIGURES = ("accuracy-heatmap", "accuracy-by-distance", "scaling", "accuracy-speed-memory")


def accuracy_cell(label: str, task: str, score: float, *, metric: str = "accuracy", status: str = "ok",
                  by_distance: dict | None = None, seed: int = 0) -> dict:
    ok = status == "ok"
    result = {"accuracy": score, "metric": metric, "score": score, "chance": 0.125, "steps": 10,
              "by_distance": by_distance, "baseline_bits_per_byte": 4.4 if metric == "bits_per_byte" else None}
    return cell("accuracy", label, task, 32, seed, status, result if ok else None)


def efficiency_cell(label: str, n: int, seconds: float | None, peak: float | None, status: str = "ok") -> dict:
    result = {"fwd": {"median_s": seconds / 3, "iqr_s": 0.0, "runs": 3} if seconds else None,
              "fwd_bwd": {"median_s": seconds, "iqr_s": seconds * 0.1 if seconds else None, "runs": 3},
              "peak_bytes_fwd": peak, "peak_bytes_fwd_bwd": peak, "flops_fwd_bwd": 1, "mem_method": "tensor-bytes"}
    return cell("efficiency", label, None, n, 0, status, result if status == "ok" else None)


def cell(kind: str, label: str, task: str | None, n: int, seed: int, status: str, result: dict | None) -> dict:
    name = label.split("(")[0]
    return {
        "key": f"{kind}/{label}/{task or '-'}/n={n}/seed={seed}", "kind": kind, "variant": name,
        "variant_label": label, "variant_options": VARIANTS[label], "task": task, "task_label": task or "-",
        "task_options": {}, "seq_len": n, "seed": seed, "status": status,
        "message": "" if status == "ok" else f"{status} here", "result": result, "seconds": 0.1,
    }


def accuracy_cells() -> list[dict]:
    """copy (with distances; local fails past its reach), char-lm (bits per byte), translation (local unsupported)."""
    cells = []
    for label in VARIANTS:
        local = label.startswith("local")
        far = 0.12 if local else 0.9
        cells.append(accuracy_cell(label, "copy", 0.5 if local else 0.9,
                                   by_distance={"2": {"accuracy": 0.95, "count": 10}, "4": {"accuracy": 0.9, "count": 9},
                                                "8": {"accuracy": far, "count": 8}, "16": {"accuracy": far, "count": 7}}))
        cells.append(accuracy_cell(label, "char-lm", 3.0 + 0.1 * len(label), metric="bits_per_byte"))
        if local:
            cells.append(accuracy_cell(label, "translation", 0, metric="exact_match", status="unsupported"))
        else:
            cells.append(accuracy_cell(label, "translation", 0.8, metric="exact_match"))
    return cells


def efficiency_cells() -> list[dict]:
    """multi-head: time ∝ n², memory ∝ n; linear ∝ n; local times out from 2048."""
    cells = []
    for n in LENGTHS:
        cells.append(efficiency_cell("multi-head", n, 1e-8 * n**2, 1000.0 * n))
        cells.append(efficiency_cell("linear", n, 1e-5 * n, 2000.0 * n))
        if n < 2048:
            cells.append(efficiency_cell("local(window=4)", n, 2e-5 * n, 3000.0 * n))
        else:
            cells.append(efficiency_cell("local(window=4)", n, None, None, status="timeout"))
    return cells


def write_run(root: Path, cells: list[dict]) -> Path:
    """A run directory as `bench run` leaves it: env.json, grid.json, cells.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    env = {"torch": "2.13.0+cpu", "cpu": "Test CPU", "threads": 2, "device": "cpu", "cuda_device": None,
           "matmul_peak_flops": 1e11, "created": "2026-11-27T07:00:00+00:00"}
    grid = {"profile": "unit", "device": "cpu", "dtype": "fp32", "seeds": [0],
            "size": {"d_model": 32, "n_layers": 2, "n_heads": 2},
            "efficiency": {"d_model": 64, "n_heads": 4, "batch": 1, "lengths": list(LENGTHS)}}
    (root / "env.json").write_text(json.dumps(env))
    (root / "grid.json").write_text(json.dumps(grid))
    (root / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    return root


@pytest.fixture
def full_run(tmp_path):
    return write_run(tmp_path / "run", accuracy_cells() + efficiency_cells())


def test_full_run_writes_every_figure_as_png_and_svg(full_run, tmp_path):
    files = plot_run(full_run, tmp_path / "out")
    expected = {f"{name}.{fmt}" for name in FIGURES for fmt in ("png", "svg")}
    assert {f.name for f in files} == expected
    for path in files:
        assert path.parent == tmp_path / "out" and path.stat().st_size > 1000
        if path.suffix == ".png":
            image = matplotlib.image.imread(path)
            height, width = image.shape[:2]
            assert 400 <= height <= 3000 and 600 <= width <= 4000, (path.name, image.shape)
        else:
            assert "<svg" in path.read_text()[:2000]


def test_default_out_is_run_plots(full_run):
    files = plot_run(full_run)
    assert files and all(f.parent == full_run / "plots" for f in files)


def test_efficiency_only_run_draws_only_the_scaling_figure(tmp_path):
    run = write_run(tmp_path / "run", efficiency_cells())
    outcome = draw_run(run, tmp_path / "out")
    assert sorted(f.name for f in outcome.files) == ["scaling.png", "scaling.svg"]
    assert len(outcome.skipped) == 3 and all("skipped" in note for note in outcome.skipped)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scaling.png", "scaling.svg"]


def test_accuracy_only_run_skips_the_efficiency_figures(tmp_path):
    run = write_run(tmp_path / "run", accuracy_cells())
    outcome = draw_run(run, tmp_path / "out")
    assert {f.stem for f in outcome.files} == {"accuracy-heatmap", "accuracy-by-distance"}
    assert any(note.startswith("scaling: skipped") for note in outcome.skipped)


def test_palette_is_built_from_sorted_labels():
    labels = ["multi-head", "linear", "local(window=4)", "linear"]
    palette = variant_palette(labels)
    assert list(palette) == ["linear", "local(window=4)", "multi-head"]
    assert palette == variant_palette(reversed(labels))
    assert len(set(palette.values())) == 3
    assert variant_palette(f"v{i}" for i in range(14)).keys() == {f"v{i}" for i in range(14)}


def test_every_figure_draws_a_variant_in_its_palette_colour(full_run):
    run = load_run(full_run)
    palette = variant_palette(r["variant_label"] for r in run.records)
    for figure in (figure_distance(run, palette), figure_scaling(run, palette)):
        seen = {}
        for ax in figure.axes:
            # a plain line carries its label; an errorbar's label sits on its container
            drawn = [(line.get_label(), line) for line in ax.get_lines()]
            drawn += [(c.get_label(), c[0]) for c in ax.containers]
            for label, line in drawn:
                label = label.split(" (slope")[0]
                if label in palette:
                    assert seen.setdefault(label, to_rgb(line.get_color())) == to_rgb(line.get_color())
        assert seen == {k: to_rgb(v) for k, v in palette.items()}


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_fit_slope_recovers_the_exponent(power):
    lengths = [128, 256, 512, 1024]
    assert fit_slope(lengths, [3e-6 * n**power for n in lengths]) == pytest.approx(power)


def test_fit_slope_needs_two_lengths():
    assert math.isnan(fit_slope([256], [1.0]))
    assert math.isnan(fit_slope([256, 512], [1.0, float("nan")]))


def test_scaling_legend_shows_the_fitted_slope(full_run):
    run = load_run(full_run)
    figure = figure_scaling(run, variant_palette(r["variant_label"] for r in run.records))
    time_ax, memory_ax = figure.axes[:2]
    time_labels = [t.get_text() for t in time_ax.get_legend().get_texts()]
    memory_labels = [t.get_text() for t in memory_ax.get_legend().get_texts()]
    assert "multi-head (slope 2.00)" in time_labels and "linear (slope 1.00)" in time_labels
    assert "local(window=4) (slope 1.00)" in time_labels  # fitted over its ok lengths only
    assert "multi-head (slope 1.00)" in memory_labels
    # local's timeout at n=2048 is marked with its status on both panels
    for ax in (time_ax, memory_ax):
        assert "local(window=4): timeout" in [t.get_text() for t in ax.texts]
        assert any(line.get_marker() == "x" for line in ax.get_lines())


def test_scaling_memory_axis_names_the_method_of_the_points_it_draws(tmp_path):
    """Its label took the first method in the cells: 'cpu-allocator events (compiled kernel)' for
    every line, where multi-head's were tensor bytes."""
    records = efficiency_cells()
    for r in records:
        if r["variant"] == "linear" and r["result"]:
            r["result"]["mem_method"] = "cpu-allocator events (compiled kernel)"
    run = load_run(write_run(tmp_path / "mixed", records))
    memory_ax = figure_scaling(run, variant_palette(r["variant_label"] for r in run.records)).axes[1]
    labels = [t.get_text() for t in memory_ax.get_legend().get_texts()]
    assert memory_ax.get_ylabel() == "peak memory, forward+backward (MiB, methods differ: each in the legend)"
    assert "linear (slope 1.00); cpu-allocator events (compiled kernel)" in labels
    assert "multi-head (slope 1.00); tensor-bytes" in labels
    run = load_run(write_run(tmp_path / "one", efficiency_cells()))
    memory_ax = figure_scaling(run, variant_palette(r["variant_label"] for r in run.records)).axes[1]
    assert memory_ax.get_ylabel() == "peak memory, forward+backward (MiB, live tensor bytes)"


def test_heatmap_shows_failed_cells_and_a_separate_bits_per_byte_panel(full_run):
    run = load_run(full_run)
    figure = figure_heatmap(run, variant_palette(r["variant_label"] for r in run.records))
    titles = [ax.get_title() for ax in figure.axes]
    assert "accuracy or exact match (higher is better)" in titles and "bits per byte (lower is better)" in titles
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert "unsupported" in texts and "0.90" in texts
    assert "unit profile" in figure.get_suptitle() and "torch 2.13.0+cpu" in figure.get_suptitle()
    assert "trivial" not in figure.get_supxlabel()  # no cell recorded one


def test_heatmap_names_the_best_trivial_baseline_under_a_task_that_records_one(tmp_path):
    cells = accuracy_cells()
    for cell in cells:
        if cell["task"] == "copy":
            cell["result"]["baselines"] = {"majority": 0.12, "most frequent symbol": 0.29}
        if cell["task"] == "char-lm":  # lower is better: the bigram's 3.44 is the floor, not the unigram's 4.4
            cell["result"]["baselines"] = {"unigram": 4.4, "bigram": 3.44}
    run = load_run(write_run(tmp_path / "run", cells))
    figure = figure_heatmap(run, variant_palette(r["variant_label"] for r in run.records))
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert "copy\n(chance 0.12, trivial 0.29)" in labels and "translation EM\n(chance 0.12)" in labels
    every = [t.get_text() for ax in figure.axes for t in ax.get_xticklabels()]
    assert "char-lm\n(unigram 4.40, trivial 3.44)" in every
    assert "and the best trivial baseline" in figure.get_supxlabel()


def test_heatmap_marks_a_mean_over_fewer_seeds_than_the_grid_has(tmp_path):
    root = write_run(tmp_path / "run", accuracy_cells())
    grid = json.loads((root / "grid.json").read_text())
    (root / "grid.json").write_text(json.dumps({**grid, "seeds": [0, 1]}))  # seed 1 not run yet
    with open(root / "cells.jsonl", "a") as cells:  # but linear's copy has both
        cells.write(json.dumps(accuracy_cell("linear", "copy", 0.7, seed=1)) + "\n")
    run = load_run(root)
    figure = figure_heatmap(run, variant_palette(r["variant_label"] for r in run.records))
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert "0.90\n(1/2 seeds)" in texts  # multi-head's copy, seed 0 alone
    assert f"0.80\n±{math.sqrt(0.02):.2f}" in texts  # linear's copy: both seeds, no mark


def test_distance_figure_marks_local_reach_and_chance(full_run):
    run = load_run(full_run)
    palette = variant_palette(r["variant_label"] for r in run.records)
    (ax,) = [a for a in figure_distance(run, palette).axes if a.get_visible()]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [6, 6]  # (window 4 − 1) × 2 layers
    assert to_rgb(dashed[0].get_color()) == to_rgb(palette["local(window=4)"])
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert list(dotted[0].get_ydata()) == [0.125, 0.125]
    assert ax.get_xscale() == "log"


def test_bubble_uses_the_longest_length_where_all_are_ok(full_run):
    data, xlabel, ylabel, length = bubble_data(load_run(full_run))
    assert length == 1024 and "n=1024" in xlabel
    row = data.set_index("variant")
    assert row.loc["multi-head", "x"] == pytest.approx(1.0)
    assert row.loc["linear", "x"] == pytest.approx(1e-8 * 1024**2 / (1e-5 * 1024))
    # translation is left out of the average: local did not run it
    assert row.loc["local(window=4)", "y"] == pytest.approx(0.5) and row.loc["linear", "y"] == pytest.approx(0.9)
    assert "over 1 task (" in ylabel and "translation" in ylabel


def test_records_a_figure_cannot_take_leave_out_their_variant_not_the_figures(tmp_path):
    """Before: a traceback (exit 1) after six of the eight files were written."""
    cells = accuracy_cells() + efficiency_cells()
    for c in cells:
        if c["variant_label"] == "linear" and c["kind"] == "accuracy" and c["task"] == "copy":
            c["result"]["score"] = math.inf  # as a hand edit leaves it: Infinity in the JSON
        if c["variant_label"] == "local(window=4)" and c["kind"] == "efficiency" and c["seq_len"] == 1024:
            c["result"]["peak_bytes_fwd_bwd"] = None  # how the writer stores NaN
    run = write_run(tmp_path / "run", cells)
    files = plot_run(run, tmp_path / "out")
    assert {f.name for f in files} == {f"{name}.{fmt}" for name in FIGURES for fmt in ("png", "svg")}
    data, xlabel, _, _ = bubble_data(load_run(run))
    assert list(data.variant) == ["multi-head"]
    assert "linear, local(window=4) left out: no finite positive time, score or peak memory" in xlabel


def test_cli_plot_lists_the_files(tmp_path, capsys):
    run = write_run(tmp_path / "run", efficiency_cells())
    with pytest.raises(SystemExit) as done:
        main(["plot", str(run), "--out", str(tmp_path / "figs")])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "figs" / "scaling.png") in out and "accuracy-heatmap: skipped" in out


def test_cli_plot_on_a_non_run_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["plot", str(tmp_path)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an attnbench run" in err


def test_cli_plot_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "bench plot results/runs/" in capsys.readouterr().out


def test_an_empty_out_is_refused_and_the_current_folder_untouched(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", efficiency_cells())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AttnbenchError, match="^--out: empty path; name a folder"):
        draw_run(run, "")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_cli_plot_refuses_an_empty_out(tmp_path, monkeypatch, capsys):
    run = write_run(tmp_path / "run", efficiency_cells())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["plot", str(run), "--out", ""])
    assert done.value.code == 2 and "--out: empty path" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_failed_figure_write_leaves_the_previous_file(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", efficiency_cells())
    (good,) = [p for p in plot_run(run) if p.suffix == ".png"]
    before = good.read_bytes()

    def fill_the_disk(self, path, **kwargs):
        Path(path).write_bytes(before[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", fill_the_disk)
    with pytest.raises(AttnbenchError, match=f"^cannot write {good.parent}/scaling.(png|svg): No space left on device$"):
        plot_run(run)
    assert good.read_bytes() == before
    assert not [p for p in good.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_damaged_record_is_skipped_with_a_warning(tmp_path, capsys):
    cells = efficiency_cells()
    cells[0] = {**cells[0], "seq_len": "x"}
    run = write_run(tmp_path / "run", cells)
    with pytest.raises(SystemExit) as done:
        main(["plot", str(run)])
    err = capsys.readouterr().err
    assert done.value.code == 0, err
    assert err.strip() == ("bench: warning: cells.jsonl line 1 is not a valid cell record (seq_len is a string, "
                           "not an int); skipped (the cell reruns on resume)")


def test_the_heatmap_caption_fits_its_figure_and_says_only_what_its_panels_hold(tmp_path):
    """Before: one line, cut off at both edges of a heatmap of one or two tasks, and "chance level"
    under a figure of bits per byte alone."""
    cells = [c for c in accuracy_cells() if c["task"] == "char-lm"]
    run = load_run(write_run(tmp_path / "run", cells))
    figure = figure_heatmap(run, variant_palette(r["variant_label"] for r in run.records))
    caption = figure.get_supxlabel()
    assert "chance level" not in caption and "unigram's entropy of the train split" in " ".join(caption.split())
    assert max(len(line) for line in caption.splitlines()) <= figure.get_figwidth() * 11
    seeds = [accuracy_cell(label, "copy", 0.5 + 0.1 * seed, seed=seed) for label in VARIANTS for seed in (0, 1)]
    spread = load_run(write_run(tmp_path / "seeds", seeds))  # two seeds: the subject says "mean ± std over seeds"
    figure = figure_heatmap(spread, variant_palette(r["variant_label"] for r in spread.records))
    title = figure._suptitle.get_text()  # the subject too (before: cut at both ends at this width)
    assert "mean ± std over seeds" in " ".join(title.split())
    assert max(len(line) for line in title.splitlines()) <= figure.get_figwidth() * 11, title
    full = load_run(write_run(tmp_path / "full", accuracy_cells()))
    caption = figure_heatmap(full, variant_palette(r["variant_label"] for r in full.records)).get_supxlabel()
    assert "chance level" in caption and "bits per byte" in caption
