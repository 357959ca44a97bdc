"""The crash-safe results store of a sweep run: one directory, one writer, one JSON line per cell.

A run directory holds

- ``env.json``    the environment (versions, device, threads, git sha, argv), written once;
- ``grid.json``   the sweep definition, compared on ``--resume``;
- ``cells.jsonl`` one strict-JSON object per finished cell, appended with ``O_APPEND`` + fsync;
- ``run.lock``    the filelock that keeps a second ``bench run`` out (``run.lock.pid`` names
  the holder).

A writer killed mid-line leaves at most one torn last line. Readers skip it with a
`StoreWarning` (the cell is not recorded, so it reruns on resume) and the next writer starts
on a fresh line, so a killed run loses at most the cell in flight and never a complete row.
A line that is JSON but not a record the readers can use (an unknown status, a field of the
wrong type: see `RECORD_FIELDS`) is skipped the same way. Only JSON is ever read or written.
"""

from __future__ import annotations

import contextlib
import errno
import json
from dataclasses import dataclass
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from attnbench.errors import AttnbenchError
from attnbench.runner.grid_order import in_grid_order
from attnbench.tasks.files import changed_data, short_digest

__all__ = [
    "PROVENANCE",
    "RECORD_FIELDS",
    "STATUSES",
    "RunStore",
    "StoreError",
    "StoreWarning",
    "StoreWriteError",
    "check_writable",
    "cleared_if_not_started",
    "default_run_dir",
    "done_keys",
    "export",
    "load_results",
    "provenance_changes",
    "read_records",
    "replace_file",
    "resumable_grid",
    "write_atomically",
]

STATUSES = ("ok", "oom", "timeout", "unsupported", "error")
EXPORT_FORMATS = ("csv", "parquet")
# the env.json fields that name the code and the machine a run's cells ran on (`plugins`: each
# --plugin's sha256, `attnbench.plugins.plugin_digest`): each resume that runs cells records its
# own (env.json `resumes`), so a run whose cells came from two revisions or two machines says so
# (`provenance_changes`, the report's header)
PROVENANCE = ("attnbench", "git_sha", "torch", "python", "cpu", "cuda_device", "plugins", "installed_plugins")


def provenance_changes(then: dict, now: dict) -> list[str]:
    """'field then → now' for each PROVENANCE field in which `now` differs from `then` ('plugin
    FILE sha then → now' for each plugin whose source changed; a run recorded before plugins' digests
    compares none)."""
    changes = []
    for key in PROVENANCE:
        if key in ("plugins", "installed_plugins"):  # by name; a run from before they were recorded compares none
            old, new = then.get(key), now.get(key)
            if isinstance(old, dict) and isinstance(new, dict):
                what = "plugin" if key == "plugins" else "installed plugin"
                changes += [f"{what} {name} {provenance_value(key, old.get(name))} → "
                            f"{provenance_value(key, new.get(name))}"
                            for name in dict.fromkeys([*old, *new]) if old.get(name) != new.get(name)]
        elif then.get(key) != now.get(key):
            changes.append(f"{key} {provenance_value(key, then.get(key))} → {provenance_value(key, now.get(key))}")
    return changes


def threads_text(threads: Any) -> str:
    """'1 thread', '2 threads', '? threads' where a run does not say."""
    return f"{threads} thread" if threads in (1, "1") else f"{threads if threads not in (None, '') else '?'} threads"


def provenance_value(key: str, value: Any) -> str:
    """One PROVENANCE field's value as messages and reports say it ('?' where none is recorded);
    for `plugins` and `installed_plugins`, one plugin's."""
    if value is None:
        return "?"
    if key == "git_sha":  # a short hash, keeping the mark of a modified tree
        text = str(value)
        return text[:7] + ("-dirty" if text.endswith("-dirty") else "")
    if key == "plugins":  # one plugin's sha256
        return f"sha256 {short_digest(str(value))}"
    if key == "installed_plugins" and isinstance(value, dict):  # one entry point: its version and source
        digest = value.get("sha256")
        return f"version {value.get('version') or '?'}, " + (
            f"sha256 {short_digest(str(digest))}" if digest else "failed to load" if value.get("error") else
            "source not found")
    return str(value)

# the fields of a cell record that readers (report, plot, compare, resume) use, and the JSON types
# each may have where present; every record needs a str "key" and a "status" in STATUSES, and an
# ok cell of a sweep (a record with a "kind") its result object
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "variant": (str,),
    "variant_label": (str,),
    "variant_options": (dict,),
    "task": (str, type(None)),
    "task_label": (str,),
    "seq_len": (int,),
    "seed": (int,),
    "message": (str,),
    "result": (dict, type(None)),
}

ENV_FILE = "env.json"
GRID_FILE = "grid.json"
CELLS_FILE = "cells.jsonl"
LOCK_FILE = "run.lock"
PID_FILE = "run.lock.pid"


class StoreError(AttnbenchError):
    """A run directory that cannot be created, resumed, locked or read."""


class StoreWriteError(StoreError):
    """cells.jsonl could not be appended to mid-run (disk full, I/O error): the run stops, exit 1."""

    exit_code = 1


class StoreWarning(UserWarning):
    """A recoverable problem in a run directory (a torn or corrupted line)."""


class RunStore:
    """The one writer of a run directory; holds its lock from `create`/`resume` until `release`."""

    def __init__(self, path: Path, *, grid: dict, env: dict) -> None:
        """Use `RunStore.create` or `RunStore.resume`; this only binds the fields."""
        self.path = path
        self._grid = grid
        self._env = env
        # held by the store, not by a thread: any thread of the runner may release it
        self._lock = FileLock(path / LOCK_FILE, timeout=0, thread_local=False)
        self._fd: int | None = None  # cells.jsonl, opened O_APPEND at the first append

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, *, grid: dict, env: dict) -> RunStore:
        """Start a new run in `path` (made with its parents); refuses a directory that holds a run."""
        path = Path(path)
        check_writable(path)
        store = cls(path, grid=_json_roundtrip(grid), env=_json_roundtrip(env))
        store.lock()
        try:
            _refuse_a_run_in(path)
            try:
                _write_json_atomic(path / ENV_FILE, store._env)
                _write_json_atomic(path / GRID_FILE, store._grid)
            except OSError as err:  # e.g. a full disk: the empty probe file fitted, these did not
                raise StoreError(f"cannot write to {path}: {err.strerror or err}") from None
        except BaseException:
            store.release()
            raise
        return store

    @classmethod
    def resume(cls, path: str | Path, *, grid: dict) -> RunStore:
        """Continue the run in `path`; its stored grid must equal `grid`."""
        path = Path(path)
        stored = resumable_grid(path, grid)
        env = _read_json(path, ENV_FILE) if (path / ENV_FILE).exists() else {}
        check_writable(path)
        store = cls(path, grid=stored, env=env)
        store.lock()
        return store

    def record_resume(self, now: dict, *, recorded: int) -> list[str]:
        """Add this resume's PROVENANCE (from `now`, an env.json of this process) to env.json's
        `resumes`, with when it began and how many cells were `recorded` before it; the fields in
        which it differs from the run's start (`provenance_changes`). A run without env.json (or
        without a start time, so not written by `create`) is left as it is: nothing to compare."""
        if "created" not in self._env:
            return []
        entry = {key: now.get(key) for key in PROVENANCE}
        entry.update(created=now.get("created"), recorded_before=recorded)
        self._env = {**self._env, "resumes": [*self._env.get("resumes", []), entry]}
        try:
            _write_json_atomic(self.path / ENV_FILE, self._env)
        except OSError as err:
            raise StoreError(f"cannot write to {self.path}: {err.strerror or err}") from None
        return provenance_changes(self._env, entry)

    # -- the lock --------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the run's lock without waiting; StoreError if another run holds it."""
        if self._lock.is_locked:
            return
        try:
            self._lock.acquire()
        except Timeout:
            holder = _holder_pid(self.path)
            who = f"pid {holder}; " if holder else ""
            raise StoreError(
                f"{self.path} is in use by another bench run ({who}lock file {self.path / LOCK_FILE}); "
                "wait for it or use another --out"
            ) from None
        except OSError as err:
            raise StoreError(f"cannot write to {self.path}: {err.strerror or err}") from None
        holder = _holder_pid(self.path)
        if holder is not None and holder != os.getpid() and _runs_bench(holder):
            # a live run wrote its pid beside a lock file it holds: that file was deleted (it looks
            # stale, since it stays after every run), and this lock is on a new one
            self._lock.release()
            raise StoreError(
                f"{self.path} is in use by another bench run (pid {holder}; its lock file {self.path / LOCK_FILE} "
                "was removed while it ran); wait for it or use another --out"
            )
        try:
            (self.path / PID_FILE).write_text(f"{os.getpid()}\n")
        except OSError:
            pass  # the pid decorates the "in use" message, and guards a removed lock file

    def release(self) -> None:
        """Close the cells file and give the lock back (safe to call twice)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock.is_locked:
            try:
                (self.path / PID_FILE).unlink(missing_ok=True)
            except OSError:
                pass
            self._lock.release(force=True)

    def __enter__(self) -> RunStore:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- records ---------------------------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one cell record as a strict-JSON line (NaN/inf become null), then fsync."""
        if not isinstance(record.get("key"), str) or record.get("status") not in STATUSES:
            raise ValueError(f"a cell record needs a str 'key' and a 'status' in {STATUSES}: {record!r}")
        line = json.dumps(_finite(record), sort_keys=True, allow_nan=False) + "\n"
        try:
            fd = self._cells_fd()
            _write_all(fd, line.encode())
            os.fsync(fd)
        except OSError as err:  # a full disk or an I/O error: stop; what is recorded stays valid
            raise StoreWriteError(
                f"cannot append to {self.path / CELLS_FILE}: {err.strerror or err}; the run stopped and the "
                f"cells recorded before are intact; free space, then rerun with --resume {self.path}"
            ) from None

    def records(self) -> list[dict]:
        """The recorded cells, last record per key, in grid order; torn or corrupted lines skipped
        with a warning."""
        return in_grid_order(_read_cells(self.path / CELLS_FILE), self._grid)

    def done_keys(self, *, retry: tuple[str, ...] = ()) -> set[str]:
        """Keys of cells already recorded, except those whose status is in `retry` (rerun those)."""
        return done_keys(self.records(), retry=retry)

    @property
    def env(self) -> dict:
        """The environment recorded when the run was created."""
        return self._env

    @property
    def grid(self) -> dict:
        """The sweep definition of this run."""
        return self._grid

    def _cells_fd(self) -> int:
        """The O_APPEND descriptor of cells.jsonl; the first call ends a torn last line first."""
        if self._fd is None:
            cells = self.path / CELLS_FILE
            created = not cells.exists()
            fd = os.open(cells, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if not created and not _ends_with_newline(cells):
                _write_all(fd, b"\n")  # a killed writer's half line stays alone on its line
                os.fsync(fd)
            if created:
                _fsync_dir(self.path)
            self._fd = fd
        return self._fd


# -- reading a run (no lock) ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """The files of one run directory, read once (what reports and plots work from)."""

    path: Path
    env: dict
    grid: dict
    records: list[dict]


def resumable_grid(path: Path, grid: dict) -> dict:
    """The grid stored in run `path`; StoreError when `grid` differs from it (a resume would plan
    other cells under the same keys)."""
    stored = _read_json(path, GRID_FILE)
    new = _json_roundtrip(grid)
    diff = _grid_diff(_planned(stored), _planned(new))
    if diff:  # first: other tasks read other files, and saying which tasks differ says more
        hint = ("" if (path / ENV_FILE).exists() else
                f" ({ENV_FILE}, where a run keeps the options it started with, is missing: give them again)")
        raise StoreError(f"--resume {path}{hint}: this run's grid differs: {diff}")
    if "data" in stored:  # a run from before data files were checksummed has nothing to check them against
        _check_data(path, stored["data"], new.get("data", {}))
    return stored


def _planned(grid: dict) -> dict:
    """What a resume must plan as the run did: the grid without its data digests (`_check_data`
    checks them) and without its time budgets, which decide whether a cell may finish, not what it
    computes: `--resume DIR --retry timeout --max-cell-seconds 600` reruns a timed-out cell with
    a longer budget."""
    planned = {k: v for k, v in grid.items() if k not in ("data", "max_cell_seconds")}
    if isinstance(planned.get("efficiency"), dict):
        planned["efficiency"] = {k: v for k, v in planned["efficiency"].items() if k != "max_seconds"}
    return planned


def _check_data(path: Path, then: Any, now: Any) -> None:
    """Each data file the run recorded must hold the same bytes now (StoreError otherwise): the
    cells left would train and score on other data than the recorded ones, under the same keys."""
    if not isinstance(then, dict) or not isinstance(now, dict):
        return  # a grid.json edited out of shape: the grid comparison names it
    if not set(then) <= set(now):  # the same tasks reading other files (a folder's split file renamed)
        raise StoreError(
            f"--resume {path}: the run read data files {', '.join(sorted(then))}; these tasks now read "
            f"{', '.join(sorted(now)) or 'none'}: restore them, or start a new run"
        )
    if unrecorded := sorted(set(now) - set(then)):  # the same tasks: a file the run's attnbench did not checksum
        warnings.warn(f"--resume {path}: the run recorded no checksum of {', '.join(unrecorded)}, which these tasks "
                      "read now (attnbench before 2026-11-29 took a path written with ~, or without a folder or suffix, "
                      "for a name; or a file was added where a task reads a folder): its cells from here on read it as "
                      "it is, unchecked against the earlier ones", StoreWarning, stacklevel=2)
    for file, digest in then.items():
        if now[file] != digest:
            raise StoreError(f"--resume {path}: {changed_data(file, str(digest), str(now[file]))}; restore it, "
                             "or start a new run for the new data")


def done_keys(records: list[dict], *, retry: tuple[str, ...] = ()) -> set[str]:
    """Keys of cells already recorded, except those whose status is in `retry` (rerun those)."""
    return {r["key"] for r in records if r.get("status") not in retry}


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory: its records (tolerantly), env.json (optional) and grid.json."""
    path = Path(run_dir)
    records = read_records(path)  # StoreError unless it holds grid.json
    return Run(path, _read_json(path, ENV_FILE, required=False), _read_json(path, GRID_FILE), records)


def read_records(run_dir: str | Path) -> list[dict]:
    """The cell records of a run, read without locking (for reports), last record per key."""
    run_dir = Path(run_dir)
    _require_run(run_dir)
    return in_grid_order(_read_cells(run_dir / CELLS_FILE), _read_json(run_dir, GRID_FILE))


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """One row per cell, nested dicts flattened to dotted columns ("metrics.acc"); lists kept."""
    records = read_records(run_dir)
    if not records:
        return pd.DataFrame({"key": pd.Series(dtype=object)})
    frame = pd.json_normalize(records, sep=".")
    # a cell that did not end ok records result None: a "result" column, empty where the ok cells'
    # results are flattened into "result.*"; with nothing but those Nones in it, it says nothing
    flattened = [c for c in frame.columns
                 if frame[c].isna().all() and any(o.startswith(f"{c}.") for o in frame.columns)]
    frame = frame.drop(columns=flattened)
    first = [c for c in ("key", "status") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the results of a run as csv or parquet (default `run_dir/cells.<fmt>`); return the path."""
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out is not None and not str(out).strip():
        raise StoreError(f"--out: empty path; name a file, e.g. --out RUN/cells.{fmt}")
    frame = load_results(run_dir)
    folder = out is not None and str(out).endswith(("/", os.sep))  # `--out exports/`: a folder, made if need be
    out = Path(out) if out is not None else Path(run_dir) / f"cells.{fmt}"
    if folder or out.is_dir():  # as `bench report --out DIR` writes DIR/report.md
        out = out / f"cells.{fmt}"
    if fmt == "csv":
        return write_atomically(out, lambda tmp: _json_cells(frame).to_csv(tmp, index=False))
    return write_atomically(out, lambda tmp: _to_parquet(frame, tmp))


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """`replace_file`, for a command's output: missing folders made, and any failure one StoreError
    line (`cannot write F: No space left on device`). Returns `target`."""
    target = Path(target)
    if target.is_dir():
        raise StoreError(f"cannot write {target}: it is a directory")
    refuse_run_file(target)
    _make_parents(target)
    try:
        return replace_file(target, write)
    except OSError as err:
        raise StoreError(f"cannot write {target}: {err.strerror or err}") from None


RUN_FILES = (ENV_FILE, GRID_FILE, CELLS_FILE, LOCK_FILE, PID_FILE)


def refuse_run_file(target: Path) -> None:
    """StoreError where `target` (links followed) is one of the files that make up a run directory
    (`bench report RUN --out RUN/cells.jsonl`): writing there would lose the run."""
    try:
        real = target.resolve()
        is_run = (real.parent / GRID_FILE).is_file()
    except OSError:  # unreadable: the write itself says why
        return
    if real.name in RUN_FILES and is_run:
        raise StoreError(f"cannot write {target}: it is the {real.name} of the run {real.parent}, which writing "
                         "over it would lose; name another file")


def replace_file(target: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` to a temp file beside `target`, fsync, then rename it over `target`: a failure or
    a kill midway leaves the previous file, or none (OSError propagates). Returns `target`."""
    # the temp name ends in target's name, so a writer that reads the format from it
    # (pandas' compression for cells.csv.gz) sees the same one
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=f"-{target.name}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a results file is for sharing
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; the half-written file otherwise
    _fsync_dir(target.parent)
    return target


def _make_parents(target: Path) -> None:
    """Make the missing folders above `target`; StoreError if an existing ancestor is a file."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StoreError(f"cannot write {target}: {ancestor} is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot write {target}: {err.strerror or err}") from None


def default_run_dir(root: str | Path, profile: str, *, now: datetime | None = None) -> Path:
    """`root/<YYYYmmdd-HHMMSS>-<profile>`, with -2, -3 … appended while that name exists."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{profile}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# -- helpers -------------------------------------------------------------------------------


SKIPS_SAID = 5  # damaged lines of cells.jsonl named one by one; the rest in one line


def _read_cells(cells: Path) -> list[dict]:
    """Tolerant read of cells.jsonl, keeping the last record of each key.

    The last record wins because a key is written twice only when a cell was rerun (a resume
    with `retry`), and the rerun supersedes the failure. Records come in file order of their
    last occurrence.
    """
    try:
        data = cells.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:  # a directory in its place, no permission, an I/O error
        raise StoreError(f"cannot read {cells}: {err.strerror or err}") from None
    by_key: dict[str, dict] = {}
    skipped: list[tuple[int, str, str | None]] = []  # (line, problem, the key it names, where legible)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record = _parse_line(raw)
        problem = "is torn or corrupted" if record is None else _record_problem(record)
        if problem:
            key = record.get("key") if isinstance(record, dict) else _legible_key(raw)
            skipped.append((number, problem, key if isinstance(key, str) else None))
            continue
        by_key.pop(record["key"], None)
        by_key[record["key"]] = record
    for number, problem, key in skipped[:SKIPS_SAID]:  # a resume that reran the cell recorded it again: say so
        again = key is not None and key in by_key
        warnings.warn(
            f"{CELLS_FILE} line {number} {problem}; skipped "
            + ("(another line records its cell)" if again else "(the cell reruns on resume)"),
            StoreWarning,
            stacklevel=3,
        )
    if rest := skipped[SKIPS_SAID:]:  # a file written over (a checkpoint saved there): one line, not thousands
        warnings.warn(f"{CELLS_FILE}: {len(rest)} more lines skipped (lines {rest[0][0]}–{rest[-1][0]}), each torn, "
                      "corrupted or not a cell record (their cells rerun on resume, unless another line records "
                      "them)", StoreWarning, stacklevel=3)
    return list(by_key.values())


def _legible_key(raw: bytes) -> str | None:
    """The "key" a torn line still shows (records are written with sorted keys: "key" comes first), or None."""
    match = re.match(rb'\s*\{"key":\s*"((?:[^"\\]|\\.)*)"', raw)
    if match is None:
        return None
    try:
        return json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None


def _parse_line(raw: bytes) -> dict | None:
    """The record on one line, or None if it is not a JSON object with a str "key"."""
    try:
        record = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return record


_JSON_NAMES = {str: "a string", int: "an int", float: "a number", bool: "a boolean", dict: "an object",
               list: "a list", type(None): "null"}


def _record_problem(record: dict) -> str | None:
    """Why readers cannot use `record` ("is not a valid cell record (…)"), or None if they can."""
    status = record.get("status")
    if status not in STATUSES:
        return f"is not a valid cell record (status {_shown(status)} is not one of {', '.join(STATUSES)})"
    for field, types in RECORD_FIELDS.items():
        if field in record and type(record[field]) not in types:  # exact: a JSON true is no int
            wanted = " or ".join(_JSON_NAMES[t] for t in types)
            return f"is not a valid cell record ({field} is {_JSON_NAMES[type(record[field])]}, not {wanted})"
    if status == "ok" and "kind" in record and not isinstance(record.get("result"), dict):
        return "is not a valid cell record (an ok cell without its result object)"
    if status == "ok" and isinstance(record.get("result"), dict):
        for name, value in _result_numbers(record["result"]):
            if value is not None and type(value) not in (int, float):  # null: a non-finite number, written so
                return f"is not a valid cell record (result {name} is {_JSON_NAMES[type(value)]}, not a number)"
    return None


def _result_numbers(result: dict):
    """(name, value) of the numbers every reader of an ok result takes: an accuracy cell's score and
    accuracy, an efficiency cell's median times."""
    for name in ("score", "accuracy"):
        if name in result:
            yield name, result[name]
    for name in ("fwd", "fwd_bwd"):
        timing = result.get(name)
        if isinstance(timing, dict) and "median_s" in timing:
            yield f"{name}.median_s", timing["median_s"]


def _shown(value: Any, width: int = 40) -> str:
    """`value` as JSON, cut to `width` characters (for one-line messages)."""
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def _finite(value: Any) -> Any:
    """`value` with every NaN/±inf float replaced by None (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_roundtrip(value: dict) -> dict:
    """`value` as it reads back from strict JSON (tuples become lists, NaN becomes null)."""
    return json.loads(json.dumps(_finite(value), sort_keys=True, allow_nan=False))


def check_writable(path: Path) -> None:
    """Make `path` (with parents) and prove a file can be created in it, or raise StoreError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise StoreError(f"cannot write to {path}: {why_not_writable(path, err)}") from None


def why_not_writable(path: Path, err: OSError) -> str:
    """`err` in words for a folder results are written to: a plain file where the folder should be
    said as such (mkdir's own "File exists" reads as if the folder were there), and a folder where
    no file can be made (/proc/1) as such, not as "No such file or directory"."""
    if err.errno == errno.EEXIST and path.is_file():
        return "a file, not a directory (a run directory is made there)"
    if err.errno == errno.ENOENT:  # /proc/1, or a folder under it: a folder exists where nothing can be made
        there = next((p for p in (path, *path.parents) if p.exists()), None)
        if there is not None and there.is_dir():
            where = "a folder" if there == path else f"under {there}, a folder"
            return f"{where} where no file can be created ({err.strerror or err})"
    return err.strerror or str(err)


def _refuse_a_run_in(path: Path) -> None:
    """StoreError if `path` already holds a run: a new one there would mix its cells with the old."""
    if (path / CELLS_FILE).exists() or (path / GRID_FILE).exists():
        raise StoreError(f"{path} already holds a run; use --resume {path} or another --out")


def check_new_run(path: Path) -> None:
    """StoreError where `RunStore.create` would refuse `path` (a run already there, a place no
    directory can be made), found without leaving anything behind: for `--dry-run`."""
    try:
        _refuse_a_run_in(path)
        # a dangling symlink exists for mkdir (File exists), not for Path.exists
        existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists() or p.is_symlink())
        if not existing.is_dir():  # mkdir's own words: of `path` itself "File exists", of a parent "Not a directory"
            mine = existing == path.absolute() or existing.is_symlink()  # a dangling link: "File exists" anywhere
            raise OSError(*((errno.EEXIST, os.strerror(errno.EEXIST)) if mine else
                            (errno.ENOTDIR, os.strerror(errno.ENOTDIR))))
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-probe-"))  # made and removed: nothing is left
    except OSError as err:
        raise StoreError(f"cannot write to {path}: {why_not_writable(path, err)}") from None


@contextlib.contextmanager
def cleared_if_not_started(path: Path) -> Iterator[None]:
    """The directories a new run makes (`path` and missing parents) are removed again if starting
    it fails or is interrupted (measuring the environment, writing env.json): no empty run
    directory is left behind. Only empty ones, and only those that did not exist before."""
    try:
        made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    except OSError as err:  # a name too long for the file system
        raise StoreError(f"cannot write to {path}: {err.strerror or err}") from None
    try:
        yield
    except BaseException:
        for leftover in (LOCK_FILE, PID_FILE) if made[:1] == [path] else ():
            with contextlib.suppress(OSError):
                (path / leftover).unlink(missing_ok=True)
        for directory in made:
            try:
                directory.rmdir()
            except OSError:  # not empty (something else wrote there) or already gone
                break
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_json_atomic(target: Path, value: dict) -> None:
    """Write `value` as JSON beside `target`, then rename it over `target` (`replace_file`)."""
    data = (json.dumps(value, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)

    replace_file(target, write)


def recorded_options(run_dir: str | Path) -> dict:
    """The `bench run` options a run started with (env.json `options`), for `--resume DIR` to
    reuse; {} for a run from before they were recorded."""
    options = _read_json(Path(run_dir), ENV_FILE, required=False).get("options")
    return options if isinstance(options, dict) else {}


def recorded_labels(run_dir: str | Path, key: str) -> tuple[str, ...] | None:
    """The labels of a run's grid under `key` (grid.json `tasks` or `variants`), or None where it has none."""
    labels = _read_json(Path(run_dir), GRID_FILE, required=False).get(key)
    return tuple(labels) if isinstance(labels, list) else None


def _read_json(run_dir: Path, name: str, *, required: bool = True) -> dict:
    """A JSON file of a run ({} if absent and not required), or StoreError if the directory is
    not a run or the file is broken."""
    _require_run(run_dir)
    if not required and not (run_dir / name).exists():
        return {}
    try:
        value = json.loads((run_dir / name).read_text())
    except OSError as err:  # a directory in its place, no permission, an I/O error
        raise StoreError(f"cannot read {run_dir / name}: {err.strerror or err}") from None
    except ValueError as err:
        raise StoreError(f"cannot read {run_dir / name}: {err}") from None
    if not isinstance(value, dict):
        raise StoreError(f"{run_dir / name} is not a JSON object")
    if name == GRID_FILE:
        _check_grid_shape(run_dir / name, value)
    return value


NUMBER = object()  # a grid field's kind: an int or a float, not a boolean
# grid.json's fields that reports, plots and resumes read, by the JSON type each must have; in the
# objects, the fields they compute with
GRID_SHAPE = {"variants": list, "tasks": list, "seeds": list, "kinds": list, "efficiency_lengths": list,
              "lengths": dict, "size": dict, "train": dict, "efficiency": dict, "data": dict,
              "profile": str, "device": str, "dtype": str, "threads": NUMBER, "max_cell_seconds": NUMBER}
GRID_FIELDS = {
    "size": {"d_model": NUMBER, "n_heads": NUMBER, "n_layers": NUMBER, "max_len": NUMBER, "mlp_ratio": NUMBER},
    "efficiency": {"batch": NUMBER, "d_model": NUMBER, "n_heads": NUMBER, "lengths": list, "max_seconds": NUMBER,
                   "min_run_time": NUMBER},
    "train": {name: NUMBER for name in ("batch_size", "clip", "eval_every", "lr", "n_test", "n_train", "n_valid",
                                        "patience", "steps", "warmup_frac", "weight_decay")},
}


def _check_grid_shape(path: Path, grid: dict) -> None:
    """StoreError for a grid.json field of another type than `bench run` writes (an edited or
    foreign file), which the readers would otherwise meet as a traceback or a wrong number (a
    layer count "2" made a window's reach 222); absent or null is fine."""
    fields = [(field, grid.get(field), kind) for field, kind in GRID_SHAPE.items()]
    if isinstance(grid.get("lengths"), dict):
        fields += [(f"lengths[{task!r}]", lengths, list) for task, lengths in grid["lengths"].items()]
    for outer, inner in GRID_FIELDS.items():
        if isinstance(grid.get(outer), dict):
            fields += [(f"{outer}[{name!r}]", grid[outer].get(name), kind) for name, kind in inner.items()]
    for field, value, kind in fields:
        if value is not None and not _is_kind(value, kind):
            raise StoreError(f"{path}: {field} is {_json_kind(type(value))}, not {_json_kind(kind)} "
                             "(bench run writes it so; was the file edited?)")


def _is_kind(value: Any, kind: Any) -> bool:
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", NUMBER: "a number"}


def _json_kind(kind: Any) -> str:
    """'a number', 'an object', …: a JSON value's type (`type(value)`) or a grid field's kind."""
    return _JSON_KINDS.get(kind, getattr(kind, "__name__", str(kind)))


def _require_run(run_dir: Path) -> None:
    """StoreError unless `run_dir` is a run directory (it holds grid.json); a path that does not
    exist says so, rather than leave the user to wonder what is wrong with the directory."""
    try:
        if not run_dir.exists():
            raise StoreError(f"{run_dir}: no such directory")
        if run_dir.is_file() and (run_dir.parent / GRID_FILE).is_file():  # `bench report RUN/grid.json`
            raise StoreError(f"{run_dir} is a file of the run {run_dir.parent}: give the run's directory")
        if not (run_dir / GRID_FILE).is_file():
            empty = run_dir.is_dir() and not any(run_dir.iterdir())
            raise StoreError(f"{run_dir} is not an attnbench run (no {GRID_FILE}" + (
                "; it is empty, as a bench run killed before it recorded its grid leaves its directory: "
                f"start anew with --out {run_dir})" if empty else ")"))
    except OSError as err:  # a name too long for the file system
        raise StoreError(f"{run_dir}: {err.strerror or err}") from None


def _grid_diff(stored: dict, new: dict, width: int = 80) -> str:
    """One line naming each top-level key whose value differs: "key stored vs new; …"."""
    absent = object()

    def show(value: Any) -> str:
        return "<absent>" if value is absent else _shown(value, width)

    parts = []
    for key in sorted(stored.keys() | new.keys()):
        old, cur = stored.get(key, absent), new.get(key, absent)
        if _unordered(key, old) != _unordered(key, cur):
            parts.append(f"{key} {show(old)} vs {show(cur)}")
    return "; ".join(parts)


# grid lists that only order the cells: the same names in another order plan the same keys (not the
# seeds, whose first one efficiency cells take, nor the efficiency lengths, whose order decides
# which longer cells an out-of-memory skips)
ORDER_FREE = ("variants", "tasks", "kinds")


def _unordered(key: str, value: Any) -> Any:
    """`value` as a resume compares it: order-free where its order does not change which cells the
    grid plans; each value once (a run from before repeats were dropped planned each cell once too)."""
    if isinstance(value, list):
        value = list(dict.fromkeys(value)) if all(isinstance(v, (int, str)) for v in value) else value
        return sorted(value, key=json.dumps) if key in ORDER_FREE else value
    if key == "lengths" and isinstance(value, dict):
        return {task: sorted(set(ns)) if isinstance(ns, list) else ns for task, ns in value.items()}
    return value


def _holder_pid(run_dir: Path) -> int | None:
    """The pid the lock holder wrote beside the lock, if readable."""
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _runs_bench(pid: int) -> bool:
    """Whether process `pid` is alive and, where /proc shows its command line, a bench or attnbench
    one (a pid left by a killed run may since name another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # alive; no /proc to say what it runs
    return b"bench" in command


def _ends_with_newline(file: Path) -> bool:
    """Whether `file` is empty or its last byte is a newline."""
    with open(file, "rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return True
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """os.write `data` (one call for any line a cell writes; loops only on a short write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_file(path: Path) -> None:
    """Persist the data of a file written by another writer (pandas, matplotlib) before a rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Persist the directory entry of a newly created or renamed file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is synced
    finally:
        os.close(fd)


def _json_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose list/dict cells are JSON strings (for flat file formats)."""
    frame = frame.copy()
    for column in frame.columns[frame.dtypes == object]:
        frame[column] = frame[column].map(
            lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
        )
    return frame


def _to_parquet(frame: pd.DataFrame, out: Path) -> None:
    """Write parquet natively; where pyarrow rejects mixed-type columns, store them as JSON text."""
    import pyarrow as pa

    try:
        frame.to_parquet(out, index=False)
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    frame = frame.copy()
    for column in frame.columns[frame.dtypes == object]:
        frame[column] = frame[column].map(_as_text)
    frame.to_parquet(out, index=False)


def _as_text(value: Any) -> str | None:
    """A cell of a mixed-type column as text: strings kept, missing as None, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.dumps(value, sort_keys=True, default=str)
