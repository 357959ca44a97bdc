"""The regression gate: a run's times against a committed baseline CSV of the same machine kind.

Rows are matched on (case, impl, batch, n, dtype, device) and compared only where the baseline was
taken on the same machine (CPU model or GPU name) with the same thread count and heap condition
(`bench perf --heap`; a CSV from before the `heap` column was timed under glibc's defaults on CPU);
a row regresses when its median is more than `tolerance` (10 %) above the baseline's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnbench.errors import AttnbenchError
from attnbench.runner.heap import CUDA_HEAP, GLIBC

KEY = ["case", "impl", "batch", "n", "dtype", "device"]
MACHINE = ["machine", "threads"]
CONDITION = MACHINE + ["heap"]  # rows compare only where all of these are equal


@dataclass(frozen=True)
class Regression:
    """One row that got slower than the baseline allows."""

    case: str
    impl: str
    batch: int
    n: int
    baseline_s: float
    current_s: float

    @property
    def ratio(self) -> float:
        """Current time over baseline time."""
        return self.current_s / self.baseline_s

    def __str__(self) -> str:
        return (f"{self.case} {self.impl} b={self.batch} n={self.n}: {self.current_s * 1e3:.2f} ms vs "
                f"{self.baseline_s * 1e3:.2f} ms baseline ({self.ratio:.2f}×)")


@dataclass(frozen=True)
class Comparison:
    """The outcome: regressions, how many rows were compared, and rows skipped for another machine
    or heap condition."""

    regressions: tuple[Regression, ...]
    compared: int
    other_condition: int


def read_results(path: str | Path) -> pd.DataFrame:
    """A benchmark CSV, checked for the columns the gate needs."""
    path = Path(path)
    if not path.is_file():
        raise AttnbenchError(f"no benchmark results at {path}")
    df = pd.read_csv(path)
    missing = [c for c in KEY + MACHINE + ["median_s"] if c not in df.columns]
    if missing:
        raise AttnbenchError(f"{path}: not a benchmark CSV (missing columns: {', '.join(missing)})")
    return df


def with_heap(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `heap` filled in where absent: older results were timed under glibc's defaults
    on CPU, and under CUDA's own allocator on CUDA."""
    legacy = df["device"].map(lambda device: CUDA_HEAP if str(device).startswith("cuda") else GLIBC)
    heap = df["heap"] if "heap" in df.columns else pd.Series(None, index=df.index, dtype=object)
    return df.assign(heap=heap.fillna(legacy))


def compare(baseline: pd.DataFrame, current: pd.DataFrame, *, tolerance: float = 0.10) -> Comparison:
    """Rows of `current` more than `tolerance` slower than `baseline` on the same machine kind and heap."""
    base = with_heap(baseline[baseline["median_s"].notna()])
    cur = with_heap(current[current["median_s"].notna()])
    merged = cur.merge(base, on=KEY, suffixes=("", "_base"))
    same = pd.Series(True, index=merged.index)
    for column in CONDITION:
        same &= merged[column] == merged[f"{column}_base"]
    regressions = tuple(
        Regression(r["case"], r["impl"], int(r["batch"]), int(r["n"]), float(r["median_s_base"]), float(r["median_s"]))
        for _, r in merged[same].iterrows()
        if r["median_s"] > r["median_s_base"] * (1 + tolerance)
    )
    return Comparison(regressions, int(same.sum()), int((~same).sum()))


def side_by_side(rows: list[dict], *, tolerance: float = 0.10) -> Comparison:
    """Each variant's core against its `core@<rev>` (another revision's code) timed in the same
    interleaved rounds (`bench perf --against REV`): drift of the machine cancels in the ratio."""
    timed = timed_medians(rows)
    regressions, compared = [], 0
    for (case, impl, batch, n), old in sorted(timed.items()):
        new = timed.get((case, "core", batch, n))
        if not impl.startswith("core@") or new is None:
            continue
        compared += 1
        if new > old * (1 + tolerance):
            regressions.append(Regression(case, f"core vs {impl}", batch, n, old, new))
    return Comparison(tuple(regressions), compared, 0)


def timed_medians(rows: list[dict]) -> dict[tuple, float]:
    """{(case, impl, batch, n): median_s} of the rows that were timed (None from the suite, NaN
    from a CSV for the others)."""
    return {(r["case"], r["impl"], r["batch"], r["n"]): r["median_s"] for r in rows
            if r["median_s"] is not None and not pd.isna(r["median_s"])}
