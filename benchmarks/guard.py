"""The regression gate: a run's times against a committed baseline CSV of the same machine kind.

Rows are matched on (case, impl, batch, n, dtype, device, and heads and d_head where both CSVs
record them) and compared only where the baseline was
taken on the same machine (CPU model or GPU name) with the same thread count and heap condition
(`bench perf --heap`; a CSV from before the `heap` column was timed under glibc's defaults on CPU);
a row regresses when its median is more than `tolerance` (10 %) above the baseline's. A comparison
of no row at all fails too (`why_nothing_compared` says what differs): it would pass any regression.
So does a variant's core or layer row that the baseline timed and the run did not (`Lost`: a wrong
output, an error, out of memory, over the time limit, or no row where the run timed others of the
same case and length): a gate that compared only the rows still standing would pass a kernel
that broke.
`side_by_side` gates a `--against` run instead; `not_ours`, `unconfirmable` and `confirmations`
are the parts of `--confirm` (attnbench/perf_gate.py `Confirm`) that need no git and no run.
"""

from __future__ import annotations

import math
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
    # where and on what the row was timed (what `--confirm` times it again under), from `compare`
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None
    heap: str | None = None
    machine: str | None = None
    revision: str | None = None  # the row's git_sha
    torch: str | None = None
    baseline_revision: str | None = None  # the baseline row's git_sha
    baseline_torch: str | None = None

    @property
    def ratio(self) -> float:
        """Current time over baseline time."""
        return self.current_s / self.baseline_s

    def __str__(self) -> str:
        return (f"{self.case} {self.impl} b={self.batch} n={self.n}: {self.current_s * 1e3:.2f} ms vs "
                f"{self.baseline_s * 1e3:.2f} ms baseline ({self.ratio:.2f}×)")


@dataclass(frozen=True)
class Lost:
    """A variant's core or layer row timed in the baseline that the run, on the same machine, threads
    and heap and at the same case, batch and n, did not time: its status there, or "no row"."""

    case: str
    impl: str
    batch: int
    n: int
    baseline_s: float
    status: str

    def __str__(self) -> str:
        return (f"{self.case} {self.impl} b={self.batch} n={self.n}: {self.baseline_s * 1e3:.2f} ms in the "
                f"baseline, not timed here ({self.status})")


@dataclass(frozen=True)
class Comparison:
    """The outcome: regressions, how many rows were compared, rows skipped for another machine
    or heap condition, and the variants' rows the run lost."""

    regressions: tuple[Regression, ...]
    compared: int
    other_condition: int
    lost: tuple[Lost, ...] = ()
    uncompared: tuple[int, int] = (0, 0)  # the baseline's timed rows no row of the run was compared with:
    # (under a machine, thread count and heap the run has, but not timed in it; under others only)


NUMERIC = ["batch", "n", "threads", "median_s"]  # compared as numbers: text there is not a benchmark's
WHOLE = ["batch", "n", "threads"]  # of a timed row: whole numbers, never empty
TEXT = ["case", "impl", "dtype", "device", "machine", "heap", "torch", "git_sha"]


def read_results(path: str | Path) -> pd.DataFrame:
    """A benchmark CSV, checked for the columns the gate needs: any other file (a cells.jsonl, a
    binary, an empty file) is one line naming it, never pandas' traceback."""
    path = Path(path)
    if not path.is_file():
        raise AttnbenchError(f"no benchmark results at {path}")
    try:  # text read as text: a revision of digits only (leading zeros), a torch "2.10" (not 2.1)
        df = pd.read_csv(path, dtype=dict.fromkeys(TEXT, str))
    except OSError as exc:
        raise AttnbenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # pandas' ParserError and EmptyDataError, UnicodeDecodeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttnbenchError(f"{path}: not a benchmark CSV ({reason})") from None
    missing = [c for c in KEY + MACHINE + ["median_s"] if c not in df.columns]
    if missing:
        raise AttnbenchError(f"{path}: not a benchmark CSV (missing columns: {', '.join(missing)})")
    numeric = NUMERIC + [c for c in SHAPE if c in df.columns]  # optional, matched on where both files have them
    text = [c for c in numeric if not df.empty and (not pd.api.types.is_numeric_dtype(df[c])
                                                    or pd.api.types.is_bool_dtype(df[c]))]
    if text:
        raise AttnbenchError(f"{path}: not a benchmark CSV (not numbers in columns: {', '.join(text)})")
    _check_timed_rows(df, path)
    return df


def _check_timed_rows(df: pd.DataFrame, path: Path) -> None:
    """A row the gate compares (`_timed_mask`) has a positive whole batch, n and thread count and a
    positive, finite median: `bench perf` writes no other, and the gate would divide by a zero or
    match an empty key with the other file's. Rows are named by their place among the data rows."""
    timed = df[_timed_mask(df)]
    for column in WHOLE:
        values = timed[column]
        bad = values.isna() | (values % 1 != 0) | (values < 1)
        if bad.any():
            raise AttnbenchError(f"{path}: not a benchmark CSV (data row {_place(df, bad)}: {column} is "
                                 f"{_cell(values[bad.idxmax()])}, not a positive whole number, in a timed row)")
    bad = ~((timed["median_s"] > 0) & timed["median_s"].map(math.isfinite))
    if bad.any():
        raise AttnbenchError(f"{path}: not a benchmark CSV (data row {_place(df, bad)}: median_s is "
                             f"{_cell(timed['median_s'][bad.idxmax()])}, not a positive time)")


def _place(df: pd.DataFrame, bad: pd.Series) -> int:
    """The 1-based place among `df`'s data rows of the first row `bad` marks."""
    return df.index.get_loc(bad.idxmax()) + 1


def _cell(value) -> str:
    return "empty" if pd.isna(value) else f"{value:g}"


def with_heap(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `heap` filled in where absent: older results were timed under glibc's defaults
    on CPU, and under CUDA's own allocator on CUDA."""
    legacy = df["device"].map(lambda device: CUDA_HEAP if str(device).startswith("cuda") else GLIBC)
    heap = df["heap"] if "heap" in df.columns else pd.Series(None, index=df.index, dtype=object)
    return df.assign(heap=heap.fillna(legacy))


SHAPE = ["heads", "d_head"]  # where both CSVs record them, rows of another shape are another benchmark


def _key(baseline: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """The columns a row is matched on: KEY, and SHAPE where both CSVs have it."""
    return KEY + [c for c in SHAPE if c in baseline.columns and c in current.columns]


def torch_versions(baseline: pd.DataFrame, current: pd.DataFrame) -> tuple[str, str] | None:
    """(baseline's, current's) torch versions of the timed rows where they differ; None if alike
    or not recorded."""
    versions = [sorted(set(_timed(df)["torch"].dropna().astype(str))) if "torch" in df.columns else []
                for df in (baseline, current)]
    if not all(versions) or versions[0] == versions[1]:
        return None
    return " or ".join(versions[0]), " or ".join(versions[1])


def compare(baseline: pd.DataFrame, current: pd.DataFrame, *, tolerance: float = 0.10) -> Comparison:
    """Rows of `current` more than `tolerance` slower than `baseline` on the same machine, threads and heap."""
    base = _timed(baseline).rename(columns={"git_sha": "baseline_revision", "torch": "baseline_torch"})
    cur = _timed(current)
    key = _key(baseline, current)
    merged = cur.merge(base, on=key, suffixes=("", "_base"))
    same = pd.Series(True, index=merged.index)
    for column in CONDITION:
        same &= merged[column] == merged[f"{column}_base"]
    regressions = tuple(
        Regression(r["case"], r["impl"], int(r["batch"]), int(r["n"]), float(r["median_s_base"]), float(r["median_s"]),
                   device=_text(r["device"]), dtype=_text(r["dtype"]), threads=int(r["threads"]), heap=_text(r["heap"]),
                   machine=_text(r["machine"]), revision=_text(r.get("git_sha")), torch=_text(r.get("torch")),
                   baseline_revision=_text(r.get("baseline_revision")), baseline_torch=_text(r.get("baseline_torch")))
        for _, r in merged[same].iterrows()
        if r["median_s"] > r["median_s_base"] * (1 + tolerance)
    )
    return Comparison(regressions, int(same.sum()), int((~same).sum()), lost(base, current),
                      _uncompared(base, cur, merged[same], key))


def _uncompared(base: pd.DataFrame, cur: pd.DataFrame, matched: pd.DataFrame, key: list[str]) -> tuple[int, int]:
    """`Comparison.uncompared`: of the baseline's timed rows (`base`) that no row of `cur` was
    compared with, how many were timed under a machine, threads and heap of `cur`'s (a `--variants`,
    `--lengths` or `--batch` subset, or a row not timed) and how many under others only."""
    def tuples(df: pd.DataFrame, columns: list[str]) -> list[tuple]:  # NaN (no heads recorded) as None: NaN != NaN
        return list(df[columns].astype(object).where(df[columns].notna(), None).itertuples(index=False, name=None))

    done = set(tuples(matched, key + CONDITION))
    conditions = set(tuples(cur, CONDITION))
    rows = [r for r in tuples(base, key + CONDITION) if r not in done]
    here = sum(r[len(key):] in conditions for r in rows)
    return here, len(rows) - here


OURS = ("core", "layer")  # a variant's own rows; SDPA, the naive references and the peers are not its code
ENVIRONMENT = ("unavailable", "not installed")  # statuses of what this machine lacks (a compiler, a peer)


def lost(base: pd.DataFrame, current: pd.DataFrame) -> tuple[Lost, ...]:
    """The baseline's timed core and layer rows (`base`: `_timed`) that `current` did not time, where
    `current` ran that case, batch and n (any row of it) on the baseline row's machine, threads and
    heap: `--variants` and `--lengths` subsets lose nothing, and neither does a case whose kernel
    this machine lacks (a row of it `unavailable`: no compiler for kernel=compiled, which writes
    its core row alone)."""
    cur = with_heap(current)
    cell = ["case", "batch", "n", "dtype", "device", *CONDITION]  # one case at one length, on one machine
    statuses = cur["status"].astype(str) if "status" in cur.columns else pd.Series("ok", index=cur.index)
    status = dict(zip(cur[KEY + CONDITION].itertuples(index=False, name=None), statuses))
    cells = set(cur[cell].itertuples(index=False, name=None))
    lacking = set(cur[statuses.str.startswith(ENVIRONMENT)][cell].itertuples(index=False, name=None))
    timed = set(_timed(current)[KEY + CONDITION].itertuples(index=False, name=None))
    out = []
    for r in base[base["impl"].isin(OURS)].itertuples(index=False):
        row = r._asdict()
        key, where = tuple(row[c] for c in KEY + CONDITION), tuple(row[c] for c in cell)
        if key in timed or where not in cells or where in lacking:
            continue
        out.append(Lost(row["case"], row["impl"], int(row["batch"]), int(row["n"]), float(row["median_s"]),
                        _untimed_because(status.get(key, "no row"))))
    return tuple(out)


def _untimed_because(status: str) -> str:
    """Why a row was not timed, for `Lost`: its status, or where it says none (ok, or empty: NaN
    read from a CSV) "no time recorded"."""
    return "no time recorded" if status in ("ok", "nan") else status


def _text(value) -> str | None:
    """A CSV cell as text, None where empty (NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _timed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that were timed (`_timed_mask`), with their heap condition filled in."""
    return with_heap(df[_timed_mask(df)])


def _timed_mask(df: pd.DataFrame) -> pd.Series:
    """The rows the gate compares: those with a median and, where the CSV records a status, ok."""
    timed = df["median_s"].notna()
    if "status" in df.columns:
        timed &= df["status"].isna() | (df["status"].astype(str).str.strip() == "ok")
    return timed


def why_nothing_compared(baseline: pd.DataFrame, current: pd.DataFrame, base_name: str, current_name: str) -> str:
    """Why `compare` compared no row, in words: a gate that passes without comparing anything would
    pass every regression, so the command exits 1 and says what differs."""
    base, cur = _timed(baseline), _timed(current)
    if base.empty or cur.empty:
        return f"{base_name if base.empty else current_name} has no timed row"
    columns = _key(baseline, current)
    merged = cur.merge(base, on=columns, suffixes=("", "_base"))
    key = ", ".join(columns[:-1]) + f" and {columns[-1]}"
    if merged.empty:
        return f"no timed row of {current_name} has the {key} of a timed row of {base_name}"
    rows = len(merged[columns].drop_duplicates())  # a baseline of several machines pairs a row more than once
    same_machine = merged[merged["machine"] == merged["machine_base"]]
    if not same_machine.empty:  # its own machine's rows are the ones to explain
        merged = same_machine
    differences = [f"{column} ({_values(merged[f'{column}_base'])} in {base_name}, {_values(merged[column])} in "
                   f"{current_name})" for column in CONDITION if (merged[column] != merged[f"{column}_base"]).any()]
    return (f"rows compare only on the same machine, threads and heap, and the {rows} timed rows of "
            f"{current_name} with the {key} of one of {base_name} differ in " + ", ".join(differences))


def incomparable(baseline: pd.DataFrame, base_name: str, machine: str, threads: int) -> str | None:
    """Why no timed row of `baseline` could be compared with a run on `machine` with `threads`
    threads, said before the run (the heap is known only once set); None where some can."""
    base = _timed(baseline)
    if base.empty:
        return f"{base_name} has no timed row"
    differences = [f"{column} ({_values(base[column])} there, {value!r} here)"
                   for column, value in (("machine", machine), ("threads", threads)) if not (base[column] == value).any()]
    if differences:
        return "rows compare only on the same machine, threads and heap, and it differs in " + ", ".join(differences)
    if not ((base["machine"] == machine) & (base["threads"] == threads)).any():  # each alone, not together
        return (f"rows compare only on the same machine, threads and heap, and its rows of {machine!r} have "
                f"threads {_values(base.threads[base.machine == machine])}, not {threads!r}")
    return None


def _values(column: pd.Series) -> str:
    """A column's distinct values, for a message: `'glibc'`, `2 or 4`."""
    return " or ".join(repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)
                       for v in sorted(set(column.tolist()), key=str))


def side_by_side(rows: list[dict], *, tolerance: float = 0.10) -> Comparison:
    """Each variant's core and layer against its `core@<rev>` and `layer@<rev>` (another revision's
    code) timed in the same interleaved rounds (`bench perf --against REV`): drift of the machine
    cancels in the ratio. A row the other revision's code timed and this tree's did not (its output
    failed the check against the reference, its kernel raised) is `lost`: a broken kernel fails
    the gate, as `--compare` fails it (`lost`)."""
    timed = timed_medians(rows)
    statuses = {(r["case"], r["impl"], r["batch"], r["n"]): str(r.get("status") or "nan") for r in rows}
    regressions, compared, gone = [], 0, []
    for (case, impl, batch, n), old in sorted(timed.items()):
        if "@" not in impl:
            continue
        mine = (case, impl.partition("@")[0], batch, n)
        new = timed.get(mine)
        if new is None:
            gone.append(Lost(case, mine[1], batch, n, old, _untimed_because(statuses.get(mine, "no row"))))
            continue
        compared += 1
        if new > old * (1 + tolerance):
            regressions.append(Regression(case, f"{impl.partition('@')[0]} vs {impl}", batch, n, old, new))
    return Comparison(tuple(regressions), compared, 0, tuple(gone))


def timed_medians(rows: list[dict]) -> dict[tuple, float]:
    """{(case, impl, batch, n): median_s} of the rows that were timed (None from the suite, NaN
    from a CSV for the others)."""
    return {(r["case"], r["impl"], r["batch"], r["n"]): r["median_s"] for r in rows
            if r["median_s"] is not None and not pd.isna(r["median_s"])}


# ------------------------------------------------------------------------ --confirm
VARIANT_IMPLS = ("core", "layer")  # the rows whose code `--against` times at another revision


def not_ours(reg: Regression) -> bool:
    """A row of code that is not a variant's kernel, which `--against` does not swap: raw SDPA
    (torch's), a naive reference, a peer package."""
    return reg.impl in ("sdpa", "naive") or reg.impl.startswith("peer:")


def unconfirmable(reg: Regression, running_torch: str) -> str | None:
    """Why `--confirm` cannot time a flagged row beside its baseline's code, judged from the rows
    alone (git is asked later), or None when it can be tried."""
    if not reg.baseline_revision:
        return "the baseline row records no git revision"
    if reg.baseline_revision.endswith("-dirty"):
        return f"the baseline was timed on uncommitted changes ({reg.baseline_revision}), which no revision holds"
    if not (reg.device and reg.dtype):
        return "the row records no device or dtype"
    if reg.dtype not in ("float32", "bfloat16", "float16"):
        return f"bench perf times float32, bfloat16 and float16, not {reg.dtype}"
    if reg.baseline_torch != running_torch:  # torch's own slowdown would not show side by side
        return (f"the baseline was timed with torch {reg.baseline_torch or '(not recorded)'}, and this is "
                f"{running_torch}")
    return None


def confirmations(regressions: tuple[Regression, ...], rows: list[dict], short: str, *,
                  tolerance: float = 0.10) -> list[tuple[Regression, float | None, bool]]:
    """Each flagged core or layer row against its `impl@<short>` timed beside it (a `bench perf
    --against` run's `rows`): (regression, side-by-side ratio, confirmed). Confirmed when this
    tree's time is more than `tolerance` above the old code's in the same rounds, and when the pair
    was not timed (ratio None): what cannot be re-timed stands."""
    timed = timed_medians(rows)
    out = []
    for reg in regressions:
        new, old = timed.get((reg.case, reg.impl, reg.batch, reg.n)), timed.get((reg.case, f"{reg.impl}@{short}", reg.batch, reg.n))
        ratio = new / old if new and old else None
        out.append((reg, ratio, ratio is None or ratio > 1 + tolerance))
    return out
