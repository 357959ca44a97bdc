"""`bench run`, `bench export` and `bench compare` input an audit found unchecked: each is refused in
one line (exit 2) before any work, or, for compare, fails rather than pass a comparison of nothing.

Before these fixes: `--threads 100000` ended in a MemoryError traceback after making the run
directory; huge `--lengths`/`--seeds` planned and every cell ended in an error (and a parquet export
in a traceback); `--out ''` wrote the run into the current directory; `--cross` took no inline
options; `--retry` without `--resume` was ignored; `bench compare` matched a fp16 run against a fp32
one cell for cell, and passed when no cell was in both runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from attnbench.runner.store import read_records
from attnbench.runner.sweep import SweepRequest, plan_sweep
from attnbench.tasks.base import TASKS
from support import one_error_line

HUGE = "99999999999999999999"  # past int64
LARGEST_SEED = 2**32 - 1
SMOKE = ["run", "--profile", "smoke", "--variants", "multi-head", "--tasks", "copy", "--kinds", "accuracy",
         "--lengths", "16", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(sandbox):
    """--plugin registrations (variants and tasks) made by a test end with it."""
    with TASKS.temporary():
        yield


# ---------------------------------------------------------------------------- bench run: refused before any work
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "1025"], "'--threads': 1025 is not in the range 1<=x<=1024"),
        (["--threads", "100000"], "'--threads': 100000 is not in the range 1<=x<=1024"),
        (["--lengths", HUGE], f"--lengths: {HUGE} exceeds the maximum of 16777216"),
        (["--lengths", "16,16777217"], "--lengths: 16777217 exceeds the maximum of 16777216"),
        (["--kinds", "efficiency", "--efficiency-lengths", HUGE],
         f"--efficiency-lengths: {HUGE} exceeds the maximum of 16777216"),
        (["--seeds", HUGE], f"--seeds: {HUGE} exceeds the maximum of 4294967295"),
        (["--seeds", "0,4294967296"], "--seeds: 4294967296 exceeds the maximum of 4294967295"),
        (["--retry", "error"], "--retry reruns cells of a recorded run: give --resume DIR with it"),
        (["--retry", "eror"], "--retry: unknown status 'eror' (statuses: ok, oom, timeout, unsupported, error)"),
        (["--cross", "l*"], "--cross: give one variant, got 'l*'"),
        (["--cross", "additive(heads=0)"], "additive: heads must be"),
        (["--variants", "additive(heads=3)"], "--variants: additive(heads=3) does not fit the smoke profile's model "
                                              "(d_model=32, n_heads=2): additive: d_model=32 must be divisible by heads=3"),
        (["--variants", "linear", "--kinds", "efficiency", "--cross", "additive(heads=3)"], None),  # no cross: runs
        (["--tasks", "translation", "--cross", "additive(heads=3)"], "--cross: additive(heads=3) does not fit"),
    ],
)
def test_bad_run_input_is_one_line_and_nothing_is_written(tmp_path, bench_output, args, message) -> None:
    out = tmp_path / "run"
    code, _, err = bench_output(*SMOKE, "--out", out, *args, *(["--dry-run"] if message is None else []))
    if message is None:  # the same option where nothing uses it: not refused
        assert code == 0, err
        return
    assert code == 2 and message in one_error_line(err)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--resume"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_run_directory_is_refused_and_the_current_directory_untouched(
    tmp_path, monkeypatch, bench_output, flag, value
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = bench_output(*SMOKE, flag, value)
    assert code == 2
    assert one_error_line(err) == f"bench: error: {flag}: empty path; name a directory, e.g. {flag} results/runs/mine"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError("no /proc")], ids=["ctrl-c", "error"])
def test_a_run_that_fails_to_start_leaves_no_empty_directory(tmp_path, monkeypatch, bench_output, stop) -> None:
    """Stopped while measuring the environment for env.json (Ctrl-C during the matmul peak, a
    machine fact that cannot be read), the run directory and the parents it made are removed."""
    from attnbench.runner import sweep

    def collect(**_):
        raise stop

    monkeypatch.setattr(sweep, "collect", collect)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "file").write_text("x")
    for out in (tmp_path / "new" / "deeper" / "run", tmp_path / "kept" / "run"):
        try:
            code, _, _ = bench_output(*SMOKE, "--out", out)
        except RuntimeError:
            code = None  # an unforeseen error still propagates, as before
        assert code == (130 if stop is KeyboardInterrupt else None)  # "bench: aborted"
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # "new" and "deeper" went too
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["file"]


def test_resume_of_a_missing_directory_says_there_is_no_such_directory(tmp_path, bench_output) -> None:
    missing = tmp_path / "no" / "such"
    code, _, err = bench_output(*SMOKE, "--resume", missing)
    assert code == 2 and one_error_line(err) == f"bench: error: {missing}: no such directory"
    assert not missing.exists()
    long = tmp_path / ("a" * 300)  # a name the file system refuses: one line, not a traceback
    for argv in ([*SMOKE, "--resume", long], ["report", long]):
        code, _, err = bench_output(*argv)
        assert code == 2 and one_error_line(err) == f"bench: error: {long}: File name too long"


def test_a_data_path_too_long_for_the_file_system_is_one_line(tmp_path, bench_output) -> None:
    long = tmp_path / ("a" * 300 + ".csv")
    code, _, err = bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--tasks",
                                f"text-cls(source={long})", "--dry-run")
    assert code == 2 and "File name too long" in one_error_line(err)


def test_the_largest_seed_runs_and_exports(tmp_path, bench_output) -> None:
    """The bound is what the generators take: a cell at the largest seed trains, and exports as int64."""
    out = tmp_path / "run"
    code, _, err = bench_output(*SMOKE, "--seeds", str(LARGEST_SEED), "--out", out)
    assert code == 0, err
    [record] = read_records(out)
    assert record["status"] == "ok" and record["seed"] == LARGEST_SEED, record["message"]
    code, _, err = bench_output("export", out, "--format", "parquet")
    assert code == 0, err
    assert pd.read_parquet(out / "cells.parquet").seed.tolist() == [LARGEST_SEED]


def test_an_export_that_cannot_be_written_is_one_line(tmp_path, bench_output) -> None:
    """A run recorded before seeds were bounded holds a seed past int64, which parquet cannot store."""
    run = write_run(tmp_path / "old", {"profile": "smoke"}, [record("accuracy/multi-head/copy/n=16/seed=big", 0.5)])
    cells = run / "cells.jsonl"
    cells.write_text(cells.read_text().replace('"seed": 0', f'"seed": {HUGE}'))
    code, _, err = bench_output("export", run, "--format", "parquet")
    assert code == 2
    assert one_error_line(err).startswith(f"bench: error: cannot write {run / 'cells.parquet'}: OverflowError: ")


def test_an_export_to_an_empty_out_is_refused(tmp_path, bench_output, monkeypatch) -> None:
    run = write_run(tmp_path / "run", {"profile": "smoke"}, [record("accuracy/multi-head/copy/n=16/seed=0", 0.5)])
    monkeypatch.chdir(tmp_path)
    code, _, err = bench_output("export", run, "--out", "")
    assert code == 2 and one_error_line(err) == "bench: error: --out: empty path; name a file, e.g. --out RUN/cells.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(("fmt", "name"), [("parquet", "cells.csv"), ("csv", "cells.PARQUET")])
def test_an_export_named_for_the_other_format_is_refused(tmp_path, bench_output, fmt, name) -> None:
    run = write_run(tmp_path / "run", {"profile": "smoke"}, [record("accuracy/multi-head/copy/n=16/seed=0", 0.5)])
    code, _, err = bench_output("export", run, "--format", fmt, "--out", tmp_path / name)
    assert code == 2 and f"a .{name.split('.')[1].lower()} name for --format {fmt}; name it .{fmt}" in one_error_line(err)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["cells.jsonl", "grid.json", "env.json"])
@pytest.mark.parametrize("command", [["export"], ["export", "--format", "parquet"], ["report"]])
def test_an_output_over_a_file_of_the_run_is_refused_and_the_run_kept(tmp_path, bench_output, command, name) -> None:
    run = write_run(tmp_path / "run", {"profile": "smoke"}, [record("accuracy/multi-head/copy/n=16/seed=0", 0.5)])
    (run / "env.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for target in (run / name, tmp_path / "run" / "." / name):
        code, _, err = bench_output(command[0], run, *command[1:], "--out", target)
        assert code == 2 and f"it is the {name} of the run {run}, which writing over it would lose" in one_error_line(err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# ---------------------------------------------------------------------------- --dry-run
DRY = ["run", "--profile", "smoke", "--variants", "linear", "--tasks", "copy,distance", "--kinds", "accuracy",
       "--lengths", "32", "--seeds", "0,1", "--threads", "1", "--device", "cpu"]


def test_a_dry_run_names_the_cross_attention_variant_where_a_seq2seq_cell_uses_it(bench_output) -> None:
    base = ["run", "--profile", "smoke", "--variants", "linear", "--kinds", "accuracy", "--cross", "additive(heads=2)",
            "--dry-run"]
    code, out, _ = bench_output(*base, "--tasks", "translation,copy")
    assert code == 0 and "seq2seq decoders cross-attend with additive(heads=2) (--cross)" in out
    code, out, _ = bench_output(*base, "--tasks", "copy")  # nothing cross-attends: not said (a warning says why)
    assert code == 0 and "cross-attend" not in out


def test_a_dry_run_lists_the_cells_and_writes_nothing(tmp_path, bench_output, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default run directory would be results/runs here
    code, out, _ = bench_output(*DRY, "--max-cell-seconds", "90", "--dry-run")
    assert code == 0 and "4 of the grid's 4 cells to run" in out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert rows == [["accuracy", "linear", "copy", "32", "0,1", "2"], ["accuracy", "linear", "distance", "32", "0,1", "2"]]
    # 4 cells of 90 s, each after up to 90 s of layer checks (their limit is the budget, at least 10 s)
    assert ("at most 12 min if every cell used its whole budget (90 s a cell, up to 90 s of layer checks before an "
            "accuracy cell)") in " ".join(out.split())
    assert list(tmp_path.iterdir()) == []


def test_a_dry_run_of_a_resume_counts_what_is_left_and_checks_the_grid(tmp_path, bench_output) -> None:
    run = tmp_path / "run"
    assert bench_output(*DRY, "--out", run, "--quiet")[0] == 0
    code, out, _ = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "all 4 cells of the grid are recorded: nothing to run" in out
    cells = run / "cells.jsonl"
    first, *rest = cells.read_text().splitlines()
    cells.write_text("\n".join(rest) + "\n")  # one cell short, as if killed before it ended
    before = sorted(p.name for p in run.iterdir())
    code, out, _ = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "1 of the grid's 4 cells to run" in out
    assert sum(line.startswith("│") for line in out.splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before and cells.read_text().count("\n") == 3
    code, _, err = bench_output("run", "--resume", run, "--seeds", "0", "--dry-run")
    assert code == 2 and "this run's grid differs" in one_error_line(err)


def _reviews(path: Path, word: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("text,label\n" + "".join(f"review {i} is {word} {'good' if i % 2 else 'bad'},{i % 2}\n"
                                             for i in range(300)))


def test_a_data_path_is_recorded_absolute_so_a_resume_elsewhere_reads_the_same_file(
    tmp_path, bench_output, monkeypatch
) -> None:
    _reviews(tmp_path / "here" / "data" / "r.csv", "truly")
    _reviews(tmp_path / "there" / "data" / "r.csv", "not")  # the same relative path, another file
    monkeypatch.chdir(tmp_path / "here")
    run = tmp_path / "run"
    code, _, _ = bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks",
                              "text-cls(source=data/r.csv)", "--kinds", "accuracy", "--seeds", "0,1",
                              "--threads", "1", "--device", "cpu", "--out", run, "--quiet")
    assert code == 0
    absolute = f"text-cls(source={tmp_path / 'here' / 'data' / 'r.csv'})"
    keys = [json.loads(line)["key"] for line in (run / "cells.jsonl").read_text().splitlines()]
    assert keys == [f"accuracy/linear/{absolute}/n=32/seed={s}" for s in (0, 1)]
    (run / "cells.jsonl").write_text((run / "cells.jsonl").read_text().splitlines()[0] + "\n")
    monkeypatch.chdir(tmp_path / "there")
    code, out, _ = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "1 of the grid's 2 cells to run" in out and "/here/data/r.csv" in out.replace("\n", "")
    code, _, err = bench_output("run", "--resume", run, "--tasks", "text-cls(source=data/r.csv)", "--dry-run")
    line = one_error_line(err)  # data/r.csv here is another file: the grid's tasks differ
    assert code == 2 and "this run's grid differs: " in line and '; tasks ["text-cls(source=' in line


def test_a_keyword_is_no_path_and_an_old_runs_relative_path_keeps_its_keys(tmp_path, monkeypatch) -> None:
    _reviews(tmp_path / "data" / "r.csv", "fine")
    (tmp_path / "sotu").mkdir()  # a folder named like text-cls's keyword
    monkeypatch.chdir(tmp_path)

    def tasks(text: str, recorded: tuple[str, ...] | None = None) -> list[str]:
        request = SweepRequest(profile="smoke", variants="linear", tasks=text, kinds=("accuracy",),
                               recorded_tasks=recorded)
        return plan_sweep(request).grid["tasks"]

    assert tasks("text-cls(source=sotu)") == ["text-cls(source=sotu)"]
    assert tasks("text-cls(source=data/r.csv)") == [f"text-cls(source={tmp_path / 'data' / 'r.csv'})"]
    old = ("text-cls(source=data/r.csv)",)  # a run recorded before paths were made absolute
    assert tasks("text-cls(source=data/r.csv)", recorded=old) == list(old)


def test_a_home_relative_or_bare_data_path_is_recorded_absolute_and_checksummed(tmp_path, monkeypatch) -> None:
    """`~/r.csv` and listops' `path=rows` (a file without a suffix, which it reads as TSV) name data
    files as `data/r.csv` does (before: neither was made absolute nor checksummed, so a resume read
    whatever the file then held, and `~` whatever $HOME then was); `sotu` and `hf:…` stay keywords."""
    from test_tasks import lra_rows, write_lra

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _reviews(tmp_path / "home" / "r.csv", "fine")
    write_lra(tmp_path / "rows", lra_rows(12, 0))
    (tmp_path / "hf:imdb").mkdir()  # named like a Hugging Face source
    monkeypatch.chdir(tmp_path)

    def grid(tasks: str) -> dict:
        return plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks=tasks, kinds=("accuracy",))).grid

    home = grid("text-cls(source=~/r.csv)")
    assert home["tasks"] == [f"text-cls(source={tmp_path / 'home' / 'r.csv'})"]
    assert list(home["data"]) == [str(tmp_path / "home" / "r.csv")]
    bare = grid("listops(path=rows)")
    assert bare["tasks"] == [f"listops(path={tmp_path / 'rows'})"] and list(bare["data"]) == [str(tmp_path / "rows")]
    from attnbench.options import names_a_path

    source = next(o for o in TASKS["text-cls"].spec.options if o.name == "source")
    assert not names_a_path(source, "hf:imdb") and not names_a_path(source, " sotu ")
    assert names_a_path(source, "rows") and not names_a_path(source, "")
    assert not names_a_path(source, "~nosuchuser/r.csv")  # before: expanduser's RuntimeError, a traceback


def test_a_resume_of_a_run_that_did_not_checksum_a_file_it_reads_goes_on_and_says_so(
        tmp_path, bench_output, monkeypatch) -> None:
    """A run started before bare names counted as paths recorded only data/r.csv's checksum; its
    resume read 'data files changed' where none had (before)."""
    from test_tasks import lra_rows, write_lra

    _reviews(tmp_path / "data" / "r.csv", "fine")
    write_lra(tmp_path / "rows", lra_rows(12, 0))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks",
                        "text-cls(source=data/r.csv),listops(path=rows)", "--kinds", "accuracy", "--lengths", "64",
                        "--threads", "1", "--out", run, "--quiet")[0] == 0
    grid = json.loads((run / "grid.json").read_text())
    del grid["data"][str(tmp_path / "rows")]  # as an older attnbench recorded it: no checksum of a bare name
    (run / "grid.json").write_text(json.dumps(grid))
    cells = run / "cells.jsonl"
    cells.write_text(cells.read_text().splitlines()[0] + "\n")
    code, out, err = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "1 of the grid's 2 cells to run" in out, err
    assert f"the run recorded no checksum of {tmp_path / 'rows'}, which these tasks read now" in err


def test_a_data_file_edited_since_the_run_started_is_refused_on_resume(tmp_path, bench_output) -> None:
    data = tmp_path / "data" / "r.csv"
    _reviews(data, "truly")
    run = tmp_path / "run"
    assert bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks", f"text-cls(source={data})",
                        "--kinds", "accuracy", "--seeds", "0,1", "--threads", "1", "--device", "cpu",
                        "--out", run, "--quiet")[0] == 0
    grid = json.loads((run / "grid.json").read_text())
    assert grid["data"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    (run / "cells.jsonl").write_text((run / "cells.jsonl").read_text().splitlines()[0] + "\n")
    original = data.read_bytes()
    data.write_bytes(original.replace(b"review 7 is truly good", b"review 7 is truly bad"))
    code, _, err = bench_output("run", "--resume", run, "--quiet")
    line = one_error_line(err)
    assert code == 2 and f"--resume {run}: data file {data} changed since the run started (sha256 " in line
    assert len(json.loads("[" + ",".join((run / "cells.jsonl").read_text().splitlines()) + "]")) == 1
    data.write_bytes(original)  # the same bytes again: the resume goes on
    assert bench_output("run", "--resume", run, "--quiet")[0] == 0
    assert len((run / "cells.jsonl").read_text().splitlines()) == 2
    code, out, _ = bench_output("report", run)  # the report names the file and the bytes it held
    assert code == 0 and f"- **data**: `{data}` (sha256 {grid['data'][str(data)][:12]}…)" in out


def test_a_data_file_edited_during_the_run_fails_the_cells_that_read_it(tmp_path) -> None:
    """Each cell checks the bytes it reads against the run's record (also on another machine of a
    Ray cluster, which reads its own copy)."""
    from attnbench.runner.cells import Cell
    from attnbench.runner.execute import execute_cell
    from test_runner import smoke_plan

    data = tmp_path / "data" / "r.csv"
    _reviews(data, "truly")
    cell = Cell.make("accuracy", "linear", {}, "text-cls", {"source": str(data)}, 32, 0)
    record = execute_cell(cell, smoke_plan(data={str(data): "0" * 64}))
    assert record["status"] == "error" and record["message"] == (
        f"data file {data} changed since the run started (sha256 000000000000… then, "
        f"{hashlib.sha256(data.read_bytes()).hexdigest()[:12]}… now); restore it and rerun these cells with "
        "--resume RUN --retry error")


def test_a_file_named_like_a_keyword_is_no_data_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sotu").write_text("notes")  # text-cls's default source is the keyword sotu
    sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="text-cls", kinds=("accuracy",)))
    assert "data" not in sweep.grid and sweep.plan.data == {}


def test_a_folder_whose_files_changed_names_them_on_resume(tmp_path, bench_output) -> None:
    from test_tasks import lra_rows, write_lra

    lra = tmp_path / "lra"
    lra.mkdir()
    for suffix in ("train", "val", "test"):
        write_lra(lra / f"basic_{suffix}.tsv", lra_rows(12, 0))
    run = tmp_path / "run"
    assert bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks", f"listops(path={lra})",
                        "--kinds", "accuracy", "--lengths", "64", "--threads", "1", "--out", run, "--quiet")[0] == 0
    write_lra(lra / "a_train.tsv", lra_rows(12, 1))  # sorts first: the task would read it for train
    code, _, err = bench_output("run", "--resume", run, "--dry-run")
    line = one_error_line(err)
    assert code == 2 and f"the run read data files {lra / 'basic_test.tsv'}, {lra / 'basic_train.tsv'}" in line
    assert f"these tasks now read {lra / 'a_train.tsv'}, " in line


def test_runs_whose_data_files_held_other_bytes_are_not_compared() -> None:
    from attnbench.runner.report import incomparable_settings

    a, b = {"data": {"/d/r.csv": "c41f"}}, {"data": {"/d/r.csv": "37d0"}}
    assert incomparable_settings(a, b) == ["data file /d/r.csv: sha256 c41f… vs 37d0…"]  # the same keys, other data
    assert incomparable_settings(a, {}) == [] and incomparable_settings(a, a) == []  # a run from before: not held


def test_a_run_from_before_data_checksums_resumes_and_generated_tasks_record_none(tmp_path, bench_output) -> None:
    data = tmp_path / "data" / "r.csv"
    _reviews(data, "fine")
    run = tmp_path / "run"
    assert bench_output("run", "--profile", "smoke", "--variants", "linear", "--tasks", f"text-cls(source={data}),copy",
                        "--kinds", "accuracy", "--seeds", "0", "--threads", "1", "--device", "cpu", "--out", run,
                        "--quiet")[0] == 0
    grid = json.loads((run / "grid.json").read_text())
    assert list(grid["data"]) == [str(data)]  # copy reads no file
    del grid["data"]
    (run / "grid.json").write_text(json.dumps(grid))  # as a run recorded it before
    code, out, _ = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "all 2 cells of the grid are recorded" in out
    plain = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="copy,text-cls", kinds=("accuracy",)))
    assert "data" not in plain.grid  # no user file: the grid is as it was


def test_repeated_seeds_and_lengths_plan_each_cell_once() -> None:
    sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="copy", lengths=(32, 48, 32),
                                    seeds=(1, 0, 1), efficiency_lengths=(64, 64), kinds=("accuracy", "efficiency")))
    keys = [c.key for c in sweep.cells]
    assert len(keys) == len(set(keys)) == 2 * 2 + 1
    assert sweep.grid["seeds"] == [1, 0] and sweep.grid["lengths"] == {"copy": [32, 48]}
    assert sweep.grid["efficiency_lengths"] == [64]


def test_a_selection_repeated_under_another_spelling_plans_its_cells_once_and_says_so(bench_output) -> None:
    # smoke gives local window 4: 'local' is local(window=4); options in another order, a default spelled out
    with pytest.warns(UserWarning) as said:
        sweep = plan_sweep(SweepRequest(profile="smoke", variants="local(window=4),local,local(kernel=eager,window=4)",
                                        tasks="copy,copy(reverse=false)", kinds=("accuracy", "efficiency")))
    keys = [c.key for c in sweep.cells]
    assert len(keys) == len(set(keys)) == 1 + 2 and sweep.grid["variants"] == ["local(window=4)"]
    assert sweep.grid["tasks"] == ["copy"]
    assert [str(w.message) for w in said] == [
        "--variants: local repeats local(window=4) (the same options, defaults and the profile's filled in); "
        "its cells run once",
        "--variants: local(kernel=eager, window=4) repeats local(window=4) (the same options, defaults and the "
        "profile's filled in); its cells run once",
        "--tasks: copy(reverse=False) repeats copy (the same options, defaults and the profile's filled in); "
        "its cells run once"]
    code, _, err = bench_output(*SMOKE, "--variants", "linear,linear(chunk_size=0)", "--dry-run")
    assert code == 0 and err == ("bench: warning: --variants: linear(chunk_size=0) repeats linear (the same options, "
                                 "defaults and the profile's filled in); its cells run once\n")


def test_one_data_file_named_two_ways_is_one_task(tmp_path, monkeypatch) -> None:
    _reviews(tmp_path / "data" / "r.csv", "truly")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"--tasks: text-cls\(source=./data/r.csv\) repeats text-cls\(source=data"):
        sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", kinds=("accuracy",),
                                        tasks="text-cls(source=data/r.csv),text-cls(source=./data/r.csv)"))
    assert sweep.grid["tasks"] == [f"text-cls(source={tmp_path / 'data' / 'r.csv'})"] and len(sweep.cells) == 1
    assert sweep.tasks_text == f"text-cls(source={tmp_path / 'data' / 'r.csv'})"  # what a resume reads
    with pytest.warns(UserWarning):  # the absolute spelling first: the relative one is not recorded either
        sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", kinds=("accuracy",),
                                        tasks=f"text-cls(source={tmp_path / 'data' / 'r.csv'}),text-cls(source=data/r.csv)"))
    assert sweep.tasks_text == f"text-cls(source={tmp_path / 'data' / 'r.csv'})"


@pytest.mark.parametrize(("recorded", "planned"), [(("copy",), ["copy"]),
                                                  (("copy", "copy(reverse=False)"), ["copy", "copy(reverse=False)"])])
def test_a_resume_merges_repeats_unless_its_grid_holds_them(recorded, planned) -> None:
    sweep = plan_sweep(SweepRequest(profile="smoke", variants="linear", tasks="copy,copy(reverse=false)",
                                    kinds=("accuracy",), resuming=True, recorded_tasks=recorded))
    assert sweep.grid["tasks"] == planned and len(sweep.cells) == len(planned)  # the cells that grid names


def test_a_run_that_merged_a_repeated_selection_resumes_with_the_merged_grid(tmp_path, bench_output) -> None:
    run = tmp_path / "run"
    args = ["run", "--profile", "smoke", "--tasks", "copy", "--kinds", "accuracy", "--threads", "1", "--device", "cpu"]
    code, _, err = bench_output(*args, "--variants", "local(window=4),local(kernel=eager,window=4),local,linear",
                                "--out", run, "--quiet")
    assert code == 0 and err.count("repeats local(window=4)") == 2
    assert json.loads((run / "env.json").read_text())["options"]["variants"] == "local(window=4),linear"
    records = (run / "cells.jsonl").read_text().splitlines()
    assert len(records) == 2
    (run / "cells.jsonl").write_text(records[0] + "\n")  # as if interrupted
    code, out, err = bench_output("run", "--resume", run, "--quiet")
    assert code == 0, err
    keys = [json.loads(line)["key"] for line in (run / "cells.jsonl").read_text().splitlines()]
    assert keys == [json.loads(line)["key"] for line in records]  # each cell once
    # the selections given again as first typed: the same (merged) grid, quietly
    code, out, err = bench_output("run", "--resume", run, "--variants",
                                  "local(window=4),local(kernel=eager,window=4),local,linear", "--dry-run")
    assert code == 0 and "all 2 cells of the grid are recorded" in out and "warning" not in err, err


def test_a_run_planned_before_the_merging_resumes_with_its_own_grid(tmp_path, bench_output, monkeypatch) -> None:
    """A run started before repeated selections were merged (or with an option that does not fit,
    or --cross '') holds them in its grid: its resume plans that grid, not a merged one."""
    import attnbench.runner.sweep as sweep

    run = tmp_path / "run"
    with monkeypatch.context() as old:  # the planner as it was: no merging, no build check
        old.setattr(sweep, "_distinct_selections", lambda flag, selected, resolve, **given: selected)
        old.setattr(sweep, "_check_builds", lambda *a, **k: None)
        code, _, err = bench_output("run", "--profile", "smoke", "--variants",
                                    "local(window=4),local(window=4,kernel=eager),additive(heads=3)", "--tasks",
                                    "copy", "--kinds", "accuracy", "--threads", "1", "--device", "cpu", "--out", run,
                                    "--quiet")
    assert code == 0, err
    records = (run / "cells.jsonl").read_text().splitlines()
    assert len(records) == 3 and json.loads(records[2])["status"] == "error"
    (run / "cells.jsonl").write_text(records[0] + "\n")
    code, out, err = bench_output("report", run)
    assert "1 recorded (ok 1); 2 of the grid's 3 not run yet" in out
    code, out, err = bench_output("run", "--resume", run, "--dry-run")
    assert code == 0 and "2 of the grid's 3 cells to run" in out, err
    assert err.startswith("resuming with the run's own options: ") and "warning" not in err and err.count("\n") == 1


@pytest.mark.parametrize(("args", "warning"), [
    (["--kinds", "efficiency", "--seeds", "3,1"],
     "--seeds: efficiency cells are timed once, at the first seed (3); the others are unused; ignored"),
    (["--kinds", "accuracy", "--efficiency-lengths", "128"], "--efficiency-lengths: --kinds has no efficiency cells"),
    (["--kinds", "efficiency", "--lengths", "64"], "--lengths: sets accuracy cells' lengths, and --kinds has none"),
    (["--tasks", "copy", "--cross", "additive"], "--cross: no seq2seq task (translation) in this run"),
    (["--kinds", "efficiency", "--cross", "additive"], "--cross: no seq2seq task (translation) in this run"),
    (["--tasks", "copy", "--cross", "additive(heads=3)"], "--cross: no seq2seq task"),  # unused: not built either
])
def test_an_option_no_cell_uses_is_named_in_one_warning(bench_output, args, warning) -> None:
    code, _, err = bench_output("run", "--profile", "smoke", "--variants", "multi-head", "--device", "cpu", *args,
                                "--dry-run")
    assert code == 0 and err.startswith(f"bench: warning: {warning}") and err.count("\n") == 1, err


@pytest.mark.parametrize(("args", "message"), [
    (["--cross", ""], "--cross: empty; give one variant"),
    (["--resume", "somewhere", "--retry", " "], "--retry: empty list (give statuses, e.g. error,timeout;"),
    (["--retry", ""], "--retry: empty list"),
])
def test_an_empty_cross_or_retry_is_refused_not_ignored(tmp_path, bench_output, args, message) -> None:
    code, _, err = bench_output(*SMOKE, *args, "--dry-run")
    assert code == 2 and message in one_error_line(err)


# ---------------------------------------------------------------------------- --cross with inline options
def test_cross_takes_inline_options_and_a_bare_name_is_recorded_as_before() -> None:
    def cross(text: str) -> str | None:
        request = SweepRequest(profile="smoke", variants="multi-head", tasks="copy", kinds=("accuracy",), cross=text)
        sweep = plan_sweep(request)
        assert sweep.plan.cross == sweep.grid["cross"]
        return sweep.grid["cross"]

    assert cross("additive(heads=2)") == "additive(heads=2)"
    assert cross("Additive") == "additive"  # the canonical name, as grid.json held it before
    assert cross("local(window=4, kernel=eager)") == "local(window=4, kernel=eager)"


SPY = '''
from attnbench import Option, VariantSpec, register_variant
from attnbench.variants.multi_head import MultiHeadAttention


@register_variant("cross-spy")
class CrossSpy(MultiHeadAttention):
    spec = VariantSpec(complexity="n^2", description="says which options its cross-attention got (tests)",
                       options=(Option("tag", int, 0, minimum=0),))

    def forward(self, x, context=None, **kwargs):
        if context is not None:
            raise RuntimeError(f"cross-attention built with tag={self.options['tag']}")
        return super().forward(x, context, **kwargs)
'''


def test_a_translation_cell_builds_its_cross_attention_with_the_inline_options(tmp_path, bench_output) -> None:
    plugin = tmp_path / "spy.py"
    plugin.write_text(SPY)
    out = tmp_path / "run"
    code, _, err = bench_output(*SMOKE, "--plugin", plugin, "--tasks", "translation", "--lengths", "32",
                                "--cross", "cross-spy(tag=7)", "--out", out)
    assert code == 0, err
    [cell] = read_records(out)
    assert cell["message"] == "RuntimeError: cross-attention built with tag=7"
    assert json.loads((out / "grid.json").read_text())["cross"] == "cross-spy(tag=7)"


# ---------------------------------------------------------------------------- the per-cell line
BRACKETS = '''
from attnbench import VariantSpec, register_variant
from attnbench.variants.multi_head import MultiHeadAttention


@register_variant("bracket-raise")
class BracketRaise(MultiHeadAttention):
    spec = VariantSpec(complexity="n^2", description="raises a message with brackets (tests)")

    def forward(self, x, context=None, **kwargs):
        raise RuntimeError("always raises [idx 3]")
'''


def test_the_per_cell_line_prints_a_message_with_brackets_whole(tmp_path, bench_output) -> None:
    plugin = tmp_path / "brackets.py"
    plugin.write_text(BRACKETS)
    argv = [a for a in SMOKE if a != "--quiet"]  # the per-cell lines
    code, out, err = bench_output(*argv, "--plugin", plugin, "--variants", "bracket-raise", "--out", tmp_path / "run")
    assert code == 0, err
    assert "RuntimeError: always raises [idx 3]" in out


# ---------------------------------------------------------------------------- bench compare
GRID = {
    "profile": "smoke", "variants": ["multi-head"], "tasks": ["copy"], "seeds": [0], "device": "cpu", "dtype": "fp32",
    "cross": None, "size": {"d_model": 32, "n_layers": 1}, "train": {"steps": 40, "lr": 0.003},
    "efficiency": {"batch": 1, "d_model": 64, "lengths": [64, 256]},
}


def record(key: str, score: float) -> dict:
    return {"key": key, "kind": "accuracy", "status": "ok", "message": "", "seed": 0,
            "result": {"metric": "accuracy", "score": score}}


def write_run(path: Path, grid: dict, records: list[dict]) -> Path:
    """A run directory as `bench run` leaves it (env.json left out: it is optional to readers)."""
    path.mkdir(parents=True)
    (path / "grid.json").write_text(json.dumps({**GRID, **grid}))
    (path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


CELL = "accuracy/multi-head/copy/n=16/seed=0"


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"dtype": "fp16"}, "dtype fp32 vs fp16"),
        ({"profile": "quick", "dtype": "bf16"}, "profile smoke vs quick; dtype fp32 vs bf16"),
        ({"train": {"steps": 80, "lr": 0.003}}, "train.steps 40 vs 80"),
        ({"size": {"d_model": 64, "n_layers": 1}}, "size.d_model 32 vs 64"),
        ({"efficiency": {"batch": 4, "d_model": 64, "lengths": [64]}}, "efficiency.batch 1 vs 4"),
        ({"cross": "additive"}, "cross null vs additive"),
    ],
)
def test_compare_refuses_runs_of_different_settings_naming_them(tmp_path, bench_output, grid, message) -> None:
    a = write_run(tmp_path / "a", {}, [record(CELL, 0.8)])
    b = write_run(tmp_path / "b", grid, [record(CELL, 0.1)])
    code, out, err = bench_output("compare", a, b)
    assert code == 2 and out == ""
    assert one_error_line(err) == f"bench: error: the runs are not comparable: their grids differ in {message}"


def test_compare_allows_other_variants_tasks_lengths_and_machines(tmp_path, bench_output) -> None:
    other = "accuracy/linear/copy/n=32/seed=0"
    a = write_run(tmp_path / "a", {}, [record(CELL, 0.8)])
    b = write_run(tmp_path / "b", {"variants": ["multi-head", "linear"], "lengths": {"copy": [16, 32]},
                                   "device": "cuda", "threads": 8,
                                   "efficiency": {"batch": 1, "d_model": 64, "lengths": [64, 256, 1024]}},
                  [record(CELL, 0.8), record(other, 0.5)])
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and "No regressions beyond rtol 0.05 in 1 matched cells." in out and f"`{other}`" in out


def test_compare_calls_the_machine_of_a_run_without_env_json_unknown_not_different(tmp_path, bench_output) -> None:
    a = write_run(tmp_path / "a", {}, [record(CELL, 0.8)])
    b = write_run(tmp_path / "b", {}, [record(CELL, 0.8)])
    (a / "env.json").write_text(json.dumps({"device": "cpu", "cpu": "AMD EPYC", "threads": 2, "torch": "2.13.0"}))
    code, out, _ = bench_output("compare", a, b)
    assert code == 0 and "**note**: the runs differ in" not in out  # device: B's grid.json has it, equal
    assert "B records no environment (env.json), so whether the runs differ in cpu, threads, torch is unknown" in out
    (a / "env.json").unlink()  # neither records one: still unknown, not the same
    code, out, _ = bench_output("compare", a, b)
    assert "A and B record no environment (env.json), so whether the runs differ in cpu, threads, torch is unknown" in out


def test_compare_with_no_cell_in_both_runs_fails(tmp_path, bench_output) -> None:
    a = write_run(tmp_path / "a", {}, [record(CELL, 0.8)])
    b = write_run(tmp_path / "b", {}, [record("accuracy/linear/copy/n=16/seed=0", 0.8)])
    code, out, err = bench_output("compare", a, b)
    assert code == 1
    assert err.strip() == "bench compare: nothing compared: no cell is in both runs (A has 1, B has 1)"
    assert out.rstrip().endswith("Nothing compared: no cell is in both runs (A has 1, B has 1); that fails the gate.")


def test_a_dry_run_refuses_the_out_the_run_would_refuse_and_leaves_nothing(tmp_path, bench_output) -> None:
    run = tmp_path / "run"
    assert bench_output(*DRY, "--out", run, "--quiet")[0] == 0
    code, _, err = bench_output(*DRY, "--out", run, "--dry-run")
    assert code == 2 and one_error_line(err) == f"bench: error: {run} already holds a run; use --resume {run} or another --out"
    (tmp_path / "file").write_text("")
    code, _, err = bench_output(*DRY, "--out", tmp_path / "file" / "run", "--dry-run")
    assert code == 2 and one_error_line(err) == f"bench: error: cannot write to {tmp_path / 'file' / 'run'}: Not a directory"
    for dry in (["--dry-run"], []):  # the file itself: said as such, not mkdir's "File exists"
        code, _, err = bench_output(*DRY, "--out", tmp_path / "file", *dry)
        assert code == 2 and one_error_line(err) == (f"bench: error: cannot write to {tmp_path / 'file'}: a file, not a "
                                                     "directory (a run directory is made there)"), dry
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    long = tmp_path / ("a" * 300)
    for refused, why in ((tmp_path / "dangling", "File exists"), (long, "File name too long")):
        for dry in (["--dry-run"], []):  # the dry run says what the run says (for the long name: not a traceback)
            code, _, err = bench_output(*DRY, "--out", refused, *dry)
            assert code == 2 and one_error_line(err) == f"bench: error: cannot write to {refused}: {why}", dry
    fresh = tmp_path / "new" / "run"
    code, out, _ = bench_output(*DRY, "--out", fresh, "--dry-run")
    assert code == 0 and "cells to run" in out and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file", "run"]  # no probe left behind


def test_a_length_too_short_for_a_task_names_the_profile_where_the_user_gave_none(bench_output) -> None:
    # the README's own example of option syntax, at the quick profile's length 32: "--lengths" was
    # blamed though none was given
    code, _, err = bench_output("run", "--variants", "mha", "--tasks", "distance(distances=8,32,128)", "--dry-run")
    assert code == 2 and one_error_line(err) == (
        "bench: error: the quick profile's lengths (pass --lengths): 32 is too short for "
        "distance(distances='8,32,128') (its minimum is 130)")
    code, _, err = bench_output("run", "--variants", "mha", "--tasks", "distance(distances=8,32,128)",
                                "--lengths", "64", "--dry-run")
    assert code == 2 and one_error_line(err) == (
        "bench: error: --lengths: 64 is too short for distance(distances='8,32,128') (its minimum is 130)")


@pytest.mark.parametrize("argv", [["report", ""], ["plot", ""], ["export", ""], ["compare", "RUN", ""]])
def test_an_empty_run_argument_is_refused_by_name(argv, bench_output, tmp_path, monkeypatch) -> None:
    # it had read as the current directory: ". is not an attnbench run (no grid.json)"
    monkeypatch.chdir(tmp_path)
    code, _, err = bench_output(*[str(tmp_path) if a == "RUN" else a for a in argv])
    assert code == 2 and one_error_line(err).endswith(
        ": empty path; name a run directory, e.g. results/runs/20261127-101500-quick")


def test_plots_into_a_file_say_it_is_a_file(bench_output, tmp_path) -> None:
    run = tmp_path / "run"
    assert bench_output(*DRY, "--out", run, "--quiet")[0] == 0
    (tmp_path / "taken").write_text("")
    code, _, err = bench_output("plot", run, "--out", tmp_path / "taken")
    assert code == 2 and one_error_line(err) == (f"bench: error: cannot write plots to {tmp_path / 'taken'}: a file, "
                                                 "not a directory (--out names the folder of the figures)")
    code, _, err = bench_output("plot", run, "--out", tmp_path / "fig.png")
    assert code == 2 and one_error_line(err) == (f"bench: error: --out {tmp_path / 'fig.png'}: names the folder of the "
                                                 f"figures (each is written as PNG and SVG), not a file; e.g. --out "
                                                 f"{tmp_path / 'fig'}")
    assert not (tmp_path / "fig.png").exists()



def _efficiency(key: str, fwd_s: float, fwd_bwd_s: float | None) -> dict:
    forward_only = fwd_bwd_s is None
    return {"key": key, "kind": "efficiency", "status": "ok", "seed": 0,
            "message": "forward only: no backward here" if forward_only else "",
            "result": {"fwd": {"median_s": fwd_s}, "peak_bytes_fwd": 2**20,
                       "fwd_bwd": None if forward_only else {"median_s": fwd_bwd_s},
                       "peak_bytes_fwd_bwd": None if forward_only else 2**21,
                       **({"no_backward": "no backward here"} if forward_only else {})}}


@pytest.mark.parametrize(("a", "b", "code", "rows"), [
    ((0.010, 0.030), (0.010, None), 1, {("fwd+bwd", True), ("fwd ms", False), ("peak MiB fwd", False)}),
    ((0.010, None), (0.020, 0.030), 1, {("fwd ms", True), ("peak MiB fwd", False)}),  # what both timed
    ((0.010, None), (0.010, None), 0, {("fwd ms", False), ("peak MiB fwd", False)}),
])
def test_compare_catches_a_lost_backward_and_compares_the_forward_a_forward_only_cell_has(tmp_path, a, b, code, rows):
    from attnbench.runner.report import compare_runs, render_comparison
    from attnbench.runner.store import load_run

    key = "efficiency/local/-/n=64/seed=0"
    runs = [load_run(write_run(tmp_path / name, {"profile": "smoke"}, [_efficiency(key, *times)]))
            for name, times in (("a", a), ("b", b))]
    frame = compare_runs(*runs).frame
    assert {(r.metric, bool(r.regressed)) for r in frame.itertuples()} == rows
    assert bool(frame.regressed.any()) == bool(code)
    if b[1] is None and a[1] is not None:  # the page's list of regressions says what was lost
        assert f"- `{key}`: fwd+bwd in A, forward only: no backward here in B" in render_comparison(
            *runs, compare_runs(*runs))
