"""`bench plot`: seaborn figures of one run directory, drawn from its files alone (PNG and SVG).

Four figures, each titled with the run's conditions and coloured by one palette built once from
the sorted variant labels (`variant_palette`), so a variant has the same colour everywhere:

- ``accuracy-heatmap``: variant × task test score. Tasks scored in accuracy units (accuracy,
  exact match) share a 0–1 scale; bits-per-byte tasks (lower is better) get their own panel with
  a reversed colour scale. A cell that did not end ``ok`` is grey and shows its status.
- ``accuracy-by-distance``: accuracy per power-of-two dependency-distance bucket, one panel per
  task that reports distances; chance dotted; a windowed variant's reach ((window − 1) × layers)
  dashed in its colour.
- ``scaling``: attention-layer forward+backward time (median, IQR bars) and peak memory vs
  sequence length, log–log, the least-squares slope in each legend label; a length where a
  variant ran out of time or memory is an × at the top of the panel.
- ``accuracy-speed-memory``: the Long Range Arena's bubble chart: x = forward+backward speed-up
  over ``multi-head`` (tokens/s without it) at the longest length where most variants are ok,
  y = mean accuracy over the accuracy-unit tasks every variant ran, area = peak memory.

A run without accuracy (or efficiency) cells skips the figures that need them, with a note.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window (set before anything imports pyplot)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from attnbench.errors import AttnbenchError  # noqa: E402
from attnbench.runner.report import (  # noqa: E402
    AVERAGE,
    accuracy_frame,
    distance_frame,
    efficiency_frame,
    forward_only_cells,
    grid_seeds,
    grid_variants,
    scaling_exponent,
    window_reach,
    with_defaults,
)
from attnbench.runner.store import Run, StoreError, threads_text, write_atomically  # noqa: E402
from attnbench.runner.store import load_run as read_run  # noqa: E402

__all__ = [
    "FIGURES",
    "PlotOutcome",
    "Run",
    "draw_run",
    "fit_slope",
    "load_run",
    "plot_run",
    "scaling_labels",
    "variant_palette",
]

ACCURACY_METRICS = ("accuracy", "exact_match")  # higher is better, 0–1: one shared colour scale
FORMATS = ("png", "svg")
DPI = 150
IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".eps")  # an --out named so is taken for a file
GREY = "#d9d9d9"
RC = {"svg.fonttype": "none", "axes.titlesize": 11, "axes.labelsize": 10}


@dataclass(frozen=True)
class PlotOutcome:
    """The files written and, for each figure not drawn, why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# -- reading -------------------------------------------------------------------------------


def load_run(run_dir: str | Path) -> Run:
    """The run's files (attnbench.runner.store.load_run), each record checked for what plots need."""
    run = read_run(run_dir)
    for record in run.records:
        _check_record(run.path, record)
    return run


def _check_record(path: Path, record: dict) -> None:
    """One clear line for a cell the figures cannot read (hand-edited or from another version)."""
    # the store has skipped records with a field of the wrong type or an ok cell without its result
    missing = [k for k in ("kind", "variant_label", "seq_len") if k not in record]
    if missing:
        raise StoreError(f"{path / 'cells.jsonl'}: cell {record['key']!r} lacks {', '.join(missing)}")


# -- tables the figures draw ---------------------------------------------------------------


def _accuracy_view(run: Run) -> pd.DataFrame:
    """`report.accuracy_frame` as the figures read it: one row per (variant, task, length), no Average.

    `column` is the report's column name ("task (n=N)" when the run has several lengths for it);
    `score` is the mean over ok seeds and `status` is "ok" when any seed scored; `by_distance` is
    the accuracy per bucket, seeds pooled as the report pools them (see `_distance_curves`), and
    `variant_options` the variant's options with their defaults filled in (`report.with_defaults`).
    """
    records = run.records
    frame = accuracy_frame(records, grid_seeds(run), grid_variants(run))
    frame = frame[frame.column != AVERAGE].rename(columns={"mean": "score", "baseline_bits_per_byte": "baseline"})
    curves = _distance_curves(records)
    options = {r["variant_label"]: with_defaults("variant", r.get("variant"), r.get("variant_options"))
               for r in records}
    cells = list(zip(frame.variant, frame.task, frame.seq_len))
    return frame.assign(
        status=frame.status.where(frame.ok_seeds == 0, "ok"),
        by_distance=[curves.get(cell) for cell in cells],
        variant_options=[options.get(v, {}) for v, _, _ in cells],  # {}: a variant not run yet
    )


def _distance_curves(records: Sequence[dict]) -> dict[tuple[str, str, int], dict[int, float]]:
    """{(variant, task, n): {bucket lower edge: accuracy}} from `report.distance_frame` (seeds pooled)."""
    curves: dict[tuple[str, str, int], dict[int, float]] = {}
    for row in distance_frame(records).itertuples():
        curves.setdefault((row.variant, row.task, row.seq_len), {})[int(row.bucket)] = float(row.accuracy)
    return curves


# -- shared pieces -------------------------------------------------------------------------


def variant_palette(labels: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per variant label, assigned in sorted order (the same run → the same colours)."""
    names = sorted(set(labels))
    colours = sns.color_palette("colorblind" if len(names) <= 10 else "husl", len(names))
    return {name: tuple(colour) for name, colour in zip(names, colours)}


def fit_slope(lengths: Sequence[float], values: Sequence[float]) -> float:
    """The report's scaling exponent (least-squares slope of log value vs log n); NaN under 2 points."""
    slope = scaling_exponent(lengths, values)
    return math.nan if slope is None else slope


def scaling_labels(frame: pd.DataFrame, column: str) -> dict[str, str]:
    """Legend label per variant: 'linear (slope 1.02)' from the ok rows of `column` vs seq_len."""
    labels = {}
    for variant, group in frame.groupby("variant"):
        ok = group[group.status == "ok"]
        slope = fit_slope(ok.seq_len, ok[column])
        labels[variant] = f"{variant} (slope {slope:.2f})" if math.isfinite(slope) else f"{variant} (slope n/a)"
    return labels


def conditions(run: Run, kind: str) -> str:
    """'quick profile · cpu Intel Xeon · torch 2.13.0 · 2 threads · …' for a figure's title."""
    env, grid = run.env, run.grid
    device = env.get("device") or grid.get("device") or "?"
    where = env.get("cuda_device") if device == "cuda" and env.get("cuda_device") else env.get("cpu")
    parts = [f"{grid.get('profile', '?')} profile", f"{device}" + (f" ({where})" if where else "")]
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    threads = env.get("threads", grid.get("threads"))
    if threads is not None:
        parts.append(threads_text(threads))
    if grid.get("dtype"):
        parts.append(grid["dtype"])
    if kind in ("accuracy", "both"):
        size = grid.get("size") or {}
        if size:
            parts.append(f"model d={size.get('d_model')}, {size.get('n_layers')} layers, {size.get('n_heads')} heads")
        seeds = sorted({r["seed"] for r in run.records if r["kind"] == "accuracy" and r.get("seed") is not None})
        if seeds:
            parts.append(f"seeds {','.join(map(str, seeds))}")
    if kind in ("efficiency", "both"):
        eff = grid.get("efficiency") or {}
        if eff:
            parts.append(
                f"one attention layer d={eff.get('d_model')}, {eff.get('n_heads')} heads, batch {eff.get('batch')}"
            )
    return " · ".join(parts)


def _title(fig: Figure, what: str, run: Run, kind: str) -> None:
    """The figure's subject over its conditions, each wrapped to the figure's width (the conditions
    at ' · '): a narrow figure (a heatmap of two tasks) cut a long subject at both ends."""
    width = int(fig.get_figwidth() * 11)  # characters of the 12-pt title per inch, roughly
    lines, line = textwrap.wrap(what, width) or [what], ""
    for part in conditions(run, kind).split(" · "):
        if line and len(line) + 3 + len(part) > width:
            lines.append(line)
            line = part
        else:
            line = f"{line} · {part}" if line else part
    lines.append(line)
    fig.suptitle("\n".join(lines), fontsize=12)


def _log2_axis(ax, lengths: Sequence[int]) -> None:
    """Base-2 log x axis ticked at exactly `lengths` (the lengths measured, or bucket edges)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(lengths))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v)}"))
    ax.xaxis.set_minor_locator(NullLocator())


# -- figures -------------------------------------------------------------------------------


def figure_heatmap(run: Run, palette: dict) -> Figure | None:
    """Variant × task test score; bits-per-byte tasks in their own panel, reversed scale."""
    frame = _accuracy_view(run)
    if frame.empty:
        return None
    variants = sorted(frame.variant.unique())
    task_order = list(dict.fromkeys(frame.sort_values(["task", "seq_len"]).column))
    panels = []
    acc_cols = [c for c in task_order if _higher_is_better(frame, c)]
    low_cols = [c for c in task_order if not _higher_is_better(frame, c)]
    if acc_cols:
        panels.append(("accuracy or exact match (higher is better)", acc_cols, "viridis", (0.0, 1.0), "test score"))
    if low_cols:
        scores = frame[frame.column.isin(low_cols)].score.dropna()
        low, high = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)
        pad = max(0.05, 0.1 * (high - low))
        panels.append(("bits per byte (lower is better)", low_cols, "viridis_r", (low - pad, high + pad),
                       "bits per byte"))
    widths = [len(cols) + 1.2 for _, cols, *_ in panels]
    fig = Figure(figsize=(max(6.0, 0.95 * sum(widths) + 2.2), 3.0 + 0.55 * len(variants)), layout="constrained")
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    for ax, (name, cols, cmap, (vmin, vmax), bar_label) in zip(axes, panels):
        sub = frame[frame.column.isin(cols)]
        score = sub.pivot(index="variant", columns="column", values="score").reindex(index=variants, columns=cols)
        status = sub.pivot(index="variant", columns="column", values="status").reindex(index=variants, columns=cols)
        std = sub.pivot(index="variant", columns="column", values="std").reindex(index=variants, columns=cols)
        seeds, planned = (sub.pivot(index="variant", columns="column", values=key).reindex(index=variants, columns=cols)
                          for key in ("ok_seeds", "seeds"))
        text = pd.DataFrame("", index=variants, columns=cols)
        for v in variants:
            for c in cols:
                s = score.loc[v, c]
                if pd.notna(s):
                    text.loc[v, c] = f"{s:.2f}" + (f"\n±{std.loc[v, c]:.2f}" if pd.notna(std.loc[v, c]) else "")
                    if seeds.loc[v, c] < planned.loc[v, c]:  # a mean over fewer seeds: not comparable
                        text.loc[v, c] += f"\n({int(seeds.loc[v, c])}/{int(planned.loc[v, c])} seeds)"
                elif pd.notna(status.loc[v, c]):
                    text.loc[v, c] = str(status.loc[v, c])
                else:
                    text.loc[v, c] = "–"
        ax.set_facecolor(GREY)  # cells without a score are masked and show the grey background
        sns.heatmap(score.astype(float), ax=ax, annot=text.values, fmt="", cmap=cmap, vmin=vmin, vmax=vmax,
                    linewidths=1.0, linecolor="white", cbar_kws={"label": bar_label, "shrink": 0.9},
                    annot_kws={"fontsize": 9})
        ax.grid(False)
        for i, v in enumerate(variants):  # seaborn leaves masked (unscored) cells blank: name their status
            for j, c in enumerate(cols):
                if pd.isna(score.loc[v, c]):
                    ax.text(j + 0.5, i + 0.5, text.loc[v, c], ha="center", va="center", fontsize=9,
                            color="0.2", fontstyle="italic")
        ax.set_xticklabels([_column_label(frame, c) for c in cols], rotation=35, ha="right", fontsize=9)
        ax.set_yticklabels(variants if ax is axes[0] else [""] * len(variants), rotation=0)
        for tick in ax.get_yticklabels():
            tick.set_color(palette.get(tick.get_text(), "black"))
            tick.set_fontweight("bold")
        ax.set_xlabel("")
        ax.set_ylabel("variant" if ax is axes[0] else "")
        ax.set_title(name)
    trivial = " and the best trivial baseline (report)" if frame.trivial.notna().any() else ""
    said = ([f"chance level{trivial}"] if acc_cols else []) + (
        [f"for bits per byte the unigram's entropy of the train split{trivial}"] if low_cols else [])
    caption = f"task (below each name: {'; '.join(said)})"
    fig.supxlabel(textwrap.fill(caption, width=int(fig.get_figwidth() * 11)), fontsize=10)
    spread = ", mean ± std over seeds" if frame["std"].notna().any() else ""
    _title(fig, f"Test score per variant and task (grey: cell did not finish ok{spread})", run, "accuracy")
    return fig


def _higher_is_better(frame: pd.DataFrame, column: str) -> bool:
    return bool(frame.loc[frame.column == column, "higher_is_better"].iloc[0])


def _column_label(frame: pd.DataFrame, column: str) -> str:
    row = frame[frame.column == column].iloc[0]
    if not row.higher_is_better:  # bits per byte: the unigram (its chance) and the best byte model (the bigram)
        floors = ([f"unigram {row.baseline:.2f}"] if pd.notna(row.baseline) else []) + (
            [f"trivial {row.trivial:.2f}"] if pd.notna(row.trivial) else [])
        return f"{column}\n({', '.join(floors)})" if floors else column
    tag = " EM" if row.metric == "exact_match" else ""
    floors = ([f"chance {row.chance:.2f}"] if pd.notna(row.chance) else []) + (
        [f"trivial {row.trivial:.2f}"] if pd.notna(row.trivial) else [])
    return f"{column}{tag}\n({', '.join(floors)})" if floors else column


def figure_distance(run: Run, palette: dict) -> Figure | None:
    """Accuracy per dependency-distance bucket; one panel per task that reports distances."""
    frame = _accuracy_view(run)
    frame = frame[frame.by_distance.notna()] if not frame.empty else frame
    if frame.empty:
        return None
    columns = sorted(frame.column.unique())
    n_layers = (run.grid.get("size") or {}).get("n_layers")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 0.4, 3.3 * nrows + 1.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    handles: dict[str, Line2D] = {}
    for ax, column in zip(axes.flat, columns):
        sub = frame[frame.column == column]
        edges = sorted({e for b in sub.by_distance for e in b})
        edges.append(2 * edges[-1])  # the last bucket's upper edge
        for _, row in sub.sort_values("variant").iterrows():
            x = sorted(row.by_distance)
            colour = palette[row.variant]
            # a bucket [d, 2d) is drawn at its geometric centre, between the tick marks of its edges
            (line,) = ax.plot([d * math.sqrt(2) for d in x], [row.by_distance[e] for e in x], marker="o", ms=4,
                              lw=1.8, color=colour, label=row.variant)
            handles.setdefault(row.variant, line)
            window = row.variant_options.get("window")
            reach = window_reach(window, n_layers) if isinstance(window, int) else None
            if reach:  # window 1 sees only its own position: no distance to mark on the log axis
                ax.axvline(reach, color=colour, ls="--", lw=1.3)
                label = f"{row.variant} reach: ({window} − 1) × {n_layers} layers = {reach}"
                handles.setdefault(f"reach {row.variant}", Line2D([], [], color=colour, ls="--", label=label))
                edges = sorted(set(edges) | {reach})
        chance = sub.chance.dropna()
        if len(chance):
            ax.axhline(chance.iloc[0], color="0.35", ls=":", lw=1.4)
            handles.setdefault("chance", Line2D([], [], color="0.35", ls=":", label="chance"))
        trivial = sub.trivial.dropna()
        if len(trivial) and (not len(chance) or trivial.iloc[0] > chance.iloc[0]):  # what no reach is needed for
            ax.axhline(trivial.iloc[0], color="0.55", ls="-.", lw=1.2)
            handles.setdefault("trivial", Line2D([], [], color="0.55", ls="-.", label="best trivial baseline"))
        powers = [2**k for k in range(int(math.log2(min(edges))), int(math.ceil(math.log2(max(edges)))) + 1)]
        _log2_axis(ax, powers)
        ax.set_xlim(min(edges) / 1.25, max(edges) * 1.25)
        ax.set_ylim(-0.02, 1.04)
        ax.set_title(f"{sub.task.iloc[0]} (n={int(sub.seq_len.iloc[0])})")
        ax.set_xlabel("dependency distance (tokens, log₂)")
        ax.set_ylabel("test accuracy (0–1)")
        ax.yaxis.set_tick_params(labelleft=True)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    floors = ("chance", "trivial")
    order = [h for k, h in handles.items() if k not in floors and not k.startswith("reach ")]
    order += [h for k, h in handles.items() if k in floors or k.startswith("reach ")]
    fig.legend(handles=order, loc="outside lower center", ncol=min(5, len(order)), frameon=False, fontsize=9)
    _title(fig, "Accuracy vs dependency distance (each point: the bucket [d, 2d), drawn between its edges)", run,
           "accuracy")
    return fig


def figure_scaling(run: Run, palette: dict) -> Figure | None:
    """Forward+backward time and peak memory vs length, log–log, slope per variant in the legend."""
    frame = efficiency_frame(run.records)
    if frame.empty:
        return None
    lengths = sorted(frame.seq_len.unique())
    # the method of the points drawn (a forward-only cell draws none); several: the report names each
    drawn = frame[(frame.status == "ok") & ~forward_only_cells(frame) & frame.peak_mib_fwd_bwd.notna()]
    methods = sorted({m for m in drawn.mem_method if isinstance(m, str)})
    method = methods[0] if len(methods) == 1 else None
    mem_note = {"tensor-bytes": "live tensor bytes", "cuda": "CUDA max allocated"}.get(method, method)
    if len(methods) > 1:  # then each variant's own, in its legend entry
        mem_note = "methods differ: each in the legend"
    method_of = {v: ", ".join(sorted({m for m in g.mem_method if isinstance(m, str)}))
                 for v, g in drawn.groupby("variant")}
    fig = Figure(figsize=(12.5, 6.6), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    panels = [
        (ax_t, "fwd_bwd_ms", "forward+backward time (ms, median; bars: IQR)", "time"),
        (ax_m, "peak_mib_fwd_bwd", "peak memory, forward+backward (MiB" + (f", {mem_note})" if mem_note else ")"),
         "memory"),
    ]
    # no point at that n: a cell not ok, or one timed forward only (no backward on its device)
    failed = frame[(frame.status != "ok") | forward_only_cells(frame)].copy()
    failed.loc[failed.status == "ok", "status"] = "forward only"
    for ax, column, ylabel, what in panels:
        labels = scaling_labels(frame, column)
        if what == "memory" and len(methods) > 1:
            labels = {v: f"{label}; {method_of[v]}" if method_of.get(v) else label for v, label in labels.items()}
        for variant in sorted(frame.variant.unique()):
            ok = frame[(frame.variant == variant) & (frame.status == "ok") & frame[column].notna()].sort_values("seq_len")
            colour = palette[variant]
            yerr = ok.fwd_bwd_iqr_ms / 2 if column == "fwd_bwd_ms" else None
            ax.errorbar(ok.seq_len, ok[column], yerr=yerr, marker="o", ms=5, lw=1.8, capsize=3, color=colour,
                        label=labels[variant])
        # a length without a point (out of time or memory, forward only): an × at the top of the
        # panel, one row per variant, its status written once beside the last × of that status
        rows = {v: 0.95 - 0.07 * i for i, v in enumerate(sorted(failed.variant.unique()))}
        for (variant, status), group in failed.groupby(["variant", "status"]):
            y, colour = rows[variant], palette[variant]
            ax.plot(group.seq_len, [y] * len(group), marker="x", ms=9, mew=2.2, color=colour,
                    transform=ax.get_xaxis_transform(), clip_on=False, ls="none")
            last = group.seq_len.max()
            right_half = lengths.index(last) >= len(lengths) / 2  # the text runs into the panel, not out of it
            ax.annotate(f"{variant}: {status}", (last, y), xycoords=("data", "axes fraction"),
                        xytext=(-8 if right_half else 8, 0), textcoords="offset points",
                        ha="right" if right_half else "left", va="center", fontsize=8, color=colour,
                        ).set_in_layout(False)
        handles, names = ax.get_legend_handles_labels()
        if len(failed):
            handles.append(Line2D([], [], marker="x", ls="none", color="0.3", mew=2))
            names.append("no result at this n (status named)")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        _log2_axis(ax, lengths)
        ax.set_xlim(min(lengths) / 1.4, max(lengths) * 1.4)
        ax.set_xlabel("sequence length n (tokens, log₂)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{what} vs n")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(handles, names, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False,
                  title="variant (fitted slope of log y vs log n)", title_fontsize=9)
    _title(fig, "Attention layer time and memory vs sequence length (log–log)", run, "efficiency")
    return fig


def bubble_data(run: Run) -> tuple[pd.DataFrame, str, str, int] | None:
    """Per variant x (speed), y (mean accuracy), peak MiB; the axis labels and the length; None if not drawable."""
    acc = _accuracy_view(run)
    eff = efficiency_frame(run.records)
    if acc.empty or eff.empty:
        return None
    acc = acc[acc.metric.isin(ACCURACY_METRICS)]
    ok_eff = eff[(eff.status == "ok") & ~forward_only_cells(eff)]
    if acc.empty or ok_eff.empty:
        return None
    # the length where the most variants are ok, the longest among ties
    counts = ok_eff.groupby("seq_len").variant.nunique()
    length = max(counts.index, key=lambda n: (counts[n], n))
    at = ok_eff[ok_eff.seq_len == length].set_index("variant")
    scored = acc[acc.status == "ok"]
    variants = sorted(set(at.index) & set(scored.variant))
    if not variants:
        return None
    # average over the tasks every plotted variant scored, so the averages compare like with like
    common = set.intersection(*(set(scored[scored.variant == v].column) for v in variants))
    if common:
        y = {v: scored[(scored.variant == v) & scored.column.isin(common)].score.mean() for v in variants}
        left_out = sorted(set(acc.column) - common)
        ylabel = f"mean test accuracy over {len(common)} task{'s' * (len(common) != 1)} (0–1)"
        if left_out:
            ylabel += f"\nnot all variants ran: {', '.join(left_out)} (left out)"
    else:
        y = {v: scored[scored.variant == v].score.mean() for v in variants}
        ylabel = "mean test accuracy over the tasks each variant ran (0–1)"
    batch = (run.grid.get("efficiency") or {}).get("batch", 1)
    if "multi-head" in at.index:
        base = at.loc["multi-head", "fwd_bwd_ms"]
        x = {v: base / at.loc[v, "fwd_bwd_ms"] for v in variants}
        xlabel = f"forward+backward speed-up over multi-head at n={length} (×, log scale)"
    else:
        x = {v: length * batch / (at.loc[v, "fwd_bwd_ms"] / 1e3) for v in variants}
        xlabel = f"forward+backward throughput at n={length} (tokens/s, log scale)"
    data = pd.DataFrame({"variant": variants, "x": [x[v] for v in variants], "y": [y[v] for v in variants],
                         "mib": [at.loc[v, "peak_mib_fwd_bwd"] for v in variants]})
    values = data[["x", "y", "mib"]].apply(pd.to_numeric, errors="coerce").astype(float)
    drawable = np.isfinite(values).all(axis=1) & (values.x > 0) & (values.mib >= 0)  # a hand-edited or torn record
    if not drawable.all():
        xlabel += (f"\n{', '.join(data.variant[~drawable])} left out: no finite positive time, score or peak memory "
                   "in its records")
        data = data[drawable].reset_index(drop=True)
    if data.empty:
        return None
    return data, xlabel, ylabel, length


def figure_bubble(run: Run, palette: dict) -> Figure | None:
    """LRA-style: speed (x) vs mean accuracy (y), bubble area ∝ peak memory, labelled bubbles."""
    found = bubble_data(run)
    if found is None:
        return None
    data, xlabel, ylabel, length = found
    top = data.mib.max()

    def area(mib: float) -> float:
        return 80 + 1800 * mib / top

    fig = Figure(figsize=(10.5, 6.8), layout="constrained")
    ax = fig.subplots()
    for _, row in data.iterrows():
        ax.scatter([row.x], [row.y], s=area(row.mib), color=palette[row.variant], alpha=0.55,
                   edgecolor=palette[row.variant], linewidth=1.5, zorder=3)
        ax.scatter([row.x], [row.y], s=10, color="black", zorder=4)
    ax.set_xscale("log")
    unit = "×" if "speed-up" in xlabel else ""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{unit}" if v < 1e4 else f"{v / 1e3:g}k{unit}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _bubble_limits(ax, data, area)
    # labels beside each bubble, nudged apart vertically where two bubbles sit close
    placed: list[tuple[float, float]] = []
    for _, row in data.sort_values("y").iterrows():
        dy = 0.0
        for px, py in placed:
            if abs(math.log(row.x / px)) < 0.35 and abs(row.y + dy - py) < 0.025:
                dy = py - row.y + 0.03
        placed.append((row.x, row.y + dy))
        radius = math.sqrt(area(row.mib)) / 2
        ax.annotate(f"{row.variant}\n{row.mib:.1f} MiB", (row.x, row.y + dy), xytext=(radius + 4, 0),
                    textcoords="offset points", ha="left", va="center", fontsize=9, color="black",
                    fontweight="bold", zorder=5)
    if (data.x == 1).any() and "speed-up" in xlabel:
        ax.axvline(1.0, color="0.5", ls=":", lw=1)
    sizes = sorted({float(f"{v:.2g}") for v in (top / 8, top / 2, top)})
    marks = [ax.scatter([], [], s=area(s), color="0.7", alpha=0.5, edgecolor="0.4") for s in sizes]
    ax.legend(marks, [f"{s:g} MiB" for s in sizes], title=f"peak memory\n(fwd+bwd, n={length})", loc="upper left",
              bbox_to_anchor=(1.02, 1.0), labelspacing=4.2, borderpad=1.6, handletextpad=2.0, frameon=False,
              fontsize=9, title_fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    _title(fig, "Accuracy vs speed vs memory (bubble area ∝ peak memory)", run, "both")
    return fig


def _bubble_limits(ax, data: pd.DataFrame, area: Callable[[float], float]) -> None:
    """Room for the biggest bubble and the labels on the right of each."""
    lo, hi = data.x.min(), data.x.max()
    span = max(hi / lo, 4.0)
    ax.set_xlim(lo / span**0.2, hi * span**0.45)
    ylo, yhi = data.y.min(), data.y.max()
    pad = max(0.06, 0.25 * (yhi - ylo))
    ax.set_ylim(max(0.0, ylo - pad) if ylo - pad > -0.05 else ylo - pad, min(1.05, yhi + pad))


FIGURES: dict[str, tuple[Callable[[Run, dict], Figure | None], str]] = {
    "accuracy-heatmap": (figure_heatmap, "no accuracy cells"),
    "accuracy-by-distance": (figure_distance, "no accuracy cell with ok per-distance results"),
    "scaling": (figure_scaling, "no efficiency cells"),
    "accuracy-speed-memory": (figure_bubble, "needs ok accuracy (accuracy-unit tasks) and ok efficiency cells"),
}


# -- entry points --------------------------------------------------------------------------


def draw_run(run_dir: str | Path, out_dir: str | Path | None = None) -> PlotOutcome:
    """Draw every figure the run's cells allow into `out_dir` (default RUN/plots) as PNG and SVG."""
    if out_dir is not None and not str(out_dir).strip():
        raise AttnbenchError("--out: empty path; name a folder, e.g. --out RUN/plots")
    run = load_run(run_dir)
    outcome = PlotOutcome()
    if not run.records:
        outcome.skipped.append(f"{run.path} has no cells yet: nothing to plot")
        return outcome
    out = Path(out_dir) if out_dir is not None else run.path / "plots"
    if out.exists() and not out.is_dir():  # mkdir's own word for it is "File exists"
        raise AttnbenchError(f"cannot write plots to {out}: a file, not a directory (--out names the folder of the figures)")
    if not out.exists() and out.suffix.lower() in IMAGE_SUFFIXES:  # it would become a folder named fig.png
        raise AttnbenchError(f"--out {out_dir}: names the folder of the figures (each is written as PNG and SVG), "
                             f"not a file; e.g. --out {out.parent / out.stem}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AttnbenchError(f"cannot write plots to {out}: {err.strerror or err}") from None
    palette = variant_palette(r["variant_label"] for r in run.records)  # once: the same colours in every figure
    for name, (draw, needs) in FIGURES.items():
        with sns.axes_style("whitegrid"), matplotlib.rc_context(RC):
            try:  # records a figure cannot take (edited by hand) cost that figure, not the others
                fig = draw(run, palette)
                if fig is None:
                    outcome.skipped.append(f"{name}: skipped ({needs})")
                    continue
                for fmt in FORMATS:  # each atomically: a failed write leaves the file there before
                    path = write_atomically(out / f"{name}.{fmt}", lambda tmp: fig.savefig(tmp, dpi=DPI, format=fmt))
                    outcome.files.append(path)
            except AttnbenchError:  # a write that failed (a full disk): the command's one line
                raise
            except (ValueError, TypeError, KeyError, ZeroDivisionError) as err:
                why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                outcome.skipped.append(f"{name}: skipped (its records could not be drawn: {why})")
    return outcome


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the run's figures (PNG and SVG) to `out_dir` (default RUN/plots); the files written."""
    return draw_run(run_dir, out_dir).files
