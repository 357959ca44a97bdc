"""Bad input to `bench perf` and `bench ceiling`: one `bench: error:` line, exit 2, before anything is
timed or written; and the `--compare` gate, which fails when it compared nothing. Nothing here times.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from attnbench.benchmarks.suite import ROW_COLUMNS


@pytest.fixture
def never_timed(monkeypatch):
    """Any timing is a failure: validation must stop the command first."""
    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", lambda *a, **k: pytest.fail("timed anyway"))
    monkeypatch.setattr("attnbench.benchmarks.ceiling.run_ceiling", lambda *a, **k: pytest.fail("timed anyway"))


def assert_one_line_error(bench_output, argv, out_dir, says):
    code, out, err = bench_output(*argv, "--out", out_dir)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("bench: error:") and "Traceback" not in err
    assert says in err
    assert not out_dir.exists()  # nothing written


# ---------------------------------------------------------------------------- bench perf options
@pytest.mark.parametrize("argv, says", [
    (["--threads", "-2"], "'--threads': -2 is not in the range 1<=x<=1024."),
    (["--threads", "0"], "'--threads': 0 is not in the range 1<=x<=1024."),
    (["--threads", "99999999999999999999"], "'--threads'"),
    (["--min-run-time", "nan"], "'--min-run-time': 'nan' is not a number."),
    (["--min-run-time", "0"], "'--min-run-time': 0.0 is not in the range 0<x<=60."),
    (["--min-run-time", "-1"], "'--min-run-time': -1.0 is not in the range"),
    (["--max-cell-s", "nan"], "'--max-cell-s': 'nan' is not a number."),
    (["--max-cell-s", "0"], "'--max-cell-s': 0.0 is not in the range x>0."),
    (["--naive-limit-gib", "-1"], "'--naive-limit-gib': -1.0 is not in the range x>=0."),
    (["--naive-limit-gib", "nan"], "'--naive-limit-gib': 'nan' is not a number."),
    (["--tolerance", "-1"], "'--tolerance': -1.0 is not in the range x>=0."),
    (["--tolerance", "nan"], "'--tolerance': 'nan' is not a number."),
    (["--tolerance", "inf"], "'--tolerance': 'inf' is not a finite number."),  # it passed every regression
    (["--batched-max-n", "0"], "'--batched-max-n': 0 is not in the range x>=1."),
    (["--repeat", "0"], "'--repeat': 0 is not in the range 1<=x<=100."),
    (["--repeat", "-1"], "'--repeat': -1 is not in the range"),
    (["--variants", ""], "--variants: empty list (name variants, or all; known: additive,"),
    (["--variants", " , "], "--variants: empty list"),
    (["--variants", "lcoal"], "--variants: no benchmark for 'lcoal'; did you mean 'local'? (known: additive,"),
    (["--plugin", "mine.py"], "bench perf times the built-in variants only; time a plugin's layer with bench run "
                              "--kinds efficiency --plugin mine.py --variants NAME"),
    (["--variants", "cosine-demo"], "--variants: no benchmark for 'cosine-demo'; time your own variant with "
                                    "bench run --kinds efficiency --plugin MODULE (known: additive,"),
    (["--lengths", ""], "--lengths: empty list"),
    (["--lengths", "0,64"], "--lengths: expected positive integers, got '0,64'"),
    (["--lengths", "-64"], "--lengths: expected positive integers"),
    (["--lengths", "64,x"], "--lengths: expected comma-separated integers, got '64,x'"),
    (["--lengths", "99999999999999999999999"], "--batch 1 × --lengths 99999999999999999999999: "),
    (["--batch", ""], "--batch: empty list"),
    (["--batch", "0"], "--batch: expected positive integers, got '0'"),
    (["--batch", "-4"], "--batch: expected positive integers"),
    (["--batch", "four"], "--batch: expected comma-separated integers"),
    (["--batch", "99999999999999999999999"], "--batch 99999999999999999999999 × --lengths 2048: "),
    (["--batch", "1024", "--lengths", "32768", "--batched-max-n", "32768"],
     "--batch 1024 × --lengths 32768: 33554432 tokens in one call, more than 16777216"),
    (["--name", "a/b"], "--name 'a/b': a file name stem, without '/'"),
    (["--name", ""], "--name '': a file name stem"),
    (["--against", ""], "--against: empty revision; name a git revision"),
    (["--against", " "], "--against: empty revision"),
    (["--compare", ""], "Invalid value for '--compare': empty path; name a baseline CSV"),
    (["--compare", "b.csv", "--current", ""], "Invalid value for '--current': empty path"),
    (["--variants", "all,lcoal"], "--variants: no benchmark for 'lcoal'; did you mean 'local'?"),
    (["--variants", "mha,cosine-demo"], "--variants: no benchmark for 'cosine-demo'"),
    (["--variants", "local(window=3)"],  # built in, with options: not the hint to time one's own variant
     "--variants: bench perf takes names, not options ('local(window=3)'): it times local as local(window=128), "
     "local(window=256), local(window=128, kernel=compiled), local(window=256, kernel=compiled); time other "
     "options with bench run --kinds efficiency --variants 'local(window=3)'"),
])
def test_bad_bench_perf_input_is_one_line_and_exit_2_before_any_timing(argv, says, bench_output, never_timed,
                                                                        tmp_path):
    assert_one_line_error(bench_output, ["perf", "--quick", *argv], tmp_path / "out", says)


def test_the_size_limit_counts_only_the_lengths_a_batch_runs(bench_output, monkeypatch, tmp_path):
    # batch 1024 runs n = 256 alone (32768 is past --batched-max-n): 262,144 tokens, not 33,554,432
    ran = []
    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", lambda cfg, **k: ran.append(cfg) or [])
    monkeypatch.setattr("attnbench.benchmarks.outputs.write_all", lambda *a, **k: {"csv": tmp_path / "t.csv"})
    monkeypatch.setattr("attnbench.benchmarks.guard.read_results", lambda path: None)
    code, _, err = bench_output("perf", "--quick", "--lengths", "256,32768", "--batch", "1,1024", "--out", tmp_path)
    assert (code, err) == (0, "") and ran[0].batches == (1, 1024)
    # a batch that no length is short enough for would time nothing: refused, not run (before: a traceback at the end)
    code, _, err = bench_output("perf", "--quick", "--lengths", "8192", "--batch", "4", "--out", tmp_path)
    assert code == 2 and err == ("bench: error: --batch 4: no --lengths is at most --batched-max-n 4096, so nothing "
                                 "would be timed at batch 4; give a length up to 4096 or raise --batched-max-n\n")
    code, _, err = bench_output("perf", "--quick", "--lengths", "8192", "--out", tmp_path)  # the default batches
    assert code == 0 and ran[-1].batches == (1,)


def test_a_length_whose_inputs_cannot_fit_in_memory_is_refused_before_anything_runs(bench_output, tmp_path):
    """Before: 16,777,216 tokens (MAX_TOKENS) failed allocating 32 GiB with a traceback; 4,000,000
    was killed by the kernel (rc 137) with nothing said."""
    code, _, err = bench_output("perf", "--variants", "linear", "--lengths", "4000000", "--out", tmp_path)
    assert code == 2 and err.startswith("bench: error: --batch 1 × --lengths 4000000: 4000000 tokens in one call: its "
                                        "inputs alone would take 30.5 GiB in fp32, and with their outputs and ")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("given, runs", [
    ("mha", ("multi-head",)),
    ("mha,multi-head,bahdanau,sliding-window", ("multi-head", "additive", "local")),
    ("Linear-Attention", ("linear",)),
    ("all,linear", ("all",)),  # all beside names means all, as in bench check
    ("linear,all", ("all",)),
])
def test_variants_take_aliases_and_all_beside_names_means_all(given, runs, bench_output, monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", lambda cfg, **k: ran.append(cfg) or [])
    monkeypatch.setattr("attnbench.benchmarks.outputs.write_all", lambda *a, **k: {"csv": tmp_path / "t.csv"})
    monkeypatch.setattr("attnbench.benchmarks.guard.read_results", lambda path: None)
    code, _, err = bench_output("perf", "--quick", "--variants", given, "--out", tmp_path)
    assert (code, err) == (0, "") and ran[0].variants == runs


@pytest.mark.parametrize("command", ["perf", "ceiling"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_out_is_refused_not_read_as_the_current_folder(command, value, bench_output, never_timed, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_output(command, "--quick" if command == "perf" else "--repeat=1", "--out", value)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("bench: error: Invalid value for '--out': empty path; name a folder")
    assert not list(tmp_path.iterdir())  # nothing written where it stands


# -------------------------------------------------------------------------- bench ceiling options
@pytest.mark.parametrize("argv, says", [
    (["--min-run-time", "nan"], "'--min-run-time': 'nan' is not a number."),
    (["--name", ""], "--name '': a file name stem"),
    (["--lengths", "99999999999999999999"], "--lengths 99999999999999999999: 99999999999999999999 tokens in "
                                            "one call, more than 16777216"),
])
def test_bad_bench_ceiling_input_is_one_line_and_exit_2_before_any_timing(argv, says, bench_output, never_timed,
                                                                          tmp_path):
    assert_one_line_error(bench_output, ["ceiling", *argv], tmp_path / "out", says)


# ------------------------------------------------------------------------------ --compare's files
def results(path, machine="cpu-model-x", threads=2, heap="cached", cases=(("sdpa", "sdpa"), ("linear", "core")),
            median_s=0.01):
    """A bench perf CSV of two rows per case."""
    rows = [{**dict.fromkeys(ROW_COLUMNS), "case": case, "impl": impl, "batch": 1, "n": n, "dtype": "float32",
             "device": "cpu", "machine": machine, "threads": threads, "heap": heap, "median_s": median_s,
             "status": "ok"} for case, impl in cases for n in (512, 1024)]
    pd.DataFrame(rows, columns=ROW_COLUMNS).to_csv(path, index=False)
    return path


NOT_CSV = {
    "cells.jsonl": ('{"cell": "a", "status": "ok"}\n{"cell": "b", "status": "ok"}\n'
                    '{"cell": "c", "status": "ok", "seconds": 1.5, "steps": 3, "n": 4}\n',
                    "(Error tokenizing data. C error: Expected 2 fields in line 3, saw 5)"),
    "binary.csv": (b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe", "'utf-8' codec can't decode byte"),
    "empty.csv": ("", "(No columns to parse from file)"),
    "other.csv": ("a,b\n1,2\n", "(missing columns: case, impl, batch, n, dtype, device, machine, threads, median_s)"),
    "text.csv": (",".join(["case", "impl", "batch", "n", "dtype", "device", "machine", "threads", "median_s"])
                 + "\nlinear,core,one,512,float32,cpu,m,auto,fast\n", "(not numbers in columns: batch, threads, median_s)"),
    "heads.csv": (",".join(["case", "impl", "batch", "n", "dtype", "device", "machine", "threads", "median_s", "heads"])
                  + "\nlinear,core,1,512,float32,cpu,m,2,0.01,eight\n", "(not numbers in columns: heads)"),
}
HEADER = "case,impl,batch,n,dtype,device,machine,threads,median_s\n"
# timed rows the gate cannot compare: an empty key (pandas would match it with the other file's),
# a time it would divide by or that is not one; named by their place among the data rows
NOT_CSV.update({
    "no-batch.csv": (HEADER + "linear,core,1,512,float32,cpu,m,2,0.01\nlinear,core,,1024,float32,cpu,m,2,0.01\n",
                     "(data row 2: batch is empty, not a positive whole number, in a timed row)"),
    "half-n.csv": (HEADER + "linear,core,1,512.5,float32,cpu,m,2,0.01\n", "(data row 1: n is 512.5, not a positive whole number"),
    "no-threads.csv": (HEADER + "linear,core,1,512,float32,cpu,m,,0.01\n", "(data row 1: threads is empty, not a positive whole"),
    "zero-time.csv": (HEADER + "linear,core,1,512,float32,cpu,m,2,0\n", "(data row 1: median_s is 0, not a positive time)"),
    "negative-time.csv": (HEADER + "linear,core,1,512,float32,cpu,m,2,-0.01\n", "(data row 1: median_s is -0.01, not a"),
    "inf-time.csv": (HEADER + "linear,core,1,512,float32,cpu,m,2,inf\n", "(data row 1: median_s is inf, not a positive"),
    "no-threads-blank-line.csv": (HEADER + "linear,core,1,512,float32,cpu,m,2,0.01\n\nlinear,core,1,64,float32,cpu,m,0,0.01\n",
                                  "(data row 2: threads is 0, not a positive whole number"),
    "bool-batch.csv": (HEADER + "linear,core,True,512,float32,cpu,m,2,0.01\n", "(not numbers in columns: batch)"),
})


@pytest.mark.parametrize("name", sorted(NOT_CSV))
@pytest.mark.parametrize("side", ["--compare", "--current"])
def test_a_file_that_is_not_a_bench_perf_csv_is_one_line_naming_it(name, side, bench_output, tmp_path):
    content, says = NOT_CSV[name]
    bad = tmp_path / name
    bad.write_bytes(content) if isinstance(content, bytes) else bad.write_text(content)
    good = results(tmp_path / "good.csv")
    files = {"--compare": good, "--current": good, side: bad}
    code, out, err = bench_output("perf", "--compare", files["--compare"], "--current", files["--current"])
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"bench: error: {bad}: not a benchmark CSV ") and says in err


def test_an_untimed_row_may_lack_a_key_and_a_row_not_ok_is_not_compared(bench_output, tmp_path):
    # rows without a median (skipped, not installed) are not the gate's: their empty cells are fine;
    # a timed row whose status is not ok (a CSV edited or merged by hand) is left out of the comparison
    base = results(tmp_path / "BASELINE.csv")
    cur = pd.read_csv(results(tmp_path / "now.csv", median_s=1.0))  # 100× every baseline time
    cur.loc[0, ["batch", "threads", "median_s"]] = [None, None, None]
    cur.loc[1:, "status"] = "error: edited"
    cur.loc[1, "batch"] = None  # a row the gate does not compare is not checked either
    cur.loc[3, "status"] = " ok"  # spaces around it (a hand edit): still ok
    cur.to_csv(tmp_path / "now.csv", index=False)
    code, out, err = bench_output("perf", "--compare", base, "--current", tmp_path / "now.csv")
    assert code == 1 and err == "" and "1 of 1 timings regressed" in out, (out, err)


@pytest.mark.parametrize("side", ["--compare", "--current"])
def test_a_missing_file_is_one_line_naming_it(side, bench_output, tmp_path):
    good = results(tmp_path / "good.csv")
    files = {"--compare": good, "--current": good, side: tmp_path / "missing.csv"}
    code, _, err = bench_output("perf", "--compare", files["--compare"], "--current", files["--current"])
    assert (code, err) == (2, f"bench: error: no benchmark results at {tmp_path / 'missing.csv'}\n")


# ------------------------------------------------------------------------- --compare's outcome
@pytest.mark.parametrize("current, why", [
    (dict(machine="another-cpu"), "differ in machine ('cpu-model-x' in {base}, 'another-cpu' in {cur})"),
    (dict(threads=4), "differ in threads (2 in {base}, 4 in {cur})"),
    (dict(heap="glibc"), "differ in heap ('cached' in {base}, 'glibc' in {cur})"),
    (dict(machine="another-cpu", threads=16),
     "differ in machine ('cpu-model-x' in {base}, 'another-cpu' in {cur}), threads (2 in {base}, 16 in {cur})"),
    (dict(cases=(("local(window=128)", "core"),)),
     "no timed row of {cur} has the case, impl, batch, n, dtype, device, heads and d_head of a timed row of {base}"),
    (dict(median_s=float("nan")), "{cur} has no timed row"),
])
def test_a_compare_that_compared_nothing_fails_and_says_why(current, why, bench_output, tmp_path):
    base = results(tmp_path / "BASELINE.csv")
    cur = results(tmp_path / "quick.csv", **current)
    code, out, err = bench_output("perf", "--compare", base, "--current", cur)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("bench perf: nothing compared: ") and why.format(base=base, cur=cur) in err


def test_a_baseline_of_two_machines_compares_and_explains_by_the_current_machine_s_rows(bench_output, tmp_path):
    one, other = pd.read_csv(results(tmp_path / "a.csv")), pd.read_csv(results(tmp_path / "b.csv", machine="other-cpu"))
    base = tmp_path / "BASELINE.csv"
    pd.concat([one, other]).to_csv(base, index=False)
    code, out, _ = bench_output("perf", "--compare", base, "--current", results(tmp_path / "same.csv"))
    assert code == 0 and "no regression: 4 timings within 10%" in out
    cur = results(tmp_path / "quick.csv", threads=4)
    code, _, err = bench_output("perf", "--compare", base, "--current", cur)
    assert code == 1 and f"the 4 timed rows of {cur} with the case" in err  # each row once, not once per machine
    assert err.rstrip().endswith(f"differ in threads (2 in {base}, 4 in {cur})")  # not in machine: its own rows match


def test_a_run_that_compared_nothing_with_its_baseline_fails(bench_output, monkeypatch, tmp_path):
    from attnbench.runner.environment import cpu_model

    base = results(tmp_path / "BASELINE.csv", machine=cpu_model(), threads=torch.get_num_threads())
    run = results(tmp_path / "run.csv", machine="another-cpu")
    monkeypatch.setattr("attnbench.perf_run.execute", lambda *args, **kwargs: run)  # the run's CSV
    code, _, err = bench_output("perf", "--quick", "--compare", base)
    assert code == 1 and "nothing compared: rows compare only on the same machine, threads and heap" in err


def test_a_baseline_of_another_machine_or_thread_count_is_refused_before_the_run(bench_output, never_timed, tmp_path):
    """Before: the whole run (17 minutes by default) went by before "nothing compared"."""
    base = results(tmp_path / "BASELINE.csv", threads=2)
    code, out, err = bench_output("perf", "--quick", "--threads", "1", "--compare", base, "--out", tmp_path)
    assert code == 2 and out == "" and err.startswith(f"bench: error: --compare {base}: rows compare only on the "
                                                      "same machine, threads and heap, and it differs in machine (")
    assert "threads (2 there, 1 here); this run's timings could be compared with none of its rows" in err


def test_a_baseline_whose_rows_of_this_machine_have_other_threads_is_refused_before_the_run(
        bench_output, never_timed, tmp_path):
    """This machine at 2 threads, another at 1: each alone matches a run here at 1 thread, together none
    (before: the run went ahead, then compared nothing)."""
    from attnbench.runner.environment import cpu_model

    base = results(tmp_path / "BASELINE.csv", machine=cpu_model(), threads=2)
    pd.concat([pd.read_csv(base), pd.read_csv(results(tmp_path / "other.csv", machine="gpu-box", threads=1))]).to_csv(
        base, index=False)
    code, out, err = bench_output("perf", "--quick", "--threads", "1", "--compare", base, "--out", tmp_path)
    assert code == 2 and out == "" and err.startswith(f"bench: error: --compare {base}: rows compare only on the ")
    assert f"its rows of {cpu_model()!r} have threads 2, not 1" in err


def test_a_run_that_would_write_over_its_baseline_is_refused_and_the_baseline_kept(bench_output, never_timed, tmp_path):
    base = results(tmp_path / "p3.csv")
    before = base.read_bytes()
    code, out, err = bench_output("perf", "--quick", "--out", tmp_path, "--name", "p3", "--compare", base)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"--compare {base}: the run would write its results over it" in err
    assert base.read_bytes() == before


def test_a_compare_of_matching_rows_still_passes(bench_output, tmp_path):
    base = results(tmp_path / "BASELINE.csv")
    code, out, err = bench_output("perf", "--compare", base, "--current", results(tmp_path / "same.csv"))
    assert (code, err) == (0, "") and "no regression: 4 timings within 10%" in out


@pytest.mark.parametrize("status", ["mismatch: rel err 3.1e-01 > 0.0001", "oom: out of memory",
                                    "skipped: predicted 60 s per call (> --max-cell-s 45)", None])
def test_a_core_row_the_baseline_timed_and_the_run_did_not_fails_the_gate(status, bench_output, tmp_path):
    # the remaining rows all within 10 %: a gate comparing only them would pass a kernel that broke
    cases = (("sdpa", "sdpa"), ("linear", "core"), ("linear", "layer"))
    base = results(tmp_path / "BASELINE.csv", cases=cases)
    cur = pd.read_csv(results(tmp_path / "now.csv", cases=cases))
    lost = (cur["case"] == "linear") & (cur["impl"] == "core") & (cur["n"] == 1024)
    if status is None:  # no row, where the run has the case's other rows at that length
        cur = cur[~lost]
    else:
        cur.loc[lost, ["median_s", "status"]] = [None, status]
    cur.to_csv(tmp_path / "now.csv", index=False)
    code, out, err = bench_output("perf", "--compare", base, "--current", tmp_path / "now.csv")
    assert code == 1 and err == "", (out, err)
    assert "no regression: 5 timings within 10%" in out
    assert f"1 core or layer timings of {base} were not timed in this run:" in out
    assert f"linear core b=1 n=1024: 10.00 ms in the baseline, not timed here ({status or 'no row'})" in out


def test_a_run_of_fewer_cases_or_lengths_or_without_a_compiler_loses_nothing(bench_output, tmp_path):
    compiled = "local(window=128, kernel=compiled)"
    base = results(tmp_path / "BASELINE.csv", cases=(("sdpa", "sdpa"), ("linear", "core"), ("linear", "layer"),
                                                     (compiled, "core"), (compiled, "layer")))
    cur = pd.read_csv(results(tmp_path / "now.csv", cases=(("sdpa", "sdpa"), ("linear", "core"), ("linear", "layer"))))
    cur = cur[cur["n"] == 512]  # --variants linear,local --lengths 512
    # without a compiler a compiled case writes its core row alone, unavailable, and no layer row
    extra = cur[(cur["case"] == "linear") & (cur["impl"] == "core")].assign(
        case=compiled, median_s=None, status="unavailable: kernel=compiled needs a C++ compiler")
    pd.concat([cur, extra]).to_csv(tmp_path / "now.csv", index=False)
    code, out, err = bench_output("perf", "--compare", base, "--current", tmp_path / "now.csv")
    assert (code, err) == (0, "") and "no regression: 3 timings within 10%" in out and "not timed" not in out
    other = results(tmp_path / "other.csv", threads=4, cases=(("sdpa", "sdpa"),))  # another condition: its own
    assert guard_lost(base, other) == ()


def test_lost_rows_are_matched_on_their_own_machine_threads_and_heap(tmp_path):
    # a CSV of two machines (as BASELINE.csv is): one machine's rows say nothing of the other's
    base = pd.concat([pd.read_csv(results(tmp_path / "a.csv")), pd.read_csv(results(tmp_path / "b.csv", machine="other"))])
    base.to_csv(tmp_path / "BASELINE.csv", index=False)
    now = base.copy()
    broken = (now["machine"] == "other") & (now["case"] == "linear") & (now["n"] == 512)
    now.loc[broken, ["median_s", "status"]] = [None, "mismatch: rel err 1e-1 > 1e-4"]
    now.to_csv(tmp_path / "now.csv", index=False)
    assert [(r.case, r.n, r.status) for r in guard_lost(tmp_path / "BASELINE.csv", tmp_path / "now.csv")] == [
        ("linear", 512, "mismatch: rel err 1e-1 > 1e-4")]  # the other machine's, though this one's is timed
    only_one = now[~((now["machine"] == "other") & (now["case"] == "linear"))]  # it never ran linear
    only_one.to_csv(tmp_path / "one.csv", index=False)
    assert guard_lost(tmp_path / "BASELINE.csv", tmp_path / "one.csv") == ()


def guard_lost(base, current):
    from attnbench.benchmarks import guard

    return guard.compare(guard.read_results(base), guard.read_results(current)).lost


def test_lengths_and_batches_run_in_increasing_order_once_each():
    # a length dropped as too slow or out of memory drops the longer ones only: given 4096 first,
    # an OOM there had dropped 512 after it
    from attnbench import perf_run

    cfg = perf_run.config("linear", "4096,512,512", "4,1", 4096, None, None, 60.0, 2.0, "cpu", "fp32", None,
                          "cached", False)
    assert (cfg.lengths, cfg.batches) == ((512, 4096), (1, 4))


@pytest.mark.parametrize("module", ["attnbench.perf_run", "attnbench.perf_gate", "attnbench.cli_perf"])
def test_the_perf_modules_import_on_their_own(module):
    # perf_run had imported attnbench.cli at the top, which imports cli_perf, which reads
    # perf_run.DTYPE_NAMES before it was defined: a circular import unless attnbench.cli came first
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr


def test_the_gate_s_exit_code_outlives_a_closed_output_pipe(tmp_path):
    # `bench perf --compare B --current C | true`: click's silent exit 1 on the closed pipe read as
    # "a regression"; the gate's own verdict comes through, and one line says the output was dropped
    import subprocess
    import sys

    base, same = results(tmp_path / "BASELINE.csv"), results(tmp_path / "same.csv")
    proc = subprocess.Popen([sys.executable, "-c", "from attnbench.cli import main; main()", "perf", "--compare",
                             str(base), "--current", str(same)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == "bench: the output's reader closed; the gate goes on without printing\n"


def test_check_and_ceiling_outlive_a_closed_output_pipe(tmp_path):
    # `bench check … | true` read as a failed check (click's silent exit 1), and `bench ceiling … | head`
    # lost its timings unwritten: each finishes, writes, and says once that its output was dropped
    import subprocess
    import sys

    command = [sys.executable, "-c", "from attnbench.cli import main; main()"]
    for argv, what in ((["check", "--variants", "linear", "--checks", "shape"], "the check"),
                       (["ceiling", "--lengths", "64,64", "--repeat", "1", "--min-run-time", "0.001", "--threads", "1",
                         "--out", str(tmp_path), "--name", "c"], "the benchmark")):
        proc = subprocess.Popen([*command, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        proc.stdout.close()
        assert proc.wait(timeout=120) == 0
        assert f"bench: the output's reader closed; {what} goes on without printing" in proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.md"]
    assert (pd.read_csv(tmp_path / "c.csv").n == 64).all()  # --lengths 64,64: timed once
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(pd.read_csv(tmp_path / "c.csv").drop_duplicates(["shape", "n"]))


def test_a_passing_gate_says_which_rows_of_the_baseline_it_did_not_compare(bench_output, tmp_path):
    """Before: "no regression: 2 timings" read as if the whole baseline had been checked."""
    one = pd.read_csv(results(tmp_path / "a.csv", cases=(("sdpa", "sdpa"), ("linear", "core"), ("local", "core"))))
    other = pd.read_csv(results(tmp_path / "b.csv", machine="other-cpu"))
    base = tmp_path / "BASELINE.csv"
    pd.concat([one, other]).to_csv(base, index=False)
    cur = pd.read_csv(results(tmp_path / "now.csv"))
    cur[cur["n"] == 512].to_csv(tmp_path / "now.csv", index=False)  # --variants sdpa,linear --lengths 512
    code, out, err = bench_output("perf", "--compare", base, "--current", tmp_path / "now.csv")
    assert (code, err) == (0, "") and "no regression: 2 timings within 10%" in out
    assert (f"not compared: 8 timed rows of {base}: 4 under this run's machine, threads and heap but matching none "
            "of its timed rows (another case, length, batch, dtype or device, or untimed there); 4 timed on another "
            "machine, thread count or heap") in out
    code, out, _ = bench_output("perf", "--compare", base, "--current", results(tmp_path / "all.csv", cases=(
        ("sdpa", "sdpa"), ("linear", "core"), ("local", "core"))))
    assert code == 0 and f"not compared: 4 timed rows of {base}: 4 timed on another machine" in out


@pytest.mark.parametrize("command, written", [("perf", ("t.png",)), ("ceiling", ("t.md",))])
def test_an_earlier_run_s_files_are_not_replaced_without_overwrite(command, written, bench_output, never_timed,
                                                                   tmp_path):
    (tmp_path / written[0]).write_text("an earlier run's")
    code, out, err = bench_output(command, "--out", tmp_path, "--name", "t")
    assert code == 2 and out == "" and err == (f"bench: error: {tmp_path / written[0]} already exists; give another "
                                               "--name or --out, or --overwrite to replace it (t" + written[0][1:] + ")\n")
    assert (tmp_path / written[0]).read_text() == "an earlier run's"
    with pytest.raises(pytest.fail.Exception, match="timed anyway"):  # --overwrite: it goes on to time
        bench_output(command, "--out", tmp_path, "--name", "t", "--overwrite")


def test_an_out_folder_where_no_file_can_be_made_is_said_so(bench_output, never_timed):
    import os

    if not os.path.isdir("/proc/1"):
        pytest.skip("needs Linux's /proc")
    code, _, err = bench_output("perf", "--quick", "--out", "/proc/1", "--name", "t")
    assert code == 2 and err == ("bench: error: --out /proc/1: a folder where no file can be created "
                                 "(No such file or directory)\n")
    code, _, err = bench_output("ceiling", "--out", "/proc/1/results", "--name", "t")
    assert code == 2 and err == ("bench: error: --out /proc/1/results: under /proc/1, a folder where no file can be "
                                 "created (No such file or directory)\n")


def test_an_emulated_dtype_on_cpu_is_warned_of(monkeypatch):
    """fp16 matmuls were 37x slower than fp32 on this machine's CPU: its timings are torch's fallback."""
    from attnbench.perf_run import slow_dtype_warning

    real = torch.bmm

    def bmm(a, b):
        if a.dtype == torch.float16:  # an emulated dtype: far slower than fp32
            import time

            time.sleep(0.01)
        return real(a, b)

    monkeypatch.setattr(torch, "bmm", bmm)
    assert slow_dtype_warning("cpu", torch.float32) is None and slow_dtype_warning("cuda", torch.float16) is None
    assert slow_dtype_warning("cpu", torch.float16).startswith("warning: --dtype fp16 on this CPU: one fp16 matmul ")


@pytest.mark.parametrize("lengths_done", [0, 2])
def test_an_interrupted_run_writes_the_page_of_the_lengths_it_finished_and_names_them(lengths_done, bench_output,
                                                                                     monkeypatch, tmp_path):
    """Before: Ctrl-C kept the CSV alone, and did not say where."""
    rows = pd.read_csv(results(tmp_path / "rows.csv")).to_dict("records")

    def run_suite(cfg, log, save, at_rev):  # as the suite does: one list, appended to after each save
        done = []
        for n in (512, 1024)[:lengths_done]:
            done += [r for r in rows if r["n"] == n]
            save(done)
        done.append({**rows[0], "n": 2048})  # a length begun, not finished: not in the files
        raise KeyboardInterrupt

    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", run_suite)
    code, _, err = bench_output("perf", "--quick", "--out", tmp_path / "out", "--name", "t")
    assert code == 130 and err.endswith("bench: aborted\n")
    if not lengths_done:
        assert "interrupted before the first length was finished: nothing written" in err
        assert not (tmp_path / "out" / "t.csv").exists()
        return
    out = tmp_path / "out"
    assert f"interrupted: 4 rows (n = 512, 1024) kept in {out / 't.csv'}, {out / 't.png'}, {out / 't.md'}" in err
    written = pd.read_csv(out / "t.csv")
    assert sorted(set(written["n"])) == [512, 1024] and len(written) == 4 and (out / "t.png").stat().st_size > 0
    assert written["ratio_vs_sdpa"].notna().sum() == 4  # the ratios a finished run adds: 0.01 s ÷ 0.01 s
    assert "Interrupted: only the lengths finished before it (512, 1024) are here." in (out / "t.md").read_text()


def test_every_case_of_the_default_run_gets_a_colour_of_its_own_in_the_plot():
    """Before: tab10's 10 colours for 14 cases, so multi-head's core and additive's (one line style,
    impl core) were drawn alike."""
    from attnbench.benchmarks.cases import CASES
    from attnbench.benchmarks.outputs import case_palette

    cases = list(dict.fromkeys(c.label for c in CASES))  # the sdpa baselines among them
    for count in (3, len(cases), 25):
        names = [f"case {i}" for i in range(count)] if count == 25 else cases[:count]
        colours = case_palette(names)
        assert list(colours) == names and len(set(colours.values())) == count
