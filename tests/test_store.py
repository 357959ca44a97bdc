"""The run store: one writer per directory, strict JSON lines, torn lines survived, resumes checked."""

from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.errors import AttnbenchError
from attnbench.runner import store as store_module
from attnbench.runner.store import (
    RECORD_FIELDS,
    RunStore,
    StoreError,
    StoreWarning,
    default_run_dir,
    export,
    load_results,
    read_records,
    write_atomically,
)
from support import one_error_line

GRID = {"profile": "smoke", "lengths": {"copy": [256]}, "seeds": [0], "variants": ["local", "linear"]}
ENV = {"torch": "2.13", "threads": 2, "argv": ["bench", "run"]}


def cell(key: str, status: str = "ok", **fields) -> dict:
    return {"key": key, "status": status, **fields}


def raw_lines(run: Path) -> list[str]:
    return (run / "cells.jsonl").read_text().split("\n")


@pytest.fixture
def run(tmp_path) -> Path:
    """A run directory holding three records, its lock released."""
    path = tmp_path / "run"
    with RunStore.create(path, grid=GRID, env=ENV) as store:
        for key in ("a", "b", "c"):
            store.append(cell(key, time_ms=1.5))
    return path


# -- create, append, read ------------------------------------------------------------------


def test_roundtrip(tmp_path):
    path = tmp_path / "deep" / "run"  # parents are made
    with RunStore.create(path, grid=GRID, env=ENV) as store:
        store.append(cell("a", metrics={"acc": 0.5}))
        store.append(cell("b", "error", message="boom"))
        assert store.path == path
        assert [r["key"] for r in store.records()] == ["a", "b"]
        assert store.records()[0]["metrics"] == {"acc": 0.5}
        assert store.env == ENV and store.grid == GRID
    assert json.loads((path / "env.json").read_text()) == ENV
    assert json.loads((path / "grid.json").read_text()) == GRID
    assert read_records(path) == [cell("a", metrics={"acc": 0.5}), cell("b", "error", message="boom")]
    assert all(line.startswith("{") for line in raw_lines(path)[:-1]) and raw_lines(path)[-1] == ""
    assert not list(path.glob(".*"))  # no temp or probe files left behind


def test_store_errors_are_one_line_attnbench_errors():
    assert issubclass(StoreError, AttnbenchError) and issubclass(StoreWarning, UserWarning)


def test_create_refuses_an_existing_run(run):
    with pytest.raises(StoreError, match=r"already holds a run; use --resume .* or another --out"):
        RunStore.create(run, grid=GRID, env=ENV)
    RunStore.resume(run, grid=GRID).release()  # the refusal left the lock free


def test_create_accepts_an_existing_empty_directory(tmp_path):
    RunStore.create(tmp_path, grid=GRID, env=ENV).release()
    assert (tmp_path / "grid.json").exists()


@pytest.mark.parametrize(
    "bad", [{"status": "ok"}, {"key": 1, "status": "ok"}, {"key": "a", "status": "fine"}]
)
def test_append_rejects_a_malformed_record(tmp_path, bad):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store, pytest.raises(ValueError, match="'key'"):
        store.append(bad)


def test_duplicates_keep_the_last_record(run):
    with RunStore.resume(run, grid=GRID) as store:
        store.append(cell("b", "error", message="first try"))
        store.append(cell("b", "ok", time_ms=2.0))
        records = store.records()
    assert [r["key"] for r in records] == ["a", "c", "b"]  # in order of each key's last record
    assert records[-1] == cell("b", "ok", time_ms=2.0)


def test_done_keys_can_leave_failed_cells_for_a_retry(run):
    with RunStore.resume(run, grid=GRID) as store:
        store.append(cell("d", "error", message="x"))
        store.append(cell("e", "oom"))
        assert store.done_keys() == {"a", "b", "c", "d", "e"}
        assert store.done_keys(retry=("error", "oom")) == {"a", "b", "c"}


def test_nan_and_inf_are_stored_as_null_in_strict_json(tmp_path):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        store.append(cell("a", loss=math.nan, metrics={"ppl": math.inf, "curve": [-math.inf, 1.0]}))
        (record,) = store.records()
    assert record["loss"] is None and record["metrics"] == {"ppl": None, "curve": [None, 1.0]}

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    for line in raw_lines(tmp_path)[:-1]:
        json.loads(line, parse_constant=refuse)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8
)
field_names = st.text().filter(lambda k: k not in ("key", "status", *RECORD_FIELDS))  # typed: tested below


@settings(max_examples=20, deadline=None)
@given(fields=st.dictionaries(field_names, json_values, max_size=4))
def test_any_json_record_reads_back_with_non_finite_floats_as_null(fields):
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return v

    with tempfile.TemporaryDirectory() as tmp, RunStore.create(tmp, grid=GRID, env=ENV) as store:
        store.append(cell("k", **fields))
        assert store.records() == [finite(cell("k", **fields))]


# -- resume --------------------------------------------------------------------------------


def _holding_a_file(path):
    (path / "notes.txt").write_text("mine")
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing", "{path}: no such directory"),
    (_holding_a_file, "{path} is not an attnbench run (no grid.json)"),
    (lambda p: p, "{path} is not an attnbench run (no grid.json; it is empty, as a bench run killed before it "
                  "recorded its grid leaves its directory: start anew with --out {path})"),
])
def test_resume_of_a_non_run(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(StoreError) as err:
        RunStore.resume(path, grid=GRID)
    assert str(err.value) == message.format(path=path)


def test_resume_with_a_different_grid_names_what_differs(run):
    new = {**GRID, "lengths": {"copy": [256, 1024]}, "seeds": [0, 1], "device": "cpu"}
    with pytest.raises(StoreError) as err:
        RunStore.resume(run, grid=new)
    message = str(err.value)
    assert message == (
        f"--resume {run}: this run's grid differs: device <absent> vs \"cpu\"; "
        "lengths {\"copy\": [256]} vs {\"copy\": [256, 1024]}; seeds [0] vs [0, 1]"
    )
    assert "\n" not in message and "profile" not in message


def test_resume_with_the_same_grid_compares_as_json(run):
    same = {**GRID, "lengths": {"copy": (256,)}, "seeds": (0,)}  # tuples store as lists
    with RunStore.resume(run, grid=same) as store:
        assert store.env == ENV and store.grid == GRID
        assert store.done_keys() == {"a", "b", "c"}


def test_resume_takes_the_same_names_in_another_order_but_not_other_names(tmp_path):
    grid = {"variants": ["linear", "multi-head"], "tasks": ["copy", "distance"], "seeds": [0, 1],
            "lengths": {"copy": [32, 64], "distance": [32]}, "kinds": ["accuracy"]}
    RunStore.create(tmp_path / "r", grid=grid, env=ENV).release()
    reordered = {"variants": ["multi-head", "linear"], "tasks": ["distance", "copy"], "seeds": [0, 1, 1],
                 "lengths": {"distance": [32], "copy": [64, 32]}, "kinds": ["accuracy"]}
    with RunStore.resume(tmp_path / "r", grid=reordered) as store:
        assert store.grid == grid  # the stored grid stays as written
    with pytest.raises(StoreError, match='variants \\["linear", "multi-head"\\] vs \\["additive", "multi-head"\\]'):
        RunStore.resume(tmp_path / "r", grid={**reordered, "variants": ["additive", "multi-head"]})
    # the first seed is the efficiency cells' seed: another order plans other keys
    with pytest.raises(StoreError, match=r"seeds \[0, 1\] vs \[1, 0\]"):
        RunStore.resume(tmp_path / "r", grid={**reordered, "seeds": [1, 0]})


def test_resume_reports_a_corrupted_grid_file(run):
    (run / "grid.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot read .*grid.json"):
        RunStore.resume(run, grid=GRID)


# -- the lock ------------------------------------------------------------------------------

LOCK_CHILD = textwrap.dedent(
    """
    import json, sys
    from attnbench.runner.store import RunStore, StoreError

    def attempt():
        try:
            store = RunStore.resume(sys.argv[1], grid=json.loads(sys.argv[2]))
        except StoreError as err:
            print("refused:", err, flush=True)
        else:
            store.append({"key": "from-child", "status": "ok"})
            store.release()
            print("locked", flush=True)

    attempt()
    sys.stdin.readline()  # the parent releases its lock, then says go
    attempt()
    """
)


def test_a_second_process_is_refused_while_the_lock_is_held(tmp_path):
    child_args = [sys.executable, "-c", LOCK_CHILD, str(tmp_path), json.dumps(GRID)]
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        child = subprocess.Popen(child_args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            first = child.stdout.readline().strip()
            assert first == (
                f"refused: {tmp_path} is in use by another bench run (pid {os.getpid()}; "
                f"lock file {tmp_path / 'run.lock'}); wait for it or use another --out"
            )
        except BaseException:
            child.kill()
            raise
    assert not store._lock.is_locked
    second, _ = child.communicate("go\n", timeout=60)
    assert second.strip() == "locked"
    assert read_records(tmp_path) == [cell("from-child")]


def test_a_second_store_in_the_same_process_is_refused_too(run):
    with RunStore.resume(run, grid=GRID):
        with pytest.raises(StoreError, match="in use by another bench run"):
            RunStore.resume(run, grid=GRID)
    RunStore.resume(run, grid=GRID).release()


def test_release_is_idempotent_and_the_store_can_lock_again(run):
    store = RunStore.resume(run, grid=GRID)
    store.release()
    store.release()
    with store:
        store.append(cell("d"))
    assert [r["key"] for r in read_records(run)] == ["a", "b", "c", "d"]


# -- torn and corrupted lines --------------------------------------------------------------


def test_a_file_of_many_damaged_lines_is_named_line_by_line_five_times_then_in_one_line(run):
    # before: one warning per line (145 for a checkpoint saved over cells.jsonl)
    with open(run / "cells.jsonl", "a") as f:
        f.write("".join(f"garbage {i}\n" for i in range(40)))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert [r["key"] for r in read_records(run)] == ["a", "b", "c"]
    lines = [str(w.message) for w in said if issubclass(w.category, StoreWarning)]
    assert len(lines) == 6 and lines[0].startswith("cells.jsonl line 4 is torn or corrupted; skipped")
    assert lines[-1] == ("cells.jsonl: 35 more lines skipped (lines 9–43), each torn, corrupted or not a cell record "
                         "(their cells rerun on resume, unless another line records them)")


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(run):
    with open(run / "cells.jsonl", "a") as f:
        f.write('{"key": "d", "status": "o')  # a writer killed mid-line
    torn = r"^cells.jsonl line 4 is torn or corrupted; skipped \(the cell reruns on resume\)$"
    with pytest.warns(StoreWarning, match=torn):
        store = RunStore.resume(run, grid=GRID)
        assert store.done_keys() == {"a", "b", "c"}
    with store:
        store.append(cell("d"))
        # the resume recorded the cell again: the warning no longer says it will rerun
        again = r"^cells.jsonl line 4 is torn or corrupted; skipped \(another line records its cell\)$"
        with pytest.warns(StoreWarning, match=again):
            assert [r["key"] for r in store.records()] == ["a", "b", "c", "d"]
    assert raw_lines(run)[3:] == ['{"key": "d", "status": "o', '{"key": "d", "status": "ok"}', ""]
    with open(run / "cells.jsonl", "a") as f:
        f.write('{"key": "e\\"x", "st')  # its key still legible, escapes and all, but no line records it
    with pytest.warns(StoreWarning, match=r"line 6 is torn or corrupted; skipped \(the cell reruns on resume\)$"):
        read_records(run)


@pytest.mark.parametrize("garbage", ["not json at all", '["a list"]', '{"no": "key"}', "\x00\x00\x00"])
def test_a_corrupted_middle_line_is_skipped(run, garbage):
    lines = raw_lines(run)
    lines.insert(1, garbage)
    (run / "cells.jsonl").write_text("\n".join(lines))
    with pytest.warns(StoreWarning, match=r"^cells.jsonl line 2 is torn"):
        assert [r["key"] for r in read_records(run)] == ["a", "b", "c"]


def test_invalid_utf8_is_a_corrupted_line(run):
    with open(run / "cells.jsonl", "ab") as f:
        f.write(b'{"key": "\xff\xfe", "status": "ok"}\n')
    with pytest.warns(StoreWarning, match="line 4"):
        assert len(read_records(run)) == 3


SWEEP_CELL = {"kind": "accuracy", "variant": "local", "variant_label": "local(window=4)", "variant_options": {},
              "task": "copy", "task_label": "copy", "seq_len": 32, "seed": 0, "message": "", "result": {"score": 0.5}}


@pytest.mark.parametrize(("damage", "problem"), [
    ({"status": "weird"}, 'status "weird" is not one of ok, oom, timeout, unsupported, error'),
    ({"seq_len": "x"}, "seq_len is a string, not an int"),
    ({"seq_len": True}, "seq_len is a boolean, not an int"),
    ({"seed": 1.5}, "seed is a number, not an int"),
    ({"kind": None}, "kind is null, not a string"),
    ({"variant_label": 5}, "variant_label is an int, not a string"),
    ({"variant_options": []}, "variant_options is a list, not an object"),
    ({"result": [1]}, "result is a list, not an object or null"),
    ({"result": None}, "an ok cell without its result object"),
    ({"result": "deleted"}, "result is a string, not an object or null"),
    ({"result": {"score": "abc"}}, "result score is a string, not a number"),  # had averaged in as text
    ({"result": {"score": 0.5, "accuracy": True}}, "result accuracy is a boolean, not a number"),
    ({"result": {"fwd": {"median_s": "1 ms"}}}, "result fwd.median_s is a string, not a number"),
])
def test_a_record_readers_cannot_use_is_skipped_like_a_torn_line(run, damage, problem):
    lines = raw_lines(run)
    lines.insert(1, json.dumps({**cell("bad"), **SWEEP_CELL, **damage}))
    (run / "cells.jsonl").write_text("\n".join(lines))
    expected = f"cells.jsonl line 2 is not a valid cell record ({problem}); skipped (the cell reruns on resume)"
    with pytest.warns(StoreWarning) as caught:
        assert [r["key"] for r in read_records(run)] == ["a", "b", "c"]
    assert [str(w.message) for w in caught] == [expected]
    with pytest.warns(StoreWarning), RunStore.resume(run, grid=GRID) as store:
        assert "bad" not in store.done_keys()  # it reruns


@pytest.mark.parametrize("record", [
    {**cell("ok"), **SWEEP_CELL},
    {**cell("failed", "oom"), **SWEEP_CELL, "task": None, "result": None},
    {**cell("error", "error"), **SWEEP_CELL, "result": {"traceback": "..."}},
    cell("no-kind"),  # a bare record (no kind) needs no result
])
def test_every_record_the_runner_writes_reads_back(tmp_path, record):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        store.append(record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_records(tmp_path) == [record]


def test_a_cells_file_that_cannot_be_read_is_one_store_error(run):
    (run / "cells.jsonl").unlink()
    (run / "cells.jsonl").mkdir()
    message = f"^cannot read {re.escape(str(run / 'cells.jsonl'))}: Is a directory$"
    with pytest.raises(StoreError, match=message):
        read_records(run)
    with pytest.raises(StoreError, match=message), RunStore.resume(run, grid=GRID) as store:
        store.done_keys()


@pytest.mark.parametrize(("command", "name"), [
    *((command, "cells.jsonl") for command in (["report"], ["plot"], ["export"], ["compare", "RUN"])),
    *((command, "env.json") for command in (["report"], ["plot"], ["compare", "RUN"])),  # export reads no env.json
])
def test_every_reader_names_an_unreadable_file_in_one_line(run, command, name, bench_output):
    """(`bench run --resume` reads cells.jsonl through `RunStore.records`, tested above.)"""
    (run / name).unlink()
    (run / name).mkdir()
    code, _, err = bench_output(*(run if a == "RUN" else a for a in command), run)
    assert code == 2
    assert one_error_line(err) == f"bench: error: cannot read {run / name}: Is a directory"


def _write_in_pieces(fd: int, data: bytes) -> None:
    """A writer that a kill can stop mid-line (as a full disk or a network filesystem can)."""
    for start in range(0, len(data), 4096):
        os.write(fd, data[start : start + 4096])
        time.sleep(0.0005)


def _append_forever(run: str, start: int, started, tear: bool) -> None:
    """Child of the crash test: resume and append numbered, fat records until killed."""
    if tear:
        store_module._write_all = _write_in_pieces
    store = RunStore.resume(run, grid=GRID)
    started.set()
    for n in range(start, start + 1_000_000):
        store.append(cell(f"k{n:07d}", n=n, payload="x" * 20_000))


def test_sigkill_mid_append_loses_at_most_the_record_in_flight(tmp_path):
    RunStore.create(tmp_path, grid=GRID, env=ENV).release()
    fork = multiprocessing.get_context("fork")  # the child shares our imports: no start-up cost
    delays = random.Random(0).sample([i / 1000 for i in range(0, 80)], 6)
    after = 0
    for round_, delay in enumerate(delays):
        started = fork.Event()
        tear = round_ % 2 == 1  # every other child writes in pieces, so kills land mid-line
        child = fork.Process(target=_append_forever, args=(str(tmp_path), after, started, tear))
        child.start()
        assert started.wait(30)
        time.sleep(delay)
        child.kill()  # SIGKILL
        child.join()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = RunStore.resume(tmp_path, grid=GRID)
            records = store.records()
        assert all(issubclass(w.category, StoreWarning) for w in caught)
        numbers = [r["n"] for r in records]
        assert numbers == sorted(set(numbers)) and numbers == list(range(len(numbers)))
        assert all(r["key"] == f"k{r['n']:07d}" and r["payload"] == "x" * 20_000 for r in records)
        # the file never holds a duplicate complete row; torn lines are at most one per kill
        lines = [line for line in raw_lines(tmp_path) if line]
        complete = [line for line in lines if line.endswith('"status": "ok"}')]
        assert len({json.loads(line)["key"] for line in complete}) == len(complete)
        assert len(lines) - len(complete) <= round_ + 1

        after = len(numbers)
        with store:
            store.append(cell(f"k{after:07d}", n=after, payload="x" * 20_000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            assert read_records(tmp_path)[-1]["n"] == after
        after += 1
    assert after > len(delays)


# -- reading results -----------------------------------------------------------------------


def test_load_results_flattens_nested_dicts_and_keeps_lists(tmp_path):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        store.append(cell("a", metrics={"acc": 1, "by_distance": {"8": 0.9}}, lengths=[1, 2]))
        store.append(cell("b", "error", message="boom"))
        store.append(cell("a", metrics={"acc": 0.75, "by_distance": {"8": 0.5}}, lengths=[3]))
    frame = load_results(tmp_path)
    assert list(frame.columns[:2]) == ["key", "status"]
    assert {"metrics.acc", "metrics.by_distance.8", "lengths", "message"} <= set(frame.columns)
    assert len(frame) == 2
    a = frame.set_index("key").loc["a"]
    assert a["metrics.acc"] == 0.75 and a["lengths"] == [3]


def test_load_results_of_an_empty_run_has_a_key_column(tmp_path):
    RunStore.create(tmp_path, grid=GRID, env=ENV).release()
    frame = load_results(tmp_path)
    assert frame.empty and list(frame.columns) == ["key"]


def test_load_results_of_a_non_run(tmp_path):
    with pytest.raises(StoreError, match="is not an attnbench run"):
        load_results(tmp_path)


@pytest.mark.parametrize("fmt, read", [("csv", pd.read_csv), ("parquet", pd.read_parquet)])
def test_export_round_trips_rows_and_columns(tmp_path, fmt, read):
    run = tmp_path / "run"
    with RunStore.create(run, grid=GRID, env=ENV) as store:
        store.append(cell("a", metrics={"acc": 1.0}, curve=[0.5, 0.25], extra=1))
        store.append(cell("b", "oom", extra="mixed types", meta={"d": [1, 2]}))
        store.append(cell("c", "unsupported"))
    frame = load_results(run)
    out = export(run, fmt)
    assert out == run / f"cells.{fmt}"
    back = read(out)
    assert len(back) == 3 and list(back.columns) == list(frame.columns)
    assert list(back["key"]) == ["a", "b", "c"]
    custom = export(run, fmt, tmp_path / f"elsewhere.{fmt}")
    assert custom == tmp_path / f"elsewhere.{fmt}" and len(read(custom)) == 3


def test_export_csv_writes_lists_and_dicts_as_json(tmp_path):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        store.append(cell("a", curve=[0.5, 0.25], meta={"d": {}}))
    back = pd.read_csv(export(tmp_path, "csv"))
    assert json.loads(back.loc[0, "curve"]) == [0.5, 0.25]


def test_export_of_an_empty_run(tmp_path):
    RunStore.create(tmp_path, grid=GRID, env=ENV).release()
    assert list(pd.read_parquet(export(tmp_path, "parquet")).columns) == ["key"]


def test_export_makes_missing_folders_and_names_a_file_in_the_way(run, bench_output):
    out = run.parent / "new" / "deeper" / "c.csv"
    assert export(run, "csv", out) == out and len(pd.read_csv(out)) == 3
    (run.parent / "afile").write_text("not a folder")
    for target in ("afile/c.csv", "afile/x/c.csv"):
        with pytest.raises(StoreError, match=f"^cannot write .*{target}: .*afile is not a directory$"):
            export(run, "csv", run.parent / target)
    afile = run.parent / "afile"
    code, _, err = bench_output("export", run, "--out", afile / "c.csv")
    assert code == 2
    assert one_error_line(err) == f"bench: error: cannot write {afile / 'c.csv'}: {afile} is not a directory"
    assert export(run, "csv", run.parent) == run.parent / "cells.csv"  # a folder: as bench report --out DIR
    assert export(run, "csv", f"{run.parent}/new/") == run.parent / "new" / "cells.csv"  # one to make, by its slash


def test_export_drops_the_result_column_that_only_the_cells_not_ok_fill_with_none(tmp_path):
    with RunStore.create(tmp_path, grid=GRID, env=ENV) as store:
        store.append(cell("a", result={"accuracy": 0.5, "curve": [1]}))
        store.append(cell("b", "timeout", result=None))
    back = pd.read_csv(export(tmp_path, "csv"))
    assert "result" not in back.columns and list(back["result.accuracy"].isna()) == [False, True]
    with RunStore.create(tmp_path / "none", grid=GRID, env=ENV) as store:
        store.append(cell("b", "timeout", result=None))
    assert "result" in load_results(tmp_path / "none").columns  # no ok result to flatten: kept, as recorded


def _fill_the_disk(path, *args, **kwargs):
    """A writer that gets half a file out, then finds the disk full."""
    Path(path).write_bytes(b"key,sta")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fmt, writer", [("csv", "to_csv"), ("parquet", "to_parquet")])
def test_a_failed_export_leaves_the_previous_file(run, monkeypatch, fmt, writer):
    good = export(run, fmt)
    before = good.read_bytes()
    monkeypatch.setattr(pd.DataFrame, writer, lambda frame, path, *a, **k: _fill_the_disk(path))
    with pytest.raises(StoreError, match=f"^cannot write {re.escape(str(good))}: No space left on device$"):
        export(run, fmt)
    assert good.read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_write_atomically_leaves_the_old_file_or_none(tmp_path, failure):
    def write_half(tmp: Path) -> None:
        tmp.write_text("half")
        raise failure

    old = tmp_path / "old.md"
    old.write_text("the good report")
    for target in (old, tmp_path / "new.md"):
        with pytest.raises((StoreError, KeyboardInterrupt)):
            write_atomically(target, write_half)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.md"]
    assert old.read_text() == "the good report"
    assert write_atomically(old, lambda tmp: tmp.write_text("better")).read_text() == "better"


def test_export_refuses_an_unknown_format(run):
    with pytest.raises(StoreError, match="unknown export format 'xlsx'; choose one of csv, parquet"):
        export(run, "xlsx")


# -- unwritable directories ----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions; see the simulated test")
def test_a_read_only_directory_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        for target in (tmp_path, tmp_path / "run"):  # the directory itself, and one to be made in it
            message = f"^cannot write to {re.escape(str(target))}: Permission denied$"
            with pytest.raises(StoreError, match=message):
                RunStore.create(target, grid=GRID, env=ENV)
    finally:
        tmp_path.chmod(0o700)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("open_store", ["create", "resume"])
def test_an_unwritable_directory_is_refused_simulated(run, monkeypatch, open_store):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = run.parent / "fresh" if open_store == "create" else run
    with pytest.raises(StoreError) as err:
        if open_store == "create":
            RunStore.create(target, grid=GRID, env=ENV)
        else:
            RunStore.resume(target, grid=GRID)
    assert str(err.value) == f"cannot write to {target}: Permission denied"
    assert not (target / "grid.json").exists() or open_store == "resume"


# -- default run directory -----------------------------------------------------------------


def test_default_run_dir_is_stamped_and_never_reused(tmp_path):
    now = datetime(2026, 3, 4, 5, 6, 7)
    first = default_run_dir(tmp_path, "quick", now=now)
    assert first == tmp_path / "20260304-050607-quick"
    first.mkdir()
    second = default_run_dir(tmp_path, "quick", now=now)
    assert second == tmp_path / "20260304-050607-quick-2"
    second.mkdir()
    assert default_run_dir(tmp_path, "quick", now=now).name == "20260304-050607-quick-3"
    assert default_run_dir(tmp_path, "smoke").name.endswith("-smoke")


def test_a_resume_of_a_run_without_its_env_json_says_its_options_are_lost(run):
    (run / "env.json").unlink()  # the options a resume takes from the run live there
    with pytest.raises(StoreError) as err:
        RunStore.resume(run, grid={**GRID, "seeds": [0, 1]})
    assert str(err.value).startswith(f"--resume {run} (env.json, where a run keeps the options it started with, "
                                     "is missing: give them again): this run's grid differs: seeds [0] vs [0, 1]")
