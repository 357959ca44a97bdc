"""What a benchmark run writes: `<name>.csv` (one row per implementation × shape), `<name>.png`
(time and peak memory vs n, log–log, batch 1) and `<name>.md` (table, targets, conditions).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from attnbench.benchmarks.guard import timed_medians
from attnbench.benchmarks.suite import IQR_MIN_RUNS, ROW_COLUMNS, range_text, round_range
from attnbench.benchmarks.targets import check_targets
from attnbench.runner.heap import CACHED
from attnbench.runner.store import replace_file, threads_text

SUMMARY_LENGTHS = (2048, 8192, 16384)


def write_csv(rows: list[dict], path: Path) -> Path:
    """All rows with every column of ROW_COLUMNS, in that order; replaced atomically."""
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    return replace_file(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_plot(rows: list[dict], path: Path) -> Path:
    """Log–log time and peak memory vs n of every timed series at batch 1 (seaborn, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    df = df[(df["batch"] == 1) & df["impl"].isin(["sdpa", "core", "peer:local-attention",
                                                  "peer:linear-attention-transformer", "naive"])]
    cases = list(dict.fromkeys(df["case"]))
    palette = case_palette(cases)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    for ax, column, label in ((axes[0], "median_s", "forward time (s)"), (axes[1], "peak_bytes", "peak memory (bytes)")):
        part = df[df[column].notna()].astype({column: float})
        if len(part):
            sns.lineplot(data=part, x="n", y=column, hue="case", style="impl", markers=True, ax=ax,
                         palette=palette, hue_order=cases, legend=ax is axes[0])
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend():
        sns.move_legend(axes[0], "upper left", bbox_to_anchor=(0, -0.12), ncol=3, fontsize=7, title=None)
    fig.suptitle(f"attention forward, B=1, H=8, d_head=64, {_conditions(df)}")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def case_palette(cases: list[str]) -> dict[str, tuple[float, float, float]]:
    """A colour of its own for each case (the default run has 14; tab10 has 10, tab20 20, and past
    that husl's evenly spaced hues): two cases' core rows share a line style, so a colour shared
    would make them one line."""
    import seaborn as sns

    name = "tab10" if len(cases) <= 10 else "tab20" if len(cases) <= 20 else "husl"
    return dict(zip(cases, sns.color_palette(name, len(cases))))


def _conditions(df: pd.DataFrame) -> str:
    """The plot title's conditions: dtype, threads and machine, each as the rows record it."""
    def values(column: str) -> str:
        seen = sorted({str(v) for v in df[column].dropna()}) if column in df.columns else []
        return "/".join(seen) or "?"

    return f"{values('dtype')}, {threads_text(values('threads'))} — {values('machine')}"


def _peak_range(df: pd.DataFrame) -> str:
    peaks = pd.to_numeric(df["matmul_peak_flops"], errors="coerce").dropna() / 1e9
    if peaks.empty:
        return "unknown"
    low, high = peaks.min(), peaks.max()
    return f"{low:.1f}" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f}"


def _ms(row) -> str:
    """`median ± IQR [min–max of the repeat medians]` in ms, or the status when not timed."""
    if row is None or pd.isna(row["median_s"]):
        return "—" if row is None else _short(row["status"])
    spread = f"{row['iqr_s'] * 1e3:.2f}" if pd.notna(row["iqr_s"]) else "n/a"  # n/a: each repeat measured once
    text = f"{row['median_s'] * 1e3:.2f} ± {spread}"
    if pd.notna(row["min_s"]) and row["repeats"] and row["repeats"] > 1:
        text += f" [{row['min_s'] * 1e3:.2f}–{row['max_s'] * 1e3:.2f}]"
    return text


def _short(status: str) -> str:
    status = str(status)
    return status if len(status) <= 40 else status[:38] + "…"


def summary_table(rows: list[dict], lengths=SUMMARY_LENGTHS, batch: int = 1) -> str:
    """Markdown: median ± IQR (ms) per case × implementation at the chosen lengths, with ratios."""
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    df = df[df["batch"] == batch]
    present = sorted(set(df["n"].astype(int)))
    lengths = sorted({n for n in lengths if n in present} | set(present[-3:]))
    head = ["case", "impl"] + [f"n={n} ms" for n in lengths] + [f"÷SDPA n={n}" for n in lengths]
    head += ["÷peer n=" + str(n) for n in lengths] + ["scaling", f"peak MiB n={lengths[-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (case, impl), part in df.groupby(["case", "impl"], sort=False):
        at = {int(r["n"]): r for _, r in part.iterrows()}
        cells = [case, impl] + [_ms(at.get(n)) for n in lengths]
        for column in ("ratio_vs_sdpa", "ratio_vs_peer"):
            cells += [f"{at[n][column]:.2f}" if n in at and pd.notna(at[n][column]) else "" for n in lengths]
        scaling = part["scaling_ratio"].dropna()
        cells.append(f"{scaling.iloc[0]:.1f}" if len(scaling) else "")
        last = at.get(lengths[-1])
        mem = last["peak_bytes"] if last is not None else math.nan
        est = last is not None and str(last["mem_method"]).startswith("estimate")
        cells.append("" if pd.isna(mem) else f"{mem / 2**20:.1f}{' (est.)' if est else ''}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def heap_paragraph(heap) -> str:
    """The CPU allocator condition the rows were timed under (`heap` column; absent: glibc)."""
    if heap == CACHED:
        timed = ("Allocator: glibc malloc with its mmap threshold pinned at 1 GiB (`--heap cached`), so "
                 "blocks under 1 GiB are reused from the heap, as a caching allocator (CUDA's, jemalloc, "
                 "tcmalloc) would, instead of being page-faulted in on every call.")
    else:
        timed = ("Allocator: glibc malloc's defaults (`--heap glibc`), so a block of 32 MiB or more (its "
                 "mmap threshold rises to 32 MiB at most) is mapped fresh and page-faulted in on every "
                 "call: every implementation pays it for each such tensor it allocates (at n = 16384 one "
                 "(1, 8, n, 64) fp32 tensor is 32 MiB), which bends the longest lengths upward.")
    return (f"{timed} The memory probes (not timed) run last, with the threshold pinned at 4 MiB. Peak "
            "memory counts live tensor bytes, so it does not depend on the heap.")


def write_markdown(rows: list[dict], path: Path, *, csv_name: str, png_name: str, note: str = "") -> Path:
    """The summary: conditions, targets (PASS/FAIL with numbers), the table, statuses that are not ok;
    replaced atomically, like the CSV beside it."""
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    first = df.iloc[0] if len(df) else None
    lines = [f"# Attention benchmark: {path.stem}", ""]
    if first is not None:
        lines += [
            f"Machine: {first['machine']} · device {first['device']} · {threads_text(first['threads'])} · "
            f"torch {first['torch']} · attnbench {first.get('git_sha') or 'unknown revision'} · {first['dtype']} · matmul peak "
            f"{_peak_range(df)} GFLOP/s (a square matmul timed in the same interleaved rounds as each "
            "length; each FLOP/s fraction is taken against the peak of its own length).",
            "Forward pass (inference mode). Time: median of the per-repeat medians of "
            "`torch.utils.benchmark` `blocked_autorange` (± the median IQR of the repeats measured at least "
            f"{IQR_MIN_RUNS} times; n/a where a call outlasts --min-run-time and is measured once), repeats interleaved "
            "across implementations. Memory: `runner.measure.peak_memory` (CPU: live tensor bytes, "
            "excludes kernel scratch; a compiled kernel's from the CPU allocator's events, column "
            "`mem_method`). Each output verified against the naive reference on sampled "
            "query rows before timing (max|Δ|/max|ref| ≤ tolerance). FLOPs: torch's counter on the "
            "call, a causal SDPA's counting the n(n+1)/2 scores its fused kernel computes.",
        ]
        if first["device"] == "cpu":
            lines.append(heap_paragraph(first["heap"]))
        lines.append("")
    if note:
        lines += [note, ""]
    lines += ["## Targets (issue 8, batch 1)", "",
              "Verdicts read the ratio of medians; [lo–hi] after a ratio, where shown, is its lowest and "
              "highest over the interleaved rounds (each round times every implementation once, so drift "
              "between rounds cancels in each round's ratio; drift within a round does not).", "",
              "| target | result | measured |", "|---|---|---|"]
    for t in check_targets(rows):
        lines.append(f"| {t.name} | **{t.status}** | {t.detail} |")
    for batch in sorted(set(df["batch"])):
        lines += ["", f"## Time, batch {batch}: median ± IQR [min–max over repeats] in ms; ratios are time ÷ SDPA and ÷ peer", "",
                  summary_table(rows, batch=batch)]
    if df["rated_peak_fraction"].notna().any():
        lines += ["", "## TFLOP/s against the GPU's rated dense peak (data sheet, `benchmarks/rated_peaks.py`), batch 1",
                  "", rated_peak_table(df)]
    for impl in sorted({str(i) for i in df["impl"] if "@" in str(i)}, key=lambda i: (i.partition("@")[0] != "core", i)):
        lines += ["", f"## {impl.partition('@')[0].capitalize()} ÷ {impl}: this tree's time over that revision's, "
                  "timed side by side (`--against`)", "", side_by_side_table(rows, impl)]
    odd = df[~df["status"].isin(["ok"])]
    if len(odd):
        lines += ["", "## Not timed", "", "| batch | n | case | impl | status |", "|---|---|---|---|---|"]
        for _, r in odd.iterrows():
            lines.append(f"| {r['batch']} | {r['n']} | {r['case']} | {r['impl']} | {r['status']} |")
    lines += ["", f"Data: [{csv_name}]({csv_name}) · plot: ![scaling]({png_name})", ""]
    text = "\n".join(lines)
    return replace_file(path, lambda tmp: tmp.write_text(text))


def rated_peak_table(df: pd.DataFrame) -> str:
    """TFLOP/s (% of the rated dense peak) of each timed core and SDPA row that has one, batch 1."""
    part = df[(df["batch"] == 1) & df["rated_peak_fraction"].notna() & df["impl"].isin(["core", "sdpa"])]
    lengths = sorted({int(n) for n in part["n"]})
    lines = ["| case | impl | " + " | ".join(f"n={n}" for n in lengths) + " |", "|---|---|" + "---|" * len(lengths)]
    for (case, impl), rows in part.groupby(["case", "impl"], sort=False):
        cells = {int(r["n"]): f"{r['flops_per_s'] / 1e12:.0f} ({r['rated_peak_fraction']:.0%})" for _, r in rows.iterrows()}
        lines.append(f"| {case} | {impl} | " + " | ".join(cells.get(n, "") for n in lengths) + " |")
    return "\n".join(lines)


def side_by_side_table(rows: list[dict], impl: str) -> str:
    """Markdown: (case, batch) × n → this tree's time ÷ `impl`'s (`core@<hash>` beside the core,
    `layer@<hash>` beside the layer) from the same rounds, with its lowest and highest over the
    rounds ([lo–hi], `suite.round_range`), or — if either is untimed."""
    mine = impl.partition("@")[0]
    timed = timed_medians(rows)
    by_key = {(r["case"], r["impl"], r["batch"], r["n"]): r for r in rows}
    lengths = sorted({r["n"] for r in rows})
    series = sorted({(case, batch) for case, i, batch, _ in timed if i == impl})
    lines = ["| case | batch | " + " | ".join(f"n={n}" for n in lengths) + " |", "|---|---|" + "---|" * len(lengths)]
    for case, batch in series:
        cells = []
        for n in lengths:
            new, old = timed.get((case, mine, batch, n)), timed.get((case, impl, batch, n))
            if not (new and old):
                cells.append("—")
                continue
            spread = range_text(*round_range(by_key[(case, mine, batch, n)], by_key[(case, impl, batch, n)]))
            cells.append(f"{new / old:.2f}×{spread}")
        lines.append(f"| {case} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_all(rows: list[dict], out_dir: Path, name: str, note: str = "") -> dict[str, Path]:
    """CSV, PNG and markdown named `name` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = write_csv(rows, out_dir / f"{name}.csv")
    png = write_plot(rows, out_dir / f"{name}.png")
    md = write_markdown(rows, out_dir / f"{name}.md", csv_name=csv.name, png_name=png.name, note=note)
    return {"csv": csv, "png": png, "md": md}
