"""Reports of a run directory: LRA-style accuracy, long-range and efficiency tables, and run comparison.

Everything here reads only a run's files (``env.json``, ``grid.json``, ``cells.jsonl``) and never
re-runs a cell. The ``*_frame`` functions return tidy pandas DataFrames with numbers (the CSV
output, and what `bench plot` and the summary of `bench run` read); ``render_markdown`` and
``render_comparison`` turn them into plain GitHub markdown.

Definitions the tables use (also printed as footnotes of the report):

- *score*: a task's test metric; ``accuracy`` and ``exact_match`` are higher-is-better and enter
  the Average column, ``bits_per_byte`` is lower-is-better and is shown on its own, next to the
  task's unigram baseline.
- *trivial baseline*: the best of a task's `trivial_baselines`, scores of answering without what
  the task isolates, measured on each cell's test data (``TRIVIAL_ROW``).
- *effective range*: see `effective_range`; *above-chance reach*: see `above_chance_reach`.
- *speed-up* = t(multi-head) / t(variant) and *memory ratio* = mem(variant) / mem(multi-head), at
  the same n, as the Long Range Arena reports them.
- *scaling exponent*: the least-squares slope of log(value) against log(n) over a variant's ok
  lengths (at least two).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.errors import AttnbenchError
from attnbench.runner.grid_order import planned_labels
from attnbench.runner.store import (
    STATUSES, Run, load_run, provenance_changes, provenance_value, threads_text, write_atomically,
)
from attnbench.tasks.files import short_digest
from attnbench.selection import label_parts

__all__ = [
    "Comparison",
    "Run",
    "above_chance_reach",
    "accuracy_frame",
    "accuracy_table",
    "compare_runs",
    "distance_frame",
    "effective_range",
    "efficiency_frame",
    "efficiency_table",
    "incomparable_settings",
    "load_run",
    "long_range_frame",
    "long_range_table",
    "markdown_table",
    "nothing_compared",
    "render_comparison",
    "render_markdown",
    "scaling_exponent",
    "scaling_frame",
    "write_csv",
]

LOWER_IS_BETTER = frozenset({"bits_per_byte"})
RANGE_FRACTION = 0.9  # effective range: accuracy stays >= this fraction of the shortest bucket's
CHANCE_SIGMAS = 2.0  # above chance: more than this many standard errors of a chance-level guesser
REFERENCE_VARIANT = "multi-head"
AVERAGE = "Average"
CHANCE_ROW = "chance"
TRIVIAL_ROW = "trivial baseline"  # the best of a task's `trivial_baselines` on the cells' test data
CSV_TABLES = ("accuracy", "long_range", "effective_range", "efficiency", "scaling")


# -- accuracy ----------------------------------------------------------------------------------


def _accuracy_rows(records: Sequence[dict]) -> pd.DataFrame:
    """One row per accuracy record: its cell, status and (when ok) score and chance."""
    rows = []
    for r in records:
        if r.get("kind") != "accuracy":
            continue
        res = r.get("result") if r.get("status") == "ok" else None
        res = res or {}
        rows.append({
            "variant": r.get("variant_label") or r.get("variant"),
            "task": r.get("task_label") or r.get("task"),
            "task_name": r.get("task"),
            "seq_len": int(r.get("seq_len") or 0),
            "seed": r.get("seed"),
            "status": r.get("status"),
            "metric": res.get("metric"),
            "score": _number(res.get("score")),
            "chance": _number(res.get("chance")),
            "baseline_bits_per_byte": _number(res.get("baseline_bits_per_byte")),
            "baselines": res.get("baselines") if isinstance(res.get("baselines"), dict) else None,
        })
    return pd.DataFrame(rows, columns=["variant", "task", "task_name", "seq_len", "seed", "status", "metric", "score",
                                       "chance", "baseline_bits_per_byte", "baselines"])


def _best_trivial(seeds_baselines: Iterable[tuple[Any, Any]], higher: bool) -> tuple[float, str]:
    """The best trivial baseline of a task at one length, from its records' (seed, baselines)
    pairs: each baseline's mean over the seeds (one record per seed: every variant of a seed is
    scored on the same data), the highest of them by name (the lowest where lower is better: bits
    per byte); (NaN, "") where no record holds one (a run recorded before they were)."""
    per_seed: dict[Any, dict[str, float]] = {}
    for seed, baselines in seeds_baselines:
        if isinstance(baselines, dict) and seed not in per_seed:
            per_seed[seed] = {str(k): float(v) for k, v in baselines.items() if _finite(_number(v))}
    if not per_seed:
        return math.nan, ""
    names = [n for n in next(iter(per_seed.values())) if all(n in b for b in per_seed.values())]
    means = {n: float(np.mean([b[n] for b in per_seed.values()])) for n in names}
    if not means:
        return math.nan, ""
    best = (max if higher else min)(means, key=means.get)  # the first of equal ones
    return means[best], best


def accuracy_frame(
    records: Sequence[dict], seeds: Sequence[int] = (), planned: Sequence[str] = ()
) -> pd.DataFrame:
    """Tidy accuracy: one row per (variant, task, n) — mean and sample std of the score over ok seeds.

    `seeds`: the grid's seeds (grid.json), so a seed not recorded yet (a run killed or still
    running) counts as missing; a cell's ``seeds`` is how many it should have (those and any other
    it recorded), ``ok_seeds`` how many scored, and ``status`` "ok", or its other statuses joined
    by "/", "not run" among them for seeds not recorded (a variant with no record at a task's length
    that others have: every seed "not run"). `planned`: the grid's variants in its order
    (`grid_order.planned_labels`): rows follow it, and with `seeds` one with no accuracy record yet
    gets every cell "not run". A cell is complete when every seed scored.

    A task run at several lengths gets one column per length, named ``task (n=N)``; a task run at
    one length is named by its label. Rows with ``column == "Average"`` hold each variant's mean
    over its complete higher-is-better columns (``tasks_ok`` of ``tasks_total``). ``best`` marks
    the best mean of each column among complete cells (max; min for bits per byte; Average: among
    full averages only): a mean over fewer seeds, or fewer tasks, is not comparable.
    """
    rows = _accuracy_rows(records)
    columns = ["variant", "task", "seq_len", "column", "metric", "higher_is_better", "mean", "std", "seeds",
               "ok_seeds", "status", "chance", "baseline_bits_per_byte", "trivial", "trivial_name", "tasks_ok",
               "tasks_total", "best"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    recorded = set(rows.variant)
    in_grid = [label for label in planned if seeds or label in recorded]
    variants = list(dict.fromkeys([*in_grid, *rows.variant]))  # then any variant the grid does not name
    tasks = list(dict.fromkeys(rows.task))
    lengths = {t: sorted(set(rows.seq_len[rows.task == t])) for t in tasks}
    out = []
    for task in tasks:
        for n in lengths[task]:
            cell_rows = rows[(rows.task == task) & (rows.seq_len == n)]
            ok = cell_rows[cell_rows.status == "ok"]
            metric = ok.metric.dropna().iloc[0] if not ok.metric.dropna().empty else _metric_of(rows, task)
            chance = ok.chance.dropna().iloc[0] if not ok.chance.dropna().empty else math.nan
            base = ok.baseline_bits_per_byte.dropna()
            baseline = base.iloc[0] if not base.empty else math.nan
            trivial_score, trivial_name = _best_trivial(zip(ok.seed, ok.baselines), metric not in LOWER_IS_BETTER)
            name = task if len(lengths[task]) == 1 else f"{task} (n={n})"
            for variant in variants:
                mine = cell_rows[cell_rows.variant == variant]
                if mine.empty and not seeds:  # without the grid's seeds, nothing says it was planned
                    continue
                scores = mine.score[(mine.status == "ok")].dropna()
                expected = len(set(seeds) | set(mine.seed))
                bad = sorted(set(mine.status[mine.status != "ok"])) + (["not run"] if len(mine) < expected else [])
                out.append({
                    "variant": variant, "task": task, "seq_len": n, "column": name, "metric": metric,
                    "higher_is_better": metric not in LOWER_IS_BETTER,
                    "mean": float(scores.mean()) if len(scores) else math.nan,
                    "std": float(scores.std(ddof=1)) if len(scores) > 1 else math.nan,
                    "seeds": expected, "ok_seeds": len(scores),
                    "status": "ok" if not bad else "/".join(bad),
                    "chance": chance, "baseline_bits_per_byte": baseline,
                    "trivial": trivial_score, "trivial_name": trivial_name,
                    "tasks_ok": math.nan, "tasks_total": math.nan, "best": False,
                })
    if not out:  # records without a variant or task label (hand-made): no cell to show
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(out, columns=columns)
    frame = pd.concat([frame, _averages(frame, variants)], ignore_index=True)
    frame["best"] = _best_marks(frame)
    return frame


def _averages(frame: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per variant: the mean over its complete higher-is-better columns (a score on every seed)."""
    scored = frame[frame.higher_is_better]
    total = scored.column.nunique()
    chances = scored.drop_duplicates("column").chance.dropna()
    rows = []
    for variant in variants:
        mine = scored[(scored.variant == variant) & (scored.ok_seeds == scored.seeds)].dropna(subset=["mean"])
        rows.append({
            "variant": variant, "task": AVERAGE, "seq_len": 0, "column": AVERAGE, "metric": "average",
            "higher_is_better": True, "mean": float(mine["mean"].mean()) if len(mine) else math.nan,
            "std": math.nan, "seeds": math.nan, "ok_seeds": math.nan, "status": "ok" if len(mine) else "-",
            "chance": float(chances.mean()) if len(chances) else math.nan, "baseline_bits_per_byte": math.nan,
            "trivial": math.nan, "trivial_name": "", "tasks_ok": len(mine), "tasks_total": total, "best": False,
        })
    return pd.DataFrame(rows, columns=frame.columns) if total else frame.iloc[0:0]


def _best_marks(frame: pd.DataFrame) -> pd.Series:
    """True where a row holds its column's best mean (ties all marked)."""
    best = pd.Series(False, index=frame.index)
    for column, group in frame.groupby("column", sort=False):
        group = group[group.tasks_ok == group.tasks_total] if column == AVERAGE else group[group.ok_seeds == group.seeds]
        values = group["mean"].dropna()
        if values.empty:
            continue
        target = values.max() if bool(group.higher_is_better.iloc[0]) else values.min()
        best[values.index[np.isclose(values, target, rtol=0, atol=1e-12)]] = True
    return best


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The LRA-shaped display table of `accuracy_frame`: variant rows, task columns, Average, a chance
    row, and where the records hold them a trivial-baseline row (each column's best, named).

    Cells are strings: ``mean`` or ``mean ± std`` (std over seeds when more than one ended ok),
    in bold where best, ``(k/m seeds; status)`` when some seeds did not end ok or have not run
    (never bold), the status when none scored.
    Higher-is-better columns come first, then Average, then bits-per-byte columns.
    """
    if frame.empty:
        return pd.DataFrame()
    cells = frame[frame.column != AVERAGE]
    order = list(dict.fromkeys(cells.column))
    higher = [c for c in order if bool(cells[cells.column == c].higher_is_better.iloc[0])]
    lower = [c for c in order if c not in higher]
    headers = {c: c for c in higher}
    for c in lower:
        metric = cells[cells.column == c].metric.iloc[0]
        headers[c] = f"{c} ({metric.replace('_', ' ')} ↓)" if metric else c
    shown = higher + ([AVERAGE] if higher else []) + lower
    variants = list(dict.fromkeys(frame.variant))
    trivial = frame.trivial.notna().any()
    rows = [*variants, CHANCE_ROW] + ([TRIVIAL_ROW] if trivial else [])
    table = pd.DataFrame("", index=rows, columns=[headers.get(c, c) for c in shown])
    for _, row in frame.iterrows():
        table.loc[row.variant, headers.get(row.column, row.column)] = _score_cell(row)
    for c in shown:
        first = frame[frame.column == c].iloc[0]
        if c in lower:
            base = first.baseline_bits_per_byte
            text = f"{base:.3f} (unigram)" if _finite(base) else "-"
        else:
            text = _chance(first.chance)
        table.loc[CHANCE_ROW, headers.get(c, c)] = text
        if trivial:
            score = first.trivial
            table.loc[TRIVIAL_ROW, headers.get(c, c)] = f"{score:.3f} ({first.trivial_name})" if _finite(score) else "-"
    table.index.name = "variant"
    return table


def _score_cell(row: pd.Series) -> str:
    """The display text of one accuracy cell (see `accuracy_table`)."""
    if row.column == AVERAGE:
        if not _finite(row["mean"]):
            return "-"
        text = f"{row['mean']:.3f}"
        text = f"**{text}**" if row.best else text
        if row.tasks_ok < row.tasks_total:
            text += f" ({int(row.tasks_ok)}/{int(row.tasks_total)} tasks)"
        return text
    if not _finite(row["mean"]):
        return row.status
    text = f"{row['mean']:.3f}" + (f" ± {row['std']:.3f}" if _finite(row["std"]) else "")
    text = f"**{text}**" if row.best else text
    if row.ok_seeds < row.seeds:
        text += f" ({int(row.ok_seeds)}/{int(row.seeds)} seeds; {row.status})"
    return text


# -- long range --------------------------------------------------------------------------------


def _floor(results: Sequence[tuple[Any, dict]]) -> float:
    """What a task's buckets at one length are judged against, from its records' (seed, result)
    pairs: chance, or the best trivial baseline where that is higher (distance's mode of the bound
    values, 0.41 against 0.125: a model that scores it at every distance has learnt no reach), read
    as the report's trivial-baseline row reads it (`_best_trivial`: each baseline's mean over the
    seeds), since the buckets pool the seeds too."""
    chance = next((c for _, res in results if _finite(c := _number(res.get("chance")))), math.nan)
    accuracy = [(seed, res.get("baselines")) for seed, res in results if res.get("metric", "accuracy") == "accuracy"]
    trivial, _ = _best_trivial(accuracy, higher=True)
    floors = [v for v in (chance, trivial) if _finite(v)]
    return max(floors) if floors else math.nan


def distance_frame(records: Sequence[dict]) -> pd.DataFrame:
    """Accuracy per dependency-distance bucket: one row per (task, n, variant, bucket), ok cells only.

    Seeds are pooled: accuracy is the count-weighted mean, count the total. ``bucket`` is the
    lower edge d of the bucket [d, 2d) that the runner records. ``chance`` is the floor a bucket is
    judged against (`_floor`): chance, or the task's best trivial baseline where higher.
    """
    pooled: dict[tuple, list[float]] = {}
    results: dict[tuple, list[tuple[Any, dict]]] = {}
    for r in records:
        res = r.get("result") or {}
        if r.get("kind") != "accuracy" or r.get("status") != "ok" or not res.get("by_distance"):
            continue
        task, n, variant = r.get("task_label") or r.get("task"), int(r.get("seq_len") or 0), r.get("variant_label")
        results.setdefault((task, n), []).append((r.get("seed"), res))
        for edge, bucket in res["by_distance"].items():
            count = int(bucket.get("count") or 0)
            acc = _number(bucket.get("accuracy"))
            if count <= 0 or not _finite(acc):
                continue
            total = pooled.setdefault((task, n, variant, int(edge)), [0.0, 0])
            total[0] += acc * count
            total[1] += count
    chance = {key: _floor(of_key) for key, of_key in results.items()}
    rows = [
        {"task": t, "seq_len": n, "variant": v, "bucket": e, "accuracy": hits / count, "count": count,
         "chance": chance[(t, n)]}
        for (t, n, v, e), (hits, count) in pooled.items()
    ]
    frame = pd.DataFrame(rows, columns=["task", "seq_len", "variant", "bucket", "accuracy", "count", "chance"])
    return frame.sort_values(["task", "seq_len", "bucket"], kind="stable").reset_index(drop=True)


def effective_range(accuracy: Mapping[int, float], fraction: float = RANGE_FRACTION) -> tuple[int | None, bool]:
    """The effective range of accuracies by bucket edge, and whether it reaches the last bucket.

    With bucket lower edges e_1 < … < e_k (bucket i holds distances [e_i, e_{i+1})) and accuracies
    a_i, the effective range is the largest e_j such that a_i >= fraction · a_1 for every i <= j:
    up to bucket j, accuracy never fell below 90 % (by default) of its value at the shortest
    distances. The second value is True when j = k: the variant never dropped within the measured
    distances, so the range is only known to be ">= e_k". (None, False) for no buckets.
    """
    edges = sorted(accuracy)
    if not edges:
        return None, False
    floor = fraction * accuracy[edges[0]]
    reached = edges[0]
    for edge in edges:
        if accuracy[edge] < floor - 1e-9:  # exactly 90 % holds, despite float rounding
            return reached, False
        reached = edge
    return reached, True


def above_chance(accuracy: float, count: int, chance: float, sigmas: float = CHANCE_SIGMAS) -> bool:
    """Whether `accuracy` over `count` items exceeds `chance` by more than `sigmas` standard errors
    of a guesser at chance (sqrt(c·(1−c)/count))."""
    if not (_finite(chance) and count > 0):
        return True  # no chance level recorded: nothing to test against
    return accuracy - chance > sigmas * math.sqrt(max(chance * (1 - chance), 0.0) / count)


def above_chance_reach(buckets: Mapping[int, tuple[float, int]], chance: float) -> int | None:
    """The largest bucket edge whose (accuracy, count) is above chance (see `above_chance`); None if none.

    Unlike the effective range this does not ask for accuracy to hold up, only for the model to do
    better than guessing: it shows where a variant stops seeing the answer at all.
    """
    hits = [e for e, (acc, count) in buckets.items() if above_chance(acc, count, chance)]
    return max(hits) if hits else None


def window_reach(window: int | None, n_layers: int | None) -> int | None:
    """How far back a stack of `n_layers` windowed layers can see: each sees keys j with
    |i − j| < window, so (window − 1) positions a layer; None without a window or a layer count."""
    return (window - 1) * n_layers if window is not None and n_layers else None


def long_range_frame(records: Sequence[dict], grid: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per (task, n, variant) with distances: effective range, above-chance reach, window reach.

    ``effective_range`` is None (shown "-") when the shortest bucket itself is not above chance:
    keeping 90 % of a guess means nothing. ``window_reach`` is `window_reach(window, n_layers)`
    (n_layers from grid.json's model size) for variants with a ``window`` option.
    """
    columns = ["task", "seq_len", "variant", "shortest_accuracy", "effective_range", "never_dropped",
               "longest_bucket", "above_chance_reach", "window", "n_layers", "window_reach"]
    dist = distance_frame(records)
    if dist.empty:
        return pd.DataFrame(columns=columns)
    n_layers = ((grid or {}).get("size") or {}).get("n_layers")
    windows = {
        r.get("variant_label"): with_defaults("variant", r.get("variant"), r.get("variant_options")).get("window")
        for r in records if r.get("kind") == "accuracy"
    }
    rows = []
    for (task, n, variant), group in dist.groupby(["task", "seq_len", "variant"], sort=False):
        group = group.sort_values("bucket")
        first = group.iloc[0]
        chance = first.chance
        acc = dict(zip(group.bucket.astype(int), group.accuracy))
        if above_chance(first.accuracy, int(first["count"]), chance):
            reach, dropped_never = effective_range(acc)
        else:
            reach, dropped_never = None, False
        window = windows.get(variant)
        window = int(window) if isinstance(window, (int, float)) and not isinstance(window, bool) else None
        rows.append({
            "task": task, "seq_len": n, "variant": variant, "shortest_accuracy": float(first.accuracy),
            "effective_range": reach, "never_dropped": dropped_never, "longest_bucket": int(group.bucket.max()),
            "above_chance_reach": above_chance_reach(
                {int(e): (a, int(c)) for e, a, c in zip(group.bucket, group.accuracy, group["count"])}, chance),
            "window": window, "n_layers": n_layers,
            "window_reach": window_reach(window, n_layers),
        })
    return pd.DataFrame(rows, columns=columns, dtype=object)


def long_range_table(records: Sequence[dict], grid: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Display table: one row per (task, variant), accuracy per bucket [d, 2d), then the ranges."""
    dist = distance_frame(records)
    ranges = long_range_frame(records, grid)
    if dist.empty:
        return pd.DataFrame()
    buckets = sorted(set(dist.bucket.astype(int)))
    several = dist.groupby("task").seq_len.nunique().to_dict()
    rows = []
    for _, r in ranges.iterrows():
        mine = dist[(dist.task == r.task) & (dist.seq_len == r.seq_len) & (dist.variant == r.variant)]
        acc = dict(zip(mine.bucket.astype(int), mine.accuracy))
        row = {"task": r.task if several[r.task] == 1 else f"{r.task} (n={r.seq_len})", "variant": r.variant}
        for b in buckets:
            row[f"[{b},{2 * b})"] = f"{acc[b]:.2f}" if b in acc else ""
        if r.effective_range is None:
            row["effective range"] = "- (at chance)"
        else:
            row["effective range"] = f"≥ {r.effective_range}" if r.never_dropped else str(r.effective_range)
        row["above-chance reach"] = "-" if r.above_chance_reach is None else str(r.above_chance_reach)
        row["window reach"] = (f"({r.window} − 1) × {r.n_layers} = {r.window_reach}"
                               if r.window_reach is not None else "")
        rows.append(row)
    return pd.DataFrame(rows)


# -- efficiency --------------------------------------------------------------------------------


def efficiency_frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per (variant, n) of efficiency cells: times (ms), memory (MiB), ratios to multi-head.

    Seeds, if several, are averaged. ``speedup_*`` = t(multi-head) / t(variant) and
    ``memory_ratio`` = peak fwd+bwd memory(variant) / that of multi-head, both at the same n;
    NaN where either cell did not end ok. ``status`` is a non-ok cell's status (its message too).
    """
    columns = ["variant", "variant_name", "seq_len", "status", "message", "fwd_ms", "fwd_iqr_ms", "fwd_bwd_ms",
               "fwd_bwd_iqr_ms", "runs_fwd", "runs_fwd_bwd", "peak_mib_fwd", "peak_mib_fwd_bwd", "flops_fwd",
               "flops_fwd_bwd", "peak_fraction_fwd", "peak_fraction_fwd_bwd", "step_ms", "step_peak_mib",
               "mem_method", "speedup_fwd", "speedup_fwd_bwd", "memory_ratio", "unverified"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("kind") == "efficiency":
            groups.setdefault((r.get("variant_label") or r.get("variant"), int(r.get("seq_len") or 0)), []).append(r)
    rows = []
    for (variant, n), recs in groups.items():
        ok = [r["result"] for r in recs if r.get("status") == "ok" and r.get("result")]
        row: dict[str, Any] = {"variant": variant, "variant_name": recs[0].get("variant"), "seq_len": n}
        if not ok:
            row["status"] = "/".join(sorted({r.get("status", "?") for r in recs}))
            row["message"] = next((r.get("message") for r in recs if r.get("message")), "")
            rows.append(row)
            continue
        row.update({"status": "ok", "message": next((r.get("message") for r in recs if r.get("status") == "ok"
                                                     and r.get("message")), ""),  # "forward only: …"
                    "mem_method": ok[0].get("mem_method"),
                    # recorded, and None: no reference to compare with (a record from before says nothing)
                    "unverified": all("reference_rel_err" in res and res["reference_rel_err"] is None for res in ok)})

        def mean(getter) -> float:
            values = [v for v in (getter(res) for res in ok) if _finite(v)]
            return float(np.mean(values)) if values else math.nan

        for key in ("fwd", "fwd_bwd"):
            row[f"{key}_ms"] = mean(lambda res, k=key: (res.get(k) or {}).get("median_s")) * 1e3
            row[f"{key}_iqr_ms"] = mean(lambda res, k=key: (res.get(k) or {}).get("iqr_s")) * 1e3
            row[f"runs_{key}"] = mean(lambda res, k=key: (res.get(k) or {}).get("runs"))
            if _one_block(row[f"runs_{key}"]):  # its IQR of 0 measured no spread (NaN in the CSV, no bar)
                row[f"{key}_iqr_ms"] = math.nan
            row[f"peak_mib_{key}"] = mean(lambda res, k=key: res.get(f"peak_bytes_{k}")) / 2**20
            row[f"flops_{key}"] = mean(lambda res, k=key: res.get(f"flops_{k}"))
            row[f"peak_fraction_{key}"] = mean(lambda res, k=key: res.get(f"peak_fraction_{k}"))
        row["step_ms"] = mean(lambda res: ((res.get("model_step") or {}).get("time") or {}).get("median_s")) * 1e3
        row["step_peak_mib"] = mean(lambda res: (res.get("model_step") or {}).get("peak_bytes")) / 2**20
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame
    ref = _reference_label(frame)
    for n, group in frame.groupby("seq_len"):
        base = group[(group.variant == ref) & (group.status == "ok")] if ref else group.iloc[0:0]
        if base.empty:
            continue
        base = base.iloc[0]
        idx = group.index
        frame.loc[idx, "speedup_fwd"] = base.fwd_ms / frame.loc[idx, "fwd_ms"]
        frame.loc[idx, "speedup_fwd_bwd"] = base.fwd_bwd_ms / frame.loc[idx, "fwd_bwd_ms"]
        frame.loc[idx, "memory_ratio"] = frame.loc[idx, "peak_mib_fwd_bwd"] / base.peak_mib_fwd_bwd
    order = {v: i for i, v in enumerate(dict.fromkeys(frame.variant))}
    frame = frame.sort_values(["seq_len", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s,
                              kind="stable")
    return frame.reset_index(drop=True)


def forward_only_cells(eff: pd.DataFrame) -> pd.Series:
    """Rows of `efficiency_frame` timed forward only (no backward on their device): ok, their
    fwd+bwd columns empty (the frame's twin of `timed_forward_only`)."""
    return (eff.status == "ok") & eff.fwd_bwd_ms.isna()


def _planned_cells(grid: dict) -> int | None:
    """How many cells the grid holds (grid.json: variants × (each task's lengths) × seeds, plus
    variants × efficiency lengths); None where the grid does not say."""
    planned = _planned_by_kind(grid)
    return None if planned is None else sum(planned.values())


def _planned_by_kind(grid: dict) -> dict[str, int] | None:
    """`_planned_cells` by kind, each kind the grid runs; None where the grid does not say."""
    try:  # a label given twice, or spelled twice (options in another order), is one set of cells
        variants, kinds = len(_distinct_labels(grid["variants"])), _grid_kinds(grid)
        accuracy = sum(len(grid["lengths"].get(t) or []) for t in _distinct_labels(grid.get("tasks") or []).values())
        accuracy *= variants * len(set(grid["seeds"]))
        efficiency = len(grid.get("efficiency_lengths") or []) * variants
    except (KeyError, TypeError, AttributeError):
        return None
    return {kind: count for kind, count in (("accuracy", accuracy), ("efficiency", efficiency)) if kind in kinds}


def _unrecorded(run: Run) -> tuple[int, int]:
    """(cells the grid plans that no record holds, cells it plans); (0, 0) where the grid does not say."""
    planned = _planned_cells(run.grid) or 0
    return max(0, planned - len({r.get("key") for r in run.records})), planned


def _resume_hint(run: Run) -> str:
    return f"`bench run --resume {shlex.quote(str(run.path))}` runs them"


def _no_cells(run: Run, kind: str) -> str:
    """The line of a report section without a cell of `kind`: none planned, or none recorded yet."""
    planned = (_planned_by_kind(run.grid) or {}).get(kind)
    if planned:
        return f"No {kind} cells recorded yet; the grid plans {planned} ({_resume_hint(run)}).\n"
    return f"No {kind} cells in this run.\n"


def _distinct_labels(labels: list[str]) -> dict[tuple, str]:
    """Labels by what a cell's key makes of them (the options sorted): the first label of each."""
    distinct: dict[tuple, str] = {}
    for text in labels:
        parts = label_parts(str(text))
        key = (parts[0], tuple(sorted(parts[1].items()))) if parts else (str(text), ())
        distinct.setdefault(key, text)
    return distinct


def _reference_label(frame: pd.DataFrame) -> str | None:
    """The label of the multi-head rows that ratios divide by: without options if there is one."""
    labels = list(dict.fromkeys(frame.variant[frame.variant_name == REFERENCE_VARIANT]))
    if REFERENCE_VARIANT in labels:
        return REFERENCE_VARIANT
    return labels[0] if labels else None


def scaling_exponent(lengths: Sequence[float], values: Sequence[float]) -> float | None:
    """The least-squares slope of log(value) vs log(n); None with fewer than two distinct usable n."""
    pairs = [(n, v) for n, v in zip(lengths, values) if _finite(v) and v > 0 and _finite(n) and n > 0]
    if len({n for n, _ in pairs}) < 2:
        return None
    x = np.log([n for n, _ in pairs])
    y = np.log([v for _, v in pairs])
    return float(np.polyfit(x, y, 1)[0])


def scaling_frame(efficiency: pd.DataFrame) -> pd.DataFrame:
    """Per variant: fitted exponents of time and peak memory vs n over its ok lengths (>= 2 needed)."""
    columns = ["variant", "lengths", "points", "time_exp_fwd", "time_exp_fwd_bwd", "mem_exp_fwd", "mem_exp_fwd_bwd"]
    rows = []
    for variant in dict.fromkeys(efficiency.variant) if not efficiency.empty else ():
        ok = efficiency[(efficiency.variant == variant) & (efficiency.status == "ok")].sort_values("seq_len")
        n = list(ok.seq_len)
        rows.append({
            "variant": variant,
            "lengths": ",".join(str(x) for x in n),
            "points": len(n),
            "time_exp_fwd": scaling_exponent(n, list(ok.fwd_ms)),
            "time_exp_fwd_bwd": scaling_exponent(n, list(ok.fwd_bwd_ms)),
            "mem_exp_fwd": scaling_exponent(n, list(ok.peak_mib_fwd)),
            "mem_exp_fwd_bwd": scaling_exponent(n, list(ok.peak_mib_fwd_bwd)),
        })
    return pd.DataFrame(rows, columns=columns, dtype=object)


def efficiency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Display table of `efficiency_frame`: one row per (n, variant); a non-ok cell shows its status."""
    rows = []
    has_step = not frame.empty and frame.step_ms.notna().any()
    for _, r in frame.iterrows():
        row = {"n": str(r.seq_len), "variant": r.variant}
        if r.status != "ok":
            row.update({"fwd ms": r.status, "fwd speed-up": "", "fwd+bwd ms": r.status, "fwd+bwd speed-up": "",
                        "peak MiB fwd": r.status, "peak MiB fwd+bwd": r.status, "memory ratio": "",
                        "% of matmul peak (fwd / fwd+bwd)": ""})
            if has_step:
                row["train step ms"] = r.status
            rows.append(row)
            continue
        row["fwd ms"] = _time_cell(r.fwd_ms, r.fwd_iqr_ms, r.runs_fwd)
        row["fwd speed-up"] = _ratio(r.speedup_fwd)
        row["fwd+bwd ms"] = _time_cell(r.fwd_bwd_ms, r.fwd_bwd_iqr_ms, r.runs_fwd_bwd)
        row["fwd+bwd speed-up"] = _ratio(r.speedup_fwd_bwd)
        row["peak MiB fwd"] = _mib(r.peak_mib_fwd)
        row["peak MiB fwd+bwd"] = _mib(r.peak_mib_fwd_bwd)
        row["memory ratio"] = _ratio(r.memory_ratio)
        row["% of matmul peak (fwd / fwd+bwd)"] = (f"{_percent(r.peak_fraction_fwd)} / "
                                                   f"{_percent(r.peak_fraction_fwd_bwd)}")
        if has_step:
            row["train step ms"] = _time_cell(r.step_ms, None)
        rows.append(row)
    return pd.DataFrame(rows)


def _scaling_table(scaling: pd.DataFrame) -> pd.DataFrame:
    def exp(v) -> str:
        return "-" if v is None or not _finite(v) else f"{v:.2f}"

    return pd.DataFrame([
        {"variant": r.variant, "lengths fitted": r.lengths or "-", "time fwd": exp(r.time_exp_fwd),
         "time fwd+bwd": exp(r.time_exp_fwd_bwd), "memory fwd": exp(r.mem_exp_fwd),
         "memory fwd+bwd": exp(r.mem_exp_fwd_bwd)}
        for _, r in scaling.iterrows()
    ])


# -- the whole report --------------------------------------------------------------------------


def render_markdown(run: Run) -> str:
    """The report of a run as plain GitHub markdown: header, accuracy, long-range, efficiency, notes."""
    parts = [_header(run)]
    acc = accuracy_frame(run.records, grid_seeds(run), grid_variants(run))
    parts.append("## Accuracy\n")
    if acc.empty:
        parts.append(_no_cells(run, "accuracy"))
    else:
        parts.append(markdown_table(accuracy_table(acc), index=True))
        parts.append(_accuracy_notes(acc, run))
    parts.append("## Long-range dependencies\n")
    lr = long_range_table(run.records, run.grid)
    if lr.empty and acc.empty:  # nothing to say about distances before an accuracy cell is recorded
        parts.append(_no_cells(run, "accuracy"))
    elif lr.empty:
        parts.append("No task in this run records accuracy by dependency distance.\n")
    else:
        parts.append(markdown_table(lr))
        parts.append(_long_range_notes(run))
    eff = efficiency_frame(run.records)
    parts.append("## Efficiency\n")
    if eff.empty:
        parts.append(_no_cells(run, "efficiency"))
    else:
        parts.append(_efficiency_conditions(run, eff))
        parts.append(markdown_table(efficiency_table(eff)))
        parts.append(_efficiency_notes(eff) + _failed_checks_note(run, eff))
        parts.append("### Scaling with sequence length\n")
        parts.append(markdown_table(_scaling_table(scaling_frame(eff))))
        parts.append("Exponent k of value ∝ n^k: the least-squares slope of log(value) against log(n) over "
                     "the variant's ok lengths (at least two; \"-\" otherwise). Full attention's time tends to 2 at "
                     "large n (fused kernels keep its memory near 1); fixed per-call overheads pull measured "
                     "exponents below their asymptote at short n.\n")
    bad = [r for r in run.records if r.get("status") != "ok"]
    if bad:
        parts.append("## Cells not ok\n")
        parts.append("\n".join(
            f"- `{r.get('key')}`: {r.get('status')}" + (f" — {r['message']}" if r.get("message") else "") for r in bad
        ) + "\n")
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _grid_kinds(grid: dict) -> list[str]:
    """The kinds of cell a grid plans (grid.json `kinds`); both where it does not say."""
    kinds = grid.get("kinds")
    return kinds if isinstance(kinds, list) and kinds else ["accuracy", "efficiency"]


def grid_variants(run: Run) -> list[str]:
    """The grid's variants for the accuracy table (`grid_order.planned_labels`); none where the
    grid plans no accuracy cell."""
    return planned_labels(run.records, run.grid) if "accuracy" in _grid_kinds(run.grid) else []


def grid_seeds(run: Run) -> list[int]:
    """The seeds of a run's grid (grid.json), the ints among them: [] where it names none."""
    seeds = run.grid.get("seeds")
    return [s for s in seeds if isinstance(s, int)] if isinstance(seeds, list) else []


def _header(run: Run) -> str:
    env, grid = run.env, run.grid
    counts = pd.Series([r.get("status") for r in run.records], dtype=object).value_counts()
    size = grid.get("size") or {}
    train = grid.get("train") or {}
    eff = grid.get("efficiency") or {}
    peak = env.get("matmul_peak_flops")
    device = env.get("device") or grid.get("device") or "?"
    device_text = f"{device} ({env.get('cuda_device') or env.get('cpu') or '?'})"
    variants = grid.get("variants") or sorted({r.get("variant_label") for r in run.records})
    tasks = grid.get("tasks") or sorted({r.get("task_label") for r in run.records if r.get("task")})
    lines = [
        f"# attnbench report: {run.path.name}",
        "",
        f"- **device**: {device_text}, {threads_text(env.get('threads', grid.get('threads')))}, "
        f"dtype {env.get('dtype') or grid.get('dtype') or '?'}",
        f"- **matmul peak**: {peak / 1e9:.1f} GFLOP/s ({env.get('matmul_peak_dtype') or 'fp32'}, measured at run start)"
        if _finite(peak) else "- **matmul peak**: not measured",
        f"- **software**: torch {env.get('torch', '?')}, python {env.get('python', '?')}, "
        f"attnbench {env.get('attnbench', '?')}, git {env.get('git_sha') or '?'}",
        f"- **platform**: {env.get('platform', '?')}",
        f"- **date**: {env.get('created', '?')}",
        *_resume_lines(env),
        f"- **profile**: {grid.get('profile', '?')}; {len(variants)} variants ({', '.join(map(str, variants)) or '-'}); "
        f"{len(tasks)} tasks; seeds {', '.join(str(s) for s in grid.get('seeds') or []) or '?'}",
    ]
    kinds = _grid_kinds(grid)
    if (size or train) and "accuracy" in kinds:
        lines.append(
            f"- **model** (accuracy cells): d_model {size.get('d_model', '?')}, {size.get('n_heads', '?')} heads, "
            f"{size.get('n_layers', '?')} layers; training: {train.get('steps', '?')} steps, batch "
            f"{train.get('batch_size', '?')}, lr {train.get('lr', '?')}, {train.get('n_train', '?')} train / "
            f"{train.get('n_test', '?')} test examples"
        )
    if eff and "efficiency" in kinds:
        lines.append(
            f"- **efficiency cells** (one attention layer): batch {eff.get('batch', '?')}, d_model "
            f"{eff.get('d_model', '?')}, {eff.get('n_heads', '?')} heads, lengths "
            f"{', '.join(str(n) for n in eff.get('lengths') or grid.get('efficiency_lengths') or [])}"
        )
    plugins = plugin_sources(env, "plugins")
    if plugins:  # the --plugin sources the run started with
        lines.append("- **plugins**: " + "; ".join(f"`{target}` ({what})" for target, what in plugins.items()))
    installed = plugin_sources(env, "installed_plugins")
    if installed:  # entry points of installed packages, loaded by name
        lines.append("- **installed plugins**: " + "; ".join(f"`{name}` ({what})" for name, what in installed.items()))
    data = grid.get("data")
    if isinstance(data, dict) and data:  # the user's data files the tasks read, and the bytes they held
        lines.append("- **data**: " + "; ".join(f"`{file}` (sha256 {short_digest(str(digest))})" for file, digest in data.items()))
    statuses = ", ".join(f"{k} {v}" for k, v in counts.items())
    unrecorded, planned = _unrecorded(run)
    missing = f"; {unrecorded} of the grid's {planned} not run yet ({_resume_hint(run)})" if unrecorded else ""
    lines.append(f"- **cells**: {len(run.records)} recorded ({statuses}){missing}" if len(counts)
                 else f"- **cells**: none recorded{missing}")
    if env.get("argv"):
        lines.append(f"- **command**: `{shlex.join(map(str, env['argv']))}`")  # pastes back into a shell
    lines.append(f"- **run directory**: `{run.path}`")
    return "\n".join(lines) + "\n"


def _resume_lines(env: Mapping) -> list[str]:
    """The header's line on the run's resumes (env.json `resumes`): how many, and each one whose
    code or machine differed from the run's start, from which recorded cell on."""
    resumes = [r for r in env.get("resumes") or [] if isinstance(r, Mapping)]
    if not resumes:
        return []
    times = f"{len(resumes)} time{'s' if len(resumes) > 1 else ''}"
    other = [f"after {r.get('recorded_before', '?')} recorded cells ({r.get('created', '?')}): {'; '.join(changes)}"
             for r in resumes if (changes := provenance_changes(env, r))]
    if not other:
        return [f"- **resumed**: {times}, on the code and machine the run started with"]
    return [f"- **resumed**: {times}; cells ran on other code or another machine than the first ones "
            + " · ".join(other)]


def _accuracy_notes(acc: pd.DataFrame, run: Run) -> str:
    cells = acc[acc.column != AVERAGE]
    lengths = cells.drop_duplicates("column")
    # a column with no ok cell has no metric (NaN in the frame)
    metrics = {c: m for c, m in zip(lengths.column, lengths.metric) if isinstance(m, str) and m != "accuracy"}
    seeds = run.grid.get("seeds") or sorted({r.get("seed") for r in run.records if r.get("kind") == "accuracy"})
    notes = [
        f"Test score per task, mean over {len(seeds)} seed(s)"
        + (" ± sample std (ddof=1) where more than one ended ok" if len(seeds) > 1 else "")
        + "; best per column in **bold**. Lengths: "
        + ", ".join(f"{t} n={n}" for t, n in zip(lengths.column, lengths.seq_len)) + ".",
    ]
    if metrics:
        notes.append("Metrics other than accuracy: " + ", ".join(
            f"{c}: {m.replace('_', ' ')}" + (" (lower is better; its chance row is the unigram baseline)"
                                             if m in LOWER_IS_BETTER else "")
            for c, m in metrics.items()) + ".")
    if cells.trivial.notna().any():
        notes.append("Trivial baseline: the best test score of answering without what the task isolates (each task's "
                     "own: the train split's majority answer, each sequence's most frequent symbol, a listops "
                     "expression's root operator, a text's words without their order (a word-level naive Bayes), "
                     "…), on the cells' own test data, mean over seeds. Read a score against it, not only against "
                     "chance, which is the task's own over its whole test split (so a cell's majority, on its "
                     "sample, can differ from a chance that is the majority rate).")
    notes.append("Average: mean over the higher-is-better columns (bits per byte excluded) whose every seed "
                 "scored; \"(k/m tasks)\" when some cells did not — such an average, like a cell's mean over "
                 "\"(k/m seeds)\", is not comparable and is never bold. A task run at several lengths gets one "
                 "column per length.")
    return "\n".join(notes) + "\n"


def _long_range_notes(run: Run) -> str:
    n_layers = (run.grid.get("size") or {}).get("n_layers")
    return (
        "Accuracy per dependency-distance bucket [d, 2d) (seeds pooled, weighted by item count). "
        f"**Effective range**: the largest bucket edge d such that accuracy in that bucket and every shorter one "
        f"stays ≥ {RANGE_FRACTION:.0%} of the accuracy in the shortest bucket; \"≥ d\" when it never dropped within "
        "the measured buckets (the true range may be longer); \"- (at chance)\" when even the shortest bucket is not "
        "above chance. **Above-chance reach**: the largest bucket edge whose accuracy beats chance by more than "
        f"{CHANCE_SIGMAS:g} standard errors of a chance-level guesser (√(c(1−c)/count)). Chance here is the task's "
        "chance level or, where higher, its best trivial baseline (distance: the mode of the bound values), since "
        "a model that scores that at every distance has learnt no reach. **window reach** "
        f"(n_layers = {n_layers if n_layers else '?'}): a local-attention layer sees keys up to (window − 1) positions "
        "away, so a stack of them at most (window − 1) × layers: its reach cannot pass that.\n"
    )


def _efficiency_conditions(run: Run, eff: pd.DataFrame) -> str:
    methods = ", ".join(sorted({m for m in eff.mem_method.dropna()})) or "none: no cell ended ok"
    ref = _reference_label(eff)
    return (
        f"Median time over `torch.utils.benchmark` runs ± its interquartile range, in ms; peak memory in MiB "
        f"(method: {methods}). Speed-up = t({ref or REFERENCE_VARIANT}) / t(variant), memory ratio = "
        f"peak fwd+bwd(variant) / peak fwd+bwd({ref or REFERENCE_VARIANT}), at the same n"
        + ("" if ref else f" — no `{REFERENCE_VARIANT}` cells in this run, so no ratios")
        + ". % of matmul peak: achieved FLOP/s (FlopCounterMode FLOPs / median time) over the measured "
        "matmul peak of the header.\n"
    )


def _failed_checks_note(run: Run, eff: pd.DataFrame) -> str:
    """A line naming the timed variants whose accuracy cells failed a layer check (`_verify_layers`:
    'its padding check fails at n=32'): an efficiency cell compares outputs with the reference on
    unpadded input only, so its timings stand beside a layer that is wrong elsewhere."""
    timed = set(eff.variant[eff.status == "ok"])
    failed: dict[str, set[str]] = {}
    for r in run.records:  # the message names the layer that failed: the cell's own, or its --cross variant
        found = re.match(r"(.+?): its (\S+) check fails at n=(\d+)", r.get("message") or "")
        if r.get("kind") == "accuracy" and r.get("status") == "error" and found and found[1] in timed:
            failed.setdefault(found[1], set()).add(f"{found[2]} at n={found[3]}")
    if not failed:
        return ""
    return ("Timed, though its accuracy cells failed a layer check and were not trained: "
            + ", ".join(f"{v} ({', '.join(sorted(failed[v]))})" for v in sorted(failed))
            + "; its timings are of a layer that fails it (`bench check --variants NAME`).\n")


def _efficiency_notes(eff: pd.DataFrame) -> str:
    single = eff[(eff.status == "ok") & (eff.runs_fwd_bwd.map(_one_block) | eff.runs_fwd.map(_one_block))]
    notes = []
    if not single.empty:
        notes.append("± n/a: timed in a single block, so no spread to show: "
                     + ", ".join(f"{r.variant} n={r.seq_len} ({_single_timings(r)})" for _, r in single.iterrows())
                     + " (`blocked_autorange` grows a block tenfold until the timer's overhead is negligible; "
                     "a slow call, or a block that reached the minimum run time, leaves one).")
    if "unverified" in eff.columns:
        unchecked = eff[(eff.status == "ok") & (eff.unverified == True)]  # noqa: E712 (NaN where not ok)
        if not unchecked.empty:
            notes.append("Not compared with a naive reference (the variant has none: no `reference_forward`, or no "
                         "`reference_core` of its own), so timed unverified: "
                         + ", ".join(f"{r.variant} n={r.seq_len}" for _, r in unchecked.iterrows()) + ".")
    forward_only = eff[forward_only_cells(eff) & eff.fwd_ms.notna()]
    if not forward_only.empty:
        reasons = sorted({r.message.removeprefix("forward only: ") for _, r in forward_only.iterrows() if r.message})
        notes.append("Forward only, no backward on this device ("
                     + ", ".join(f"{r.variant} n={r.seq_len}" for _, r in forward_only.iterrows())
                     + "): their fwd+bwd columns are empty" + (f" ({'; '.join(reasons)})" if reasons else "") + ".")
    if eff.step_ms.notna().any():
        notes.append("train step ms: one training step (forward, loss, backward) of the whole model around the "
                     "variant, at the efficiency width.")
    fractions = pd.concat([pd.to_numeric(eff.peak_fraction_fwd, errors="coerce"),
                           pd.to_numeric(eff.peak_fraction_fwd_bwd, errors="coerce")])
    if (fractions > 1).any():
        notes.append(f"Above 100 % of the matmul peak (up to {fractions.max():.0%}): the peak is one square matmul's, "
                     "timed when the run started; a larger GEMM may run a little faster than it, and a peak "
                     "taken while the machine was busier (other processes on its cores) reads low, so every % of "
                     "it reads high. Time and memory are unaffected; on a quiet machine, well past 100 % means the "
                     "latter.")
    return "\n".join(notes) + ("\n" if notes else "")


def write_csv(run: Run, prefix: str | Path) -> list[Path]:
    """Write one CSV per table as ``<prefix>_<table>.csv`` (tables: CSV_TABLES); return the paths.

    A trailing ``.csv`` or ``.md`` on `prefix` is dropped (``--out report.csv`` → ``report_accuracy.csv``);
    missing folders are made; each file is replaced atomically.
    """
    prefix = Path(prefix)
    if prefix.suffix in (".csv", ".md"):
        prefix = prefix.with_suffix("")
    eff = efficiency_frame(run.records)
    frames = {
        "accuracy": accuracy_frame(run.records, grid_seeds(run), grid_variants(run)),
        "long_range": distance_frame(run.records),
        "effective_range": long_range_frame(run.records, run.grid),
        "efficiency": eff,
        "scaling": scaling_frame(eff),
    }
    paths = []
    for name in CSV_TABLES:
        out, frame = prefix.with_name(f"{prefix.name}_{name}.csv"), frames[name]
        # each file whole or not replaced: a failed write (disk full) leaves the previous one
        paths.append(write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False)))
    return paths


# -- comparing two runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Matched cells of two runs (one row per cell and metric) and what is in one run only."""

    frame: pd.DataFrame
    only_a: list[str]
    only_b: list[str]
    rtol: float

    @property
    def regressions(self) -> pd.DataFrame:
        """The rows that regressed beyond the tolerance."""
        return self.frame[self.frame.regressed]

    @property
    def compared(self) -> pd.DataFrame:
        """The rows of cells matched on the same data (not the `data` rows of cells whose task
        data differ): a gate that compared none of them compared nothing."""
        return self.frame[self.frame.metric != "data"]


def timed_forward_only(record: dict) -> bool:
    """An ok efficiency record timed forward only (no backward on its device: runner/measure.py)."""
    res = record.get("result") or {}
    return record.get("kind") == "efficiency" and res.get("fwd_bwd") is None and bool(res.get("no_backward"))


def _metrics(record: dict, forward: bool = False) -> dict[str, tuple[float, bool]]:
    """Compared metrics of an ok record: name → (value, higher is better). An efficiency record's
    forward and forward+backward time and peak memory; `forward`: its forward's alone (what a cell
    timed forward only has)."""
    res = record.get("result") or {}
    if record.get("kind") == "efficiency":
        keys = ("fwd",) if forward else ("fwd", "fwd_bwd")
        return {
            **{f"{key.replace('_', '+')} ms": (_number((res.get(key) or {}).get("median_s")) * 1e3, False)
               for key in keys},
            **{f"peak MiB {key.replace('_', '+')}": (_number(res.get(f"peak_bytes_{key}")) / 2**20, False)
               for key in keys},
        }
    metric = res.get("metric") or "score"
    return {metric: (_number(res.get("score")), metric not in LOWER_IS_BETTER)}


# grid.json keys whose difference makes the same cell key measure something else; variants,
# tasks, lengths and seeds may differ (such cells are in one run only)
# what a cell is: runs that differ in these are refused. The machine (device, CPU, threads, torch)
# may differ: comparing machines is a use of its own, and the page then says so in a note
COMPARABLE_SETTINGS = ("profile", "dtype", "cross", "size", "train", "efficiency", "data")


def incomparable_settings(a: dict, b: dict) -> list[str]:
    """'dtype fp32 vs fp16' for each setting in which grid `a` differs from grid `b`.

    A cell's key names neither dtype, profile, model size nor budgets, nor the bytes of a data file
    it names by path (`data`: their sha256), so without this a fp16 run matches a fp32 run cell
    for cell. A setting one grid lacks (a run from before it was recorded) is not held against it;
    nor are the efficiency lengths, which only select cells, nor the efficiency cells' time budget
    (`max_seconds`), which decides whether a cell may finish, not what it measures.
    """
    differs = []
    for key in COMPARABLE_SETTINGS:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key == "data":  # a data file's bytes: its sha256
            differs += [f"data file {k}: sha256 {short_digest(str(va[k]))} vs {short_digest(str(vb[k]))}" for k in va
                        if k in vb and va[k] != vb[k]]
        elif isinstance(va, dict) and isinstance(vb, dict):
            differs += [f"{key}.{k} {_json(va[k])} vs {_json(vb[k])}" for k in va
                        if k in vb and k not in ("lengths", "max_seconds") and va[k] != vb[k]]
        elif key in a and key in b and va != vb:
            differs.append(f"{key} {_json(va)} vs {_json(vb)}")
    return differs


def _json(value: Any) -> str:
    """A grid value as grid.json spells it (strings unquoted)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def compare_runs(a: Run, b: Run, rtol: float = 0.05) -> Comparison:
    """Match cells by key; a row regresses when B is worse than A by more than `rtol` (relative).

    Worse: a score lower (bits per byte: higher), the forward's or the fwd+bwd's median time or peak
    memory higher (where either cell was timed forward only, `measure.py`: the forward's alone; a
    cell that B timed forward only and A did not is a regression itself), or a status that went
    from ok to anything else, or a number A's cell has that B's ok cell lacks (null, NaN, inf: a
    hand-edited or torn record). A cell not ok in A is never a regression. Runs of
    different settings (`incomparable_settings`) are refused: their cells only share keys.
    """
    differs = incomparable_settings(a.grid, b.grid)
    if differs:
        raise AttnbenchError(f"the runs are not comparable: their grids differ in {'; '.join(differs)}")
    # matched by what ran, not by how it was written: 'linear' and 'linear(kernel=eager)' are one cell
    by_a = {_same_cell(r): r for r in a.records}
    by_b = {_same_cell(r): r for r in b.records}
    rows = []
    for same in [k for k in by_a if k in by_b]:
        ra, rb = by_a[same], by_b[same]
        key = ra["key"] if ra["key"] == rb["key"] else f"{ra['key']} (B: {rb['key']})"
        sa, sb = ra.get("status"), rb.get("status")
        base = {"key": key, "kind": ra.get("kind"), "status_a": sa, "status_b": sb}
        if sa != "ok" or sb != "ok":
            regressed = sa == "ok" and sb != "ok"
            note = (f"status ok → {sb}" + (f": {rb.get('message')}" if rb.get("message") else "")) if regressed else (
                "now ok" if sb == "ok" else "not ok in either")
            rows.append({**base, "metric": "status", "a": math.nan, "b": math.nan, "ratio": math.nan,
                         "change": math.nan, "regressed": regressed, "note": note})
            continue
        digests = [(r.get("result") or {}).get("data_digest") for r in (ra, rb)]
        if all(digests) and digests[0] != digests[1]:  # a task's generator or split changed between the runs
            rows.append({**base, "metric": "data", "a": math.nan, "b": math.nan, "ratio": math.nan,
                         "change": math.nan, "regressed": False,
                         "note": f"other task data (sha256 {digests[0]} vs {digests[1]}): not compared"})
            continue
        forward = timed_forward_only(ra) or timed_forward_only(rb)  # then what both timed: the forward
        if timed_forward_only(rb) and not timed_forward_only(ra):  # B lost the backward that A timed
            rows.append({**base, "metric": "fwd+bwd", "a": math.nan, "b": math.nan, "ratio": math.nan,
                         "change": math.nan, "regressed": True,
                         "note": f"fwd+bwd in A, {rb.get('message') or 'forward only'} in B"})
        ma, mb = _metrics(ra, forward), _metrics(rb, forward)
        for name, (va, higher) in ma.items():
            vb = mb.get(name, (math.nan, higher))[0]
            ratio = vb / va if _finite(va) and _finite(vb) and va != 0 else math.nan
            change = (vb - va) / abs(va) if _finite(va) and _finite(vb) and va != 0 else math.nan
            if _finite(va) and not _finite(vb):  # an ok cell of B that lost what A measured: no number to pass
                regressed, note = True, ("no value" if vb is None or vb != vb else f"{vb}") + " in B"
            elif not (_finite(va) and _finite(vb)):
                regressed, note = False, "not comparable"
            else:  # both ways beyond rtol: a change within it is noise either way
                gain = (vb - va) if higher else (va - vb)
                regressed = gain < -rtol * abs(va)
                note = "worse" if regressed else ("better" if gain > rtol * abs(va) else "")
            rows.append({**base, "metric": name, "a": va, "b": vb, "ratio": ratio, "change": change,
                         "regressed": regressed, "note": note})
    frame = pd.DataFrame(rows, columns=["key", "kind", "status_a", "status_b", "metric", "a", "b", "ratio",
                                        "change", "regressed", "note"])
    frame["regressed"] = frame.regressed.astype(bool)
    return Comparison(frame=frame, only_a=[r["key"] for k, r in by_a.items() if k not in by_b],
                      only_b=[r["key"] for k, r in by_b.items() if k not in by_a], rtol=rtol)


def _same_cell(record: Mapping) -> str:
    """What a record ran, as one string: its kind, variant and task with their options' defaults filled
    in (`with_defaults`), length and seed; its key where it lacks them."""
    if "variant" not in record:
        return str(record.get("key"))
    options = lambda kind, name, given: sorted(  # noqa: E731 — 5 and 5.0 are one value, as JSON has them
        (k, float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
        for k, v in with_defaults(kind, name, given).items())
    task = record.get("task")
    return json.dumps([record.get("kind"), record.get("variant"), options("variant", record.get("variant"),
                       record.get("variant_options")), task, options("task", task, record.get("task_options")) if task
                       else None, record.get("seq_len"), record.get("seed")], sort_keys=True, default=str)


def _metric_of(rows: pd.DataFrame, task: str) -> str | None:
    """The metric of a task column without an ok cell: as its cells at another length recorded it,
    else as the task registered here declares it (a bits-per-byte column stays out of the Average
    and lower-is-better when every cell failed); None where neither says."""
    recorded = rows.metric[rows.task == task].dropna()
    if not recorded.empty:
        return recorded.iloc[0]
    name = rows.task_name[rows.task == task].dropna()
    spec = _registered_spec("task", name.iloc[0]) if not name.empty else None
    return spec.metric if spec is not None else None


def with_defaults(kind: str, name: Any, options: Any) -> dict[str, Any]:
    """`options` of a recorded variant or task (`kind`) with the defaults of the options it did not
    give filled in, as registered here; as given where `name` is not registered here (a plugin not
    loaded) or the record's options are not a mapping."""
    given = dict(options) if isinstance(options, Mapping) else {}
    spec = _registered_spec(kind, name)
    if spec is None:  # as given
        return given
    return {**{o.name: o.default for o in spec.options}, **given}


def _registered_spec(kind: str, name: Any) -> Any:
    """The spec of the variant or task (`kind`) `name` as registered here; None where it is not (a
    plugin not loaded, or one that fails to load) or `name` is no name."""
    if not isinstance(name, str) or not name:
        return None
    from attnbench.tasks.base import TASKS  # registries: only here, the rest of the report reads files
    from attnbench.variants.base import VARIANTS

    try:
        return (VARIANTS if kind == "variant" else TASKS)[name].spec
    except Exception:  # noqa: BLE001 — not registered here, or a plugin that fails to load
        return None


# the matmul peaks of two runs' starts further apart than this ratio: one machine was busier (this
# 2-core VM's idle runs read 187-224 GFLOP/s, 1.2x apart; a run beside another process read 0.31x)
PEAK_DRIFT = 1.25


def _machine(run: Run, key: str):
    """A machine fact of a run from env.json, or for the device and threads from grid.json where it
    has none (None: unknown)."""
    value = run.env.get(key)
    return run.grid.get(key) if value is None and key in ("device", "threads") else value


def plugin_sources(env: Mapping, key: str) -> dict[str, str]:
    """A run's plugins in words, by name, as a resume's warning says them (`store.provenance_value`):
    `key` "plugins", each --plugin target's 'sha256 …' (or 'source not found'), or
    "installed_plugins", each entry point's 'version V, sha256 …' (or 'failed to load')."""
    recorded = env.get(key)
    if not isinstance(recorded, Mapping):
        return {}
    if key == "plugins":
        return {target: provenance_value(key, digest) if digest else "source not found"
                for target, digest in recorded.items()}
    return {name: provenance_value(key, dict(ep) if isinstance(ep, Mapping) else {}) for name, ep in recorded.items()}


def _plugins_differ(a: Mapping, b: Mapping) -> list[str]:
    """How two runs' plugins differ, in words: the --plugin sources by content (one file at two paths
    is the same code), the installed ones by name; over the run's start and each resume that ran
    cells (env.json `resumes`: a run resumed on other plugins ran both); each only where both runs
    recorded it (a run from before it was recorded is unknown, not different)."""
    def states(env: Mapping, key: str) -> list[Mapping]:  # the run's start, then each resume, that recorded `key`
        ran = (env, *(env.get("resumes") or []))
        return [s for s in ran if isinstance(s, Mapping) and isinstance(s.get(key), Mapping)]

    out = []
    if all(isinstance(env.get("plugins"), Mapping) for env in (a, b)):
        ran = [states(env, "plugins") for env in (a, b)]
        digests = [{tuple(sorted(str(d) for d in s["plugins"].values())) for s in run} for run in ran]
        if digests[0] != digests[1]:
            said = [" then ".join(dict.fromkeys(", ".join(f"{target} ({what})" for target, what in
                                                          plugin_sources(s, "plugins").items()) or "none" for s in run))
                    for run in ran]
            out.append(f"--plugin sources: {said[0]} in A, {said[1]} in B")
    if all(isinstance(env.get("installed_plugins"), Mapping) for env in (a, b)):
        sources = []
        for env in (a, b):
            seen: dict[str, list[str]] = {}
            for state in states(env, "installed_plugins"):
                for name, what in plugin_sources(state, "installed_plugins").items():
                    seen.setdefault(name, []).append(what)
            sources.append({name: " then ".join(dict.fromkeys(whats)) for name, whats in seen.items()})
        out += [f"{name}: {sources[0].get(name, 'absent')} in A, {sources[1].get(name, 'absent')} in B"
                for name in sorted(set(sources[0]) | set(sources[1])) if sources[0].get(name) != sources[1].get(name)]
    return out


def nothing_compared(comparison: Comparison) -> str:
    """Why a comparison compared nothing (it then fails: a gate that compares nothing passes anything)."""
    if not comparison.frame.empty:
        return (f"every cell in both runs ({comparison.frame.key.nunique()}) trained on other task data in each "
                "(a task's generator or split changed between them)")
    return f"no cell is in both runs (A has {len(comparison.only_a)}, B has {len(comparison.only_b)})"


def render_comparison(a: Run, b: Run, comparison: Comparison) -> str:
    """The comparison as plain markdown: conditions of both runs, side-by-side table, one-run cells, verdict."""
    lines = [f"# attnbench compare: A = {a.path.name}, B = {b.path.name}", ""]
    for name, run in (("A", a), ("B", b)):
        env = run.env
        where = env.get("cuda_device") or env.get("cpu", "?")
        lines.append(f"- **{name}**: `{run.path}` — {_machine(run, 'device') or '?'} ({where}), "
                     f"{threads_text(_machine(run, 'threads'))}, torch {env.get('torch', '?')}, "
                     f"git {env.get('git_sha', '?')}, profile {run.grid.get('profile', '?')}, {env.get('created', '?')}")
    keys = ("device", "cpu", "cuda_device", "threads", "torch")
    if {_machine(a, "device"), _machine(b, "device")} == {"cpu"}:  # no GPU on either side to name
        keys = tuple(k for k in keys if k != "cuda_device")
    # a run without env.json lacks most of these: unknown there, not different
    unknown = [k for k in keys if any(not r.env and _machine(r, k) is None for r in (a, b))]
    differs = [k for k in keys if k not in unknown and _machine(a, k) != _machine(b, k)]
    if differs:
        lines.append(f"- **note**: the runs differ in {', '.join(differs)}: time and memory ratios compare machines, "
                     "not code.")
    plugins_differ = _plugins_differ(a.env, b.env)
    if plugins_differ:
        lines.append(f"- **note**: the runs' plugins differ ({'; '.join(plugins_differ)}): a cell of a plugin's "
                     "variant or task may have run other code in each.")
    peaks = [_number(run.env.get("matmul_peak_flops")) for run in (a, b)]
    if "device" not in differs and all(_finite(p) and p > 0 for p in peaks) and not (
            1 / PEAK_DRIFT <= peaks[1] / peaks[0] <= PEAK_DRIFT):
        lines.append(f"- **note**: the matmul peak each run measured at its start differs: A {peaks[0] / 1e9:.1f}, "
                     f"B {peaks[1] / 1e9:.1f} GFLOP/s ({peaks[1] / peaks[0]:.2f}×), so one ran on a busier or another "
                     "machine: its time ratios say as much about that as about the code.")
    if unknown:
        lacking = [name for name, run in (("A", a), ("B", b)) if not run.env]
        lines.append(f"- **note**: {' and '.join(lacking)} record{'s' if len(lacking) == 1 else ''} no "
                     f"environment (env.json), so whether the runs differ in {', '.join(unknown)} is unknown: time "
                     "and memory ratios may compare machines.")
    lines += ["", f"B / A per matched cell; a regression is B worse than A by more than rtol = {comparison.rtol:g} "
              "(score down — bits per byte up —, fwd or fwd+bwd time or peak memory up, a backward lost (timed forward "
              "only in B), a number lost, or ok → not ok).", ""]
    frame = comparison.frame
    table = pd.DataFrame([
        {"cell": f"`{r.key}`", "metric": r.metric,
         "A": _value(r.a) if r.metric != "status" else r.status_a,
         "B": _value(r.b) if r.metric != "status" else r.status_b,
         "B / A": _ratio(r.ratio), "change": "" if not _finite(r.change) else f"{r.change:+.1%}",
         "verdict": ("**REGRESSION**" if r.regressed else "") + (f" {r.note}" if r.note else "")}
        for _, r in frame.iterrows()
    ])
    lines.append(markdown_table(table) if not table.empty else "No cell is in both runs.\n")
    for name, keys in (("A", comparison.only_a), ("B", comparison.only_b)):
        if keys:
            lines += [f"Only in {name} ({len(keys)}):", ""] + [f"- `{k}`" for k in keys] + [""]
    for name, run in (("A", a), ("B", b)):
        unrecorded, planned = _unrecorded(run)
        if unrecorded:  # a gate passes what it never saw: say so
            lines += [f"{name} is incomplete: {unrecorded} of its grid's {planned} cells are not recorded "
                      f"({_resume_hint(run)}); they are compared with nothing.", ""]
    other_data = frame[frame.metric == "data"]
    if len(other_data):
        lines += [f"{len(other_data)} matched cell(s) trained and were scored on other task data (a task's generator "
                  "or split changed between the runs, `data_digest`): their scores are another measurement, listed "
                  "above, not compared.", ""]
    bad = comparison.regressions
    if comparison.compared.empty:
        lines.append(f"Nothing compared: {nothing_compared(comparison)}; that fails the gate.")
    elif bad.empty:
        lines.append(f"No regressions beyond rtol {comparison.rtol:g} in {comparison.compared.key.nunique()} matched "
                     "cells.")
    else:
        lines += [f"**{len(bad)} regression(s)** beyond rtol {comparison.rtol:g}:", ""]
        for _, r in bad.iterrows():
            if r.metric in ("status", "fwd+bwd"):  # no numbers: what changed is in the note
                lines.append(f"- `{r.key}`: {r.note}")
            elif not _finite(r.b):  # a number A had and B lost
                lines.append(f"- `{r.key}`: {r.metric} {_value(r.a)} in A, {r.note}")
            else:
                lines.append(f"- `{r.key}`: {r.metric} {_value(r.a)} → {_value(r.b)} ({r.change:+.1%})")
    return "\n".join(lines).rstrip("\n") + "\n"


# -- formatting --------------------------------------------------------------------------------


def _status_text(text: str) -> bool:
    """Whether a cell's text is its statuses ('timeout', 'error/not run') or '-', not a value."""
    return text == "-" or all(part in (*STATUSES, "not run") for part in text.split("/"))


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """`frame` as a GitHub markdown table (cells as text, '|' escaped); numbers right-aligned."""
    if index:
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]
    body = [["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in row]
            for row in frame.itertuples(index=False)]
    right = [i > 0 and any(row[i] for row in body)
             and all(_numeric_text(row[i]) for row in body if row[i] and not _status_text(row[i]))
             for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = "|" + "|".join("---:" if r else "---" for r in right) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)]) + "\n"


def _numeric_text(text: str) -> bool:
    head = text.strip("*≥< ").split(" ")[0].rstrip("×%")
    try:
        float(head)
    except ValueError:
        return False
    return True


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)


def _decimals(value: float) -> int:
    magnitude = abs(value)
    return 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3


def _time_cell(ms: float, iqr_ms: float | None, runs: float = math.nan) -> str:
    """'81.4 ± 0.3': the median and its IQR; '± n/a' where one block was timed (`runs` 1), whose IQR
    of 0 says nothing about spread."""
    if not _finite(ms):
        return "-"
    d = _decimals(ms)
    if _one_block(runs):
        return f"{ms:.{d}f} ± n/a"
    return f"{ms:.{d}f}" + (f" ± {iqr_ms:.{d}f}" if iqr_ms is not None and _finite(iqr_ms) else "")


def _single_timings(row: pd.Series) -> str:
    """Which of an efficiency row's timings ran one block: 'fwd', 'fwd+bwd' or both."""
    return ", ".join(name for name, runs in (("fwd", row.runs_fwd), ("fwd+bwd", row.runs_fwd_bwd)) if _one_block(runs))


def _one_block(runs: float) -> bool:
    """Whether a timing ran one block (`runs` 1), whose IQR of 0 says nothing about spread."""
    return _finite(runs) and runs <= 1


def _mib(value: float) -> str:
    return "-" if not _finite(value) else f"{value:.{_decimals(value)}f}"


def _chance(value: float) -> str:
    if not _finite(value):
        return "-"
    return "<0.001" if 0 < value < 0.0005 else f"{value:.3f}"


def _ratio(value: float) -> str:
    return "-" if not _finite(value) else f"{value:.2f}×"


def _percent(value: float) -> str:
    return "-" if not _finite(value) else f"{value * 100:.1f}%"


def _value(value: float) -> str:
    return "-" if not _finite(value) else f"{value:.{_decimals(value) + 1}f}"
