"""The performance benchmark (`bench perf`): outputs, verification before timing, the regression
gate, absent peers, and the row-sampled references it verifies with. Nothing here asserts on time.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from attnbench.benchmarks import guard, peers
from attnbench.benchmarks import references as refs
from attnbench.benchmarks.cases import CASES, CORE, D_MODEL
from attnbench.benchmarks.outputs import heap_paragraph
from attnbench.benchmarks.suite import ROW_COLUMNS, Candidate, PerfConfig, add_ratios, core_check, round_ratios, run_suite
from attnbench.cli import main
from attnbench.runner import heap
from attnbench.variants.base import build_variant
from attnbench.variants.reference import full_attention, linear_attention

TINY = dict(lengths=(32,), batches=(1,), repeat=1, min_run_time=0.001, memory_probes=())


def bench(argv, capsys=None) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code


def quiet(_line: str) -> None:
    pass


# the real pin, for the tests that fake libc itself (the autouse fixture replaces the module's)
REAL_PIN = heap.pin_mmap_threshold


@pytest.fixture(autouse=True)
def heap_pins(monkeypatch):
    """The suite's mmap-threshold pins, recorded instead of made: this process's allocator stays
    as it was (a real pin cannot be undone)."""
    pins = []
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: pins.append(nbytes) or True)
    return pins


# ------------------------------------------------------------------------------ outputs
def test_quick_run_writes_csv_png_and_markdown_with_every_column(tmp_path):
    argv = ["perf", "--quick", "--lengths", "32,64", "--min-run-time", "0.001", "--out", str(tmp_path), "--name", "t"]
    assert bench(argv) == 0
    df = pd.read_csv(tmp_path / "t.csv")
    assert list(df.columns) == list(ROW_COLUMNS)
    assert set(df["n"]) == {32, 64} and set(df["batch"]) == {1}
    assert {c.label for c in CASES} <= set(df["case"])
    assert {"sdpa", "core", "layer", "naive"} <= set(df["impl"])
    ours = df[df["impl"].isin(["core", "layer", "sdpa", "naive"])]
    assert (ours["status"] == "ok").all(), ours[ours["status"] != "ok"][["case", "impl", "status"]]
    assert ours["verified"].all() and (ours["rel_err"] <= ours["tolerance"]).all()
    assert (ours["median_s"] > 0).all() and (ours["peak_bytes"] > 0).all() and (ours["flops"] > 0).all()
    assert ours["ratio_vs_sdpa"].notna().all()
    assert (tmp_path / "t.png").stat().st_size > 10_000
    text = (tmp_path / "t.md").read_text()
    assert "## Targets" in text and "multi-head core within 1.10×" in text
    assert "PASS" in text or "FAIL" in text
    assert set(df["heap"]) == {"cached"} and "mmap threshold pinned at 1 GiB (`--heap cached`)" in text


# ------------------------------------------------------------------------- verification
def test_a_wrong_implementation_is_caught_and_never_timed():
    calls = {"n": 0}

    def inject(cands, batch, n):
        sdpa = next(c for c in cands if c.impl == "sdpa" and c.case.label == "sdpa")

        def wrong():
            calls["n"] += 1
            return sdpa.fn() * 1.01  # 1 % off: a plausible-looking bug

        return cands + [Candidate(sdpa.case, CORE, wrong, sdpa.check)]

    rows = run_suite(PerfConfig(variants=("multi-head",), **TINY), extra=inject, log=quiet)
    injected = [r for r in rows if r["case"] == "sdpa" and r["impl"] == CORE]
    assert len(injected) == 1
    for row in injected:
        assert row["status"].startswith("mismatch") and row["verified"] is False
        assert row["rel_err"] > row["tolerance"]
        assert row["median_s"] is None and row["flops"] is None
    assert calls["n"] == 1  # the verification call only: never timed
    good = [r for r in rows if r["impl"] == "sdpa"]
    assert all(r["status"] == "ok" for r in good)


def test_a_case_past_its_max_tokens_is_skipped_and_its_memory_probe_runs_once_at_the_end(monkeypatch):
    additive = next(c for c in CASES if c.variant == "additive")
    small = dataclasses.replace(additive, max_tokens=32)
    monkeypatch.setattr("attnbench.benchmarks.suite.select_cases", lambda variants, labels=None: [small])
    saved, pinned = [], []
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold",
                        lambda nbytes: pinned.append((nbytes, len(saved))) or True)
    cfg = PerfConfig(**{**TINY, "lengths": (16, 32, 48), "batches": (1, 2), "memory_probes": ((small.label, 48),)})
    rows = run_suite(cfg, log=quiet, save=lambda rows: saved.append([dict(r) for r in rows]))
    by = {(r["impl"], r["n"]): r for r in rows if r["batch"] == 1}
    batched = {(r["impl"], r["n"]): r["status"] for r in rows if r["batch"] == 2}
    assert batched[("layer", 16)] == "ok" and batched[("layer", 32)] == "skipped: timed up to batch × n = 32"
    assert by[("core", 32)]["status"] == "ok" and by[("layer", 32)]["status"] == "ok"
    assert by[("layer", 48)]["status"] == "skipped: timed up to batch × n = 32"
    probe = by[("core", 48)]
    assert probe["status"].startswith("not timed: memory probe") and probe["verified"]
    assert probe["peak_bytes"] > 0 and probe["median_s"] is None
    # 1 GiB before anything was timed; 4 MiB once, for the probe, after all 6 (batch, n) were timed and saved
    assert pinned == [(heap.CACHED_BYTES, 0), (heap.STEADY_BYTES, 6)]
    assert probe["heap"] == "cached"  # the run's condition, though the probe ran at 4 MiB (not timed)
    assert len([r for r in rows if (r["impl"], r["n"], r["batch"]) == ("core", 48, 1)]) == 1
    # saved after each length and at the end: a killed run keeps the lengths it finished
    assert [sorted({(r["batch"], r["n"]) for r in s}) for s in saved][:3] == [
        [(1, 16)], [(1, 16), (1, 32)], [(1, 16), (1, 32), (1, 48)]]
    assert len(saved) == 7 and len(saved[-1]) == len(rows)  # 3 + 3 lengths, then the end
    before_probe = {(r["impl"], r["n"]): r["status"] for r in saved[2]}
    assert before_probe[("core", 48)] == "skipped: timed up to batch × n = 32; memory probed at the end"


@pytest.mark.parametrize("status, verified", [
    ("not timed: one call took 20.0 s; memory and output verified", True),  # already measured
    ("oom: out of memory", False),  # its series ran out of memory at a shorter length
])
def test_no_memory_probe_for_a_cell_already_measured_or_out_of_memory(status, verified, monkeypatch):
    from attnbench.benchmarks import suite

    additive = next(c for c in CASES if c.variant == "additive")
    monkeypatch.setattr(heap, "pin_mmap_threshold", lambda nbytes: pytest.fail("probed anyway"))
    monkeypatch.setattr(suite, "build_candidates", lambda *a: pytest.fail("probed anyway"))
    row = {"case": additive.label, "impl": CORE, "batch": 1, "n": 48, "median_s": None,
           "verified": verified, "status": status}
    rows = [dict(row)]
    cfg = PerfConfig(**{**TINY, "lengths": (48,), "memory_probes": ((additive.label, 48),)})
    suite._memory_probes([additive], cfg, rows, {}, 1.0, quiet)
    assert rows == [row]


def test_the_csv_is_on_disk_before_the_run_ends(tmp_path, monkeypatch):
    from attnbench.benchmarks import suite

    seen = []
    real = suite._memory_probes

    def spy(cases, cfg, rows, *args):  # runs after every length: the partial CSV must be there
        seen.append(pd.read_csv(tmp_path / "t.csv"))
        return real(cases, cfg, rows, *args)

    monkeypatch.setattr(suite, "_memory_probes", spy)
    argv = ["perf", "--variants", "linear", "--lengths", "32,64", "--batch", "1", "--repeat", "1",
            "--min-run-time", "0.001", "--out", str(tmp_path), "--name", "t"]
    assert bench(argv) == 0
    assert set(seen[0]["n"]) == {32, 64} and not list(tmp_path.glob(".tmp-*"))


def test_a_failed_csv_write_keeps_the_previous_csv_and_stops_the_run_with_exit_1(tmp_path, capsys, monkeypatch):
    real = pd.DataFrame.to_csv
    calls = []

    def disk_full_on_second_write(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_text("case,impl\ntorn")  # a partial file, then the disk is full
            raise OSError(28, "No space left on device")
        return real(self, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full_on_second_write)
    argv = ["perf", "--variants", "linear", "--lengths", "32,64", "--batch", "1", "--repeat", "1",
            "--min-run-time", "0.001", "--out", str(tmp_path), "--name", "t"]
    assert bench(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"bench: error: cannot write {tmp_path / 't.csv'}: No space left on device"]
    kept = pd.read_csv(tmp_path / "t.csv")  # the CSV written after n = 32, intact
    assert set(kept["n"]) == {32} and {"core", "layer", "naive"} <= set(kept["impl"])
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_failed_page_write_keeps_the_previous_page(tmp_path, monkeypatch):
    from attnbench.benchmarks.outputs import write_markdown

    rows = run_suite(PerfConfig(variants=("multi-head",), **TINY), log=quiet)
    page = write_markdown(rows, tmp_path / "t.md", csv_name="t.csv", png_name="t.png")
    before = page.read_text()
    real = Path.write_text

    def torn(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])  # half the page, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError, match="No space left"):
        write_markdown(rows, page, csv_name="t.csv", png_name="t.png", note="a second version")
    assert page.read_text() == before and not list(tmp_path.glob(".tmp-*"))


def test_an_out_that_refuses_files_is_one_line_and_exit_2_before_any_timing(tmp_path, capsys, monkeypatch):
    # a read-only directory (simulated: root ignores permissions) is found before the first length
    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", lambda *a, **k: pytest.fail("timed anyway"))
    assert bench(["perf", "--quick", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"bench: error: --out {tmp_path}: Permission denied"


def test_an_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert bench(["perf", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "Traceback" not in err


def test_flop_fractions_use_the_matmul_peak_timed_in_the_same_rounds(monkeypatch):
    from attnbench.benchmarks import suite

    # the start-of-run figure, absurdly high: it only floors a first call's predicted time (none skipped)
    monkeypatch.setattr(suite, "matmul_peak", lambda **kwargs: 1e30)
    rows = run_suite(PerfConfig(variants=("multi-head",), **{**TINY, "lengths": (32, 64), "repeat": 2}), log=quiet)
    timed = [r for r in rows if r["median_s"] is not None]
    assert {r["n"] for r in timed} == {32, 64}
    for n in (32, 64):
        peaks = {r["matmul_peak_flops"] for r in rows if r["n"] == n}
        assert len(peaks) == 1 and 1e6 < peaks.pop() < 1e20  # one measured peak per length, a real FLOP/s
    for r in timed:
        assert math.isclose(r["peak_fraction"], r["flops_per_s"] / r["matmul_peak_flops"])


def test_each_ratio_carries_its_lowest_and_highest_over_the_interleaved_rounds(tmp_path):
    # two rounds: the ratio of their medians (means) lies between the rounds' own ratios
    rows = run_suite(PerfConfig(variants=("linear",), **{**TINY, "repeat": 2}), log=quiet)
    core = next(r for r in rows if r["case"] == "linear" and r["impl"] == CORE)
    assert len(core["round_medians_s"].split(";")) == 2
    names = ["ratio_vs_sdpa"] + (["ratio_vs_peer"] if core["ratio_vs_peer"] is not None else [])
    for name in names:
        lo, hi = core[f"{name}_min"], core[f"{name}_max"]
        assert lo * (1 - 1e-9) <= core[name] <= hi * (1 + 1e-9), (name, lo, core[name], hi)
    # and read back from the CSV, the rounds pair the same way
    from attnbench.benchmarks.outputs import write_csv

    back = pd.read_csv(write_csv(rows, tmp_path / "r.csv")).to_dict("records")
    sdpa = next(r for r in back if r["case"] == "sdpa" and r["impl"] == "sdpa")
    again = round_ratios(next(r for r in back if r["case"] == "linear" and r["impl"] == CORE), sdpa)
    assert [min(again), max(again)] == pytest.approx([core["ratio_vs_sdpa_min"], core["ratio_vs_sdpa_max"]], rel=1e-6)


def test_the_rounds_are_paired_as_they_were_timed(monkeypatch):
    # fake timings by round: multi-head's core 1, 3, 2 s, SDPA 1, 1, 2 s; paired round by round the
    # ratios are 1, 3, 1 (sorting either side would give a highest of 2)
    import collections

    from attnbench.benchmarks import suite
    from attnbench.runner.measure import Timing

    real_build = suite.build_candidates

    def build(*args, **kwargs):
        cands = real_build(*args, **kwargs)
        for cand in cands:
            if cand.fn is not None:
                cand.fn = tagged(cand.fn, (cand.case.label, cand.impl))
        return cands

    def tagged(fn, tag):
        def call():
            return fn()
        call.tag = tag
        return call

    seconds = {("multi-head", CORE): [1.0, 3.0, 2.0], ("sdpa", "sdpa"): [1.0, 1.0, 2.0]}
    rounds = collections.Counter()

    def fake_time_call(fn, **kwargs):
        tag = getattr(fn, "tag", None)  # None: the matmul peak's own call
        rounds[tag] += 1
        return Timing(median_s=seconds.get(tag, [1.0] * 3)[rounds[tag] - 1], iqr_s=0.0, runs=1)

    monkeypatch.setattr(suite, "build_candidates", build)
    monkeypatch.setattr(suite, "time_call", fake_time_call)
    rows = run_suite(PerfConfig(variants=("multi-head",), **{**TINY, "repeat": 3}), log=quiet)
    core = next(r for r in rows if r["case"] == "multi-head" and r["impl"] == CORE)
    assert core["round_medians_s"] == "1.0;3.0;2.0"
    assert (core["ratio_vs_sdpa"], core["ratio_vs_sdpa_min"], core["ratio_vs_sdpa_max"]) == (2.0, 1.0, 3.0)


def test_round_ratios_pair_the_rounds_and_refuse_what_cannot_be_paired():
    a, b = {"round_medians_s": "2;4;9"}, {"round_medians_s": "1;2;3"}
    assert round_ratios(a, b) == [2.0, 2.0, 3.0]
    # round i with round i, not sorted: sorting either side would give [1, 2, 1.5]
    assert round_ratios({"round_medians_s": "1;3;2"}, {"round_medians_s": "1;1;2"}) == [1.0, 3.0, 1.0]
    assert round_ratios({"round_medians_s": "1;nan;2"}, {"round_medians_s": "1;1;0"}) == [1.0]  # unusable rounds dropped
    assert round_ratios(a, {"round_medians_s": "1;2"}) == []  # rounds that differ in number
    assert round_ratios(a, {"round_medians_s": float("nan")}) == []  # a CSV from before they were kept
    assert round_ratios(a, {}) == []
    assert round_ratios({"round_medians_s": 0.5}, {"round_medians_s": 0.25}) == [2.0]  # one round, read back as a number


def test_the_targets_show_each_ratio_s_range_over_the_rounds():
    from attnbench.benchmarks.targets import check_targets

    def row(case, impl, rounds):
        return {**dict.fromkeys(ROW_COLUMNS), "case": case, "impl": impl, "batch": 1, "n": 1024,
                "median_s": sorted(rounds)[1], "round_medians_s": ";".join(map(str, rounds))}

    rows = [row("sdpa", "sdpa", [1.0, 1.0, 1.0]), row("multi-head", CORE, [0.98, 1.02, 1.05])]
    add_ratios(rows)
    target = next(t for t in check_targets(rows) if t.name.startswith("multi-head core within"))
    assert target.status == "PASS" and target.detail == "1024: 1.02× [0.98–1.05]"
    for r in rows:  # one round: no range, and none left over from before
        r["round_medians_s"] = str(r["median_s"])
    add_ratios(rows)
    assert next(t for t in check_targets(rows) if t.name.startswith("multi-head core within")).detail == "1024: 1.02×"
    old = [{k: v for k, v in r.items() if "round" not in k and not k.endswith(("_min", "_max"))} for r in rows]
    assert next(t for t in check_targets(old) if t.name.startswith("multi-head core within")).detail == "1024: 1.02×"


def test_a_fraction_above_the_matmul_peak_or_a_longer_length_timed_faster_is_not_passed():
    """Before: "148 %" of the peak passed the 75 % target, and t(4096)/t(512) = 0.25 the scaling one."""
    from attnbench.benchmarks.targets import check_targets

    def row(case, n, median_s, fraction=None):
        return {**dict.fromkeys(ROW_COLUMNS), "case": case, "impl": CORE, "batch": 1, "n": n, "median_s": median_s,
                "peak_fraction": fraction, "device": "cpu", "status": "ok"}

    rows = [row("multi-head", 1024, 1.0, 1.48), row("multi-head", 2048, 4.0, 0.8), row("linear", 512, 4.0),
            row("linear", 4096, 1.0)]
    targets = {t.name: t for t in check_targets(rows)}
    peak = targets["multi-head core ≥ 75 % of matmul FLOP/s at n ≥ 1024"]
    assert peak.status == "PASS" and peak.detail == "1024: 148% (above the matmul peak: unreliable), 2048: 80%"
    rows[1]["peak_fraction"] = 1.2
    peak = next(t for t in check_targets(rows) if t.name == "multi-head core ≥ 75 % of matmul FLOP/s at n ≥ 1024")
    assert peak.status == "n/a"  # nothing left to judge it by
    scaling = targets["linear: scaling ratio ≤ 10"]
    assert scaling.status == "n/a" and scaling.detail.startswith("t(4096)/t(512) = 0.25: the longer length ran faster")


LONG = (2048, 4096, 8192, 16384)


def _target_rows(device="cpu", **statuses):
    """Rows at LONG (batch 1) in which every target below passes: SDPA, multi-head's and local(window=128)'s
    core, local-attention's and the naive reference's; `statuses` = {"<case> <impl> <n>": status}
    takes a row's time and memory away and gives it that status."""
    def row(case, impl, n, median_s, peak_bytes=None, **more):
        key = f"{case} {impl} {n}"
        status = statuses.get(key, "ok")
        timed = status == "ok"
        return {**dict.fromkeys(ROW_COLUMNS), "case": case, "impl": impl, "batch": 1, "n": n, "device": device,
                "dtype": "float32", "status": status, "median_s": median_s if timed else None,
                "peak_bytes": peak_bytes if timed or status.startswith("not timed") else None,
                "mem_method": "tensor-bytes", **({} if not timed else more)}

    rows = []
    for n in LONG:
        rows += [row("sdpa", "sdpa", n, 1e-9 * n * n),
                 row("multi-head", CORE, n, 1e-9 * n * n, peak_fraction=0.9, sdpa_kernel="flash (CPU)"),
                 row("local(window=128)", CORE, n, 1e-6 * n, peak_bytes=1024.0 * n),
                 row("local(window=128)", "peer:local-attention", n, 2e-6 * n),
                 row("local(window=128)", "naive", n, None, peak_bytes=16.0 * n * n),  # with its window's mask
                 row("multi-head", "naive", n, None, peak_bytes=8.0 * n * n)]
    return rows


def _verdicts(rows, prefix):
    from attnbench.benchmarks.targets import check_targets

    return {t.name: (t.status, t.detail) for t in check_targets(rows) if t.name.startswith(prefix)}


def test_a_core_that_breaks_at_long_n_fails_its_targets_instead_of_being_judged_on_the_rest():
    local = "local(window=128)"
    passing = _verdicts(_target_rows(), local)
    assert {status for status, _ in passing.values()} == {"PASS"}, passing
    assert passing[f"{local}: scaling ratio ≤ 10"][1] == "t(16384)/t(2048) = 8.00"
    oom = {f"{local} core {n}": "oom: out of memory" for n in (8192, 16384)}
    broken = _verdicts(_target_rows(**oom), local)
    assert {status for status, _ in broken.values()} == {"FAIL"}, broken  # before: PASS on 2048 and 4096 alone
    assert broken[f"{local}: scaling ratio ≤ 10"][1] == ("t(16384)/t(2048): no time; not timed at 16384 "
                                                        "(oom: out of memory)")
    assert broken[f"{local}: faster than SDPA from n = 4096"][1].endswith(
        "; not timed at 8192 (oom: out of memory), 16384 (oom: out of memory)")
    assert broken[f"{local}: peak memory at n = 16384 ≤ 1/8 of naive full attention"] == ("FAIL", "core oom: out of memory")
    # too slow to time where SDPA and the peer were timed: slower than both; its scaling and memory unknown
    slow = {f"{local} core 16384": "skipped: predicted 90 s per call (> --max-cell-s 60)"}
    verdicts = {name: status for name, (status, _) in _verdicts(_target_rows(**slow), local).items()}
    assert verdicts == {f"{local}: scaling ratio ≤ 10": "n/a", f"{local}: faster than SDPA from n = 4096": "FAIL",
                        f"{local}: at least as fast as local-attention at every n": "FAIL",
                        f"{local}: faster than local-attention at n ≥ 8192": "FAIL",
                        f"{local}: peak memory at n = 16384 ≤ 1/8 of naive full attention": "n/a"}
    mismatch = {"multi-head core 16384": "mismatch: rel err 3.1e-01 > 0.0001"}
    verdicts = _verdicts(_target_rows(**mismatch), "multi-head core")
    assert verdicts["multi-head core within 1.10× of raw SDPA at every n"][0] == "FAIL"
    assert verdicts["multi-head core ≥ 75 % of matmul FLOP/s at n ≥ 1024"] == (
        "FAIL", "2048: 90%, 4096: 90%, 8192: 90%; not timed at 16384 (mismatch: rel err 3.1e-01 > 0.0001)")


def test_the_matmul_fraction_target_is_a_cpu_one_and_an_estimate_is_labelled_whatever_the_naive_status():
    name = "multi-head core ≥ 75 % of matmul FLOP/s at n ≥ 1024"
    assert _verdicts(_target_rows(), name)[name][0] == "PASS"
    assert _verdicts(_target_rows(device="cuda"), name)[name] == ("n/a", "a CPU target; this run is on cuda")
    # the denominator is naive full attention (multi-head's reference), as issue 8 words it, not
    # local's own naive reference, whose window mask doubles it
    rows = _target_rows(**{"multi-head naive 16384": "oom: out of memory"})
    naive = next(r for r in rows if r["case"] == "multi-head" and r["impl"] == "naive" and r["n"] == 16384)
    naive.update(peak_bytes=8.0 * 16384**2, mem_method="estimate (8.00 B per score entry, fitted at n=128 and n=256)")
    memory = _verdicts(rows, "local(window=128): peak memory")
    assert list(memory.values()) == [("PASS", "16.0 MiB vs naive 2048 MiB (naive estimated) = 1/128")]
    # multi-head's reference short of the case's length (a --confirm run of flagged cells), or not in
    # the run (--variants local): what it needs, 8 B a score entry, not local's own reference (16 B,
    # whose window mask doubles it): before, the verdict's denominator changed with --variants
    partial = [r for r in rows if not (r["case"] == "multi-head" and r["impl"] == "naive" and r["n"] == 16384)]
    alone = [r for r in rows if not (r["case"] == "multi-head" and r["impl"] == "naive")]  # --variants local
    for run in (partial, alone):
        assert list(_verdicts(run, "local(window=128): peak memory").values()) == [
            ("PASS", "16.0 MiB vs naive 16384 MiB (naive full attention's 8 B per score entry: no multi-head in this "
                     "run at 16384) = 1/1024")]


def test_a_memory_fraction_is_written_so_that_its_side_of_one_eighth_shows():
    from attnbench.benchmarks.targets import _fraction

    assert _fraction(2246656, 17825792) == "1/7.9"  # 0.126 of naive: a FAIL once read '= 1/8'
    assert (_fraction(100, 799), _fraction(100, 800), _fraction(100, 2600)) == ("1/7.99", "1/8", "1/26")
    assert _fraction(1_000_000, 7_999_990) == "just under 1/8 (1/7.999990)"


def test_the_naive_estimate_is_the_peak_measured_at_a_longer_length():
    # fitted at n = 128 and 256 as bytes per score entry plus bytes per position: one rate per entry
    # from the shorter length alone had read 12 % high at long n (its O(n·d) tensors folded in)
    from attnbench.benchmarks.suite import build_candidates, calibrate_naive
    from attnbench.runner.measure import peak_memory

    cases = [c for c in CASES if c.label in ("sdpa", "multi-head", "local(window=128)", "linear(causal)")]
    cfg = PerfConfig(**{**TINY, "lengths": (512,)})
    with torch.inference_mode():
        estimates = calibrate_naive(cases, 2, cfg)
        naive = [c for c in build_candidates(cases, 2, 512, cfg, estimates) if c.impl == "naive"]
        assert len(naive) == 3
        for cand in naive:
            measured, _ = peak_memory(cand.fn, device="cpu")
            assert cand.row["peak_bytes"] == pytest.approx(measured, rel=1e-3), cand.case.label
            assert cand.row["mem_method"].endswith("fitted at n=128 and n=256)"), cand.row["mem_method"]
    # from a shortest length under 128 the block need not set the peak (causal linear's is an O(n·d)
    # tensor's at 32 and 64, where a fit gave a twentieth of its peak at 512): one rate, which errs high
    with torch.inference_mode():
        short = calibrate_naive(cases, 2, PerfConfig(**{**TINY, "lengths": (64, 512)}))
        for cand in build_candidates(cases, 2, 512, cfg, short):
            if cand.impl == "naive":
                assert short[cand.case.label].at == (64,) and short[cand.case.label].per_position == 0
                assert cand.row["peak_bytes"] >= peak_memory(cand.fn, device="cpu")[0], cand.case.label


def test_causal_sdpa_counts_the_scores_on_and_below_the_diagonal_and_the_full_form_all():
    rows = run_suite(PerfConfig(variants=("linear",), **{**TINY, "lengths": (32, 64)}), log=quiet)
    flops = {(r["case"], r["impl"], r["n"]): r["flops"] for r in rows if r["flops"] is not None}
    for n in (32, 64):
        full = flops[("sdpa", "sdpa", n)]
        assert full == 4 * 8 * n * n * 64  # b=1, h=8, d=64: two (n × n × d) products
        # its fused kernels skip the tiles above the diagonal: n(n+1)/2 scores, not n² (106 % of
        # the matmul peak on CPU, 122 % on an H200 before)
        assert flops[("sdpa(causal)", "sdpa", n)] == 4 * 8 * (n * (n + 1) // 2) * 64
        # the naive causal form computes the whole matrix, and is counted so
        assert flops[("linear(causal)", "naive", n)] == flops[("linear", "naive", n)]


# ------------------------------------------------------------------------------ the heap
@pytest.mark.parametrize("condition, pins", [("cached", [heap.CACHED_BYTES]), ("glibc", [])])
def test_cpu_timings_run_under_the_chosen_heap_pinned_before_the_matmul_peak(condition, pins, heap_pins, monkeypatch):
    from attnbench.benchmarks import suite

    real_peak = suite.matmul_peak
    at_peak = []
    monkeypatch.setattr(suite, "matmul_peak", lambda **kw: at_peak.append(list(heap_pins)) or real_peak(**kw))
    rows = run_suite(PerfConfig(variants=("multi-head",), heap=condition, **TINY), log=quiet)
    assert heap_pins == pins and at_peak == [pins]  # pinned (or not) before the first timing
    assert {r["heap"] for r in rows} == {condition}
    assert any(r["median_s"] is not None for r in rows)


def test_a_refused_pin_is_logged_and_recorded_as_glibc(monkeypatch):
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: False)
    lines = []
    assert heap.set_heap("cpu", "cached", lines.append) == "glibc"
    assert len(lines) == 1 and "glibc refused the 1 GiB mmap threshold" in lines[0]


def test_cuda_rows_record_the_cuda_allocator_and_pin_nothing(heap_pins):
    for condition in heap.HEAPS:
        assert heap.set_heap("cuda", condition, quiet) == "cuda"
    assert heap_pins == []


def test_an_unknown_heap_is_refused():
    with pytest.raises(Exception, match="heap: 'foo' is not one of cached, glibc"):
        PerfConfig(heap="foo")


def test_bench_perf_heap_option_reaches_the_rows(tmp_path, heap_pins):
    argv = ["perf", "--variants", "linear", "--lengths", "32", "--batch", "1", "--repeat", "1",
            "--min-run-time", "0.001", "--heap", "glibc", "--out", str(tmp_path), "--name", "t"]
    assert bench(argv) == 0
    assert set(pd.read_csv(tmp_path / "t.csv")["heap"]) == {"glibc"} and heap_pins == []
    assert "glibc malloc's defaults (`--heap glibc`)" in (tmp_path / "t.md").read_text()


def test_bench_perf_rejects_an_unknown_heap_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr("attnbench.benchmarks.suite.run_suite", lambda *a, **k: pytest.fail("timed anyway"))
    assert bench(["perf", "--quick", "--heap", "foo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench: error: Invalid value for '--heap': 'foo' is not one of 'cached', 'glibc'."]


@pytest.mark.parametrize("condition, says, never", [
    ("cached", "pinned at 1 GiB", "page-faulted in on every call:"),
    ("glibc", "32 MiB or more", "pinned at 1 GiB"),
    (float("nan"), "glibc malloc's defaults", "pinned at 1 GiB"),  # a CSV from before the column
])
def test_the_page_states_the_heap_the_rows_were_timed_under(condition, says, never):
    text = heap_paragraph(condition)
    assert says in text and never not in text
    assert "does not depend on the heap" in text  # peak memory counts live tensors


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_both_pins_and_a_later_pin_moves_them():
    # in a child process (a pin lasts for the process), loading only runner/heap.py
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('heap', sys.argv[1]); "
            "h = u.module_from_spec(s); s.loader.exec_module(h); "
            "print(h.pin_mmap_threshold(h.CACHED_BYTES), h.pin_mmap_threshold(h.STEADY_BYTES))")
    out = subprocess.run([sys.executable, "-c", code, heap.__file__], capture_output=True, text=True, check=True)
    cached, steady = out.stdout.split()
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: nothing to pin")
    assert steady == "True"  # 4 MiB is within every glibc's documented range
    if cached == "False":  # above mallopt(3)'s documented 32 MiB: newer glibc accept it, older refuse
        pytest.skip("this glibc refuses a 1 GiB mmap threshold (bench perf then records heap glibc)")


class FakeLibc:
    """mallopt that records its calls and accepts only the parameters in `accept`."""

    def __init__(self, accept):
        self.accept, self.calls = accept, []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return int(param in self.accept)


def test_the_pin_sets_the_trim_threshold_at_twice_within_an_int(monkeypatch):
    libc = FakeLibc(accept={heap.M_MMAP_THRESHOLD, heap.M_TRIM_THRESHOLD})
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: libc)
    assert REAL_PIN(4 << 20) is True
    assert REAL_PIN(1 << 30) is True
    assert libc.calls == [(heap.M_MMAP_THRESHOLD, 4 << 20), (heap.M_TRIM_THRESHOLD, 8 << 20),
                          (heap.M_MMAP_THRESHOLD, 1 << 30), (heap.M_TRIM_THRESHOLD, 2**31 - 1)]


def test_a_refused_mmap_threshold_leaves_the_trim_threshold_alone(monkeypatch):
    libc = FakeLibc(accept={heap.M_TRIM_THRESHOLD})  # setting it alone would stop glibc's adjustment
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: libc)
    assert REAL_PIN(1 << 30) is False
    assert libc.calls == [(heap.M_MMAP_THRESHOLD, 1 << 30)]


@pytest.mark.parametrize("error", [OSError("libc.so.6: cannot open shared object file"), AttributeError("mallopt")])
def test_without_glibc_the_pin_is_a_no_op(error, monkeypatch):
    def absent(name):
        raise error

    monkeypatch.setattr(heap.ctypes, "CDLL", absent)
    assert REAL_PIN(1 << 30) is False


def test_the_check_rejects_a_shape_mismatch():
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    check = core_check(refs.softmax_rows, q, k, v, refs.sample_rows(16))
    assert check(torch.randn(1, 2, 16, 4)) == math.inf


# ------------------------------------------------------------------------- the gate
def _results(path, scale=1.0, machine="cpu-model-x", heap="cached"):
    """A results CSV of 6 rows; heap=None: one from before the `heap` column existed."""
    rows = []
    for case, impl in (("sdpa", "sdpa"), ("local(window=128)", "core"), ("linear", "core")):
        for n in (512, 1024):
            rows.append({**dict.fromkeys(ROW_COLUMNS), "case": case, "impl": impl, "batch": 1, "n": n,
                         "dtype": "float32", "device": "cpu", "machine": machine, "threads": 2, "heap": heap,
                         "median_s": 0.01 * n / 512 * scale, "status": "ok"})
    columns = [c for c in ROW_COLUMNS if heap is not None or c != "heap"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def test_the_gate_fails_on_a_20_percent_slowdown_and_passes_equal_numbers(tmp_path, capsys):
    base = _results(tmp_path / "BASELINE.csv")
    same = _results(tmp_path / "same.csv")
    slow = _results(tmp_path / "slow.csv", scale=1.2)
    assert bench(["perf", "--compare", str(base), "--current", str(same)]) == 0
    assert "no regression" in capsys.readouterr().out
    assert bench(["perf", "--compare", str(base), "--current", str(slow)]) == 1
    out = capsys.readouterr().out
    assert "4 of 6 timings regressed" in out and "local(window=128) core b=1 n=1024" in out and "1.20×" in out
    assert "not failed: 2 timings of SDPA, naive references or peers slower by more than 10%" in out
    assert (f"time them again beside the baseline's code before believing it: bench perf --compare {base} "
            f"--current {slow} --confirm") in out


def test_the_gate_lists_a_slower_yardstick_without_failing_and_names_another_torch(tmp_path, capsys):
    """Before: SDPA 1.5× slower alone failed the plain gate (with --confirm: listed, not failed),
    and another torch version or head shape was compared without a word."""
    base = _results(tmp_path / "BASELINE.csv")
    frame = pd.read_csv(_results(tmp_path / "sdpa.csv"))
    frame.loc[frame["impl"] == "sdpa", "median_s"] *= 1.5
    frame["torch"] = "2.99.0+cpu"
    frame.to_csv(tmp_path / "sdpa.csv", index=False)
    base_frame = pd.read_csv(base)
    base_frame["torch"] = "2.13.0+cpu"
    base_frame.to_csv(base, index=False)
    assert bench(["perf", "--compare", str(base), "--current", str(tmp_path / "sdpa.csv")]) == 0
    out = capsys.readouterr().out
    assert "note: the baseline was timed with torch 2.13.0+cpu and this with 2.99.0+cpu" in out
    assert "not failed: 2 timings of SDPA" in out and "sdpa sdpa b=1 n=512" in out and "no regression: 6 timings" in out
    frame["heads"], base_frame["heads"] = 16, 8  # another shape: another benchmark
    frame.to_csv(tmp_path / "wide.csv", index=False)
    base_frame.to_csv(base, index=False)
    assert bench(["perf", "--compare", str(base), "--current", str(tmp_path / "wide.csv")]) == 1
    assert "nothing compared: no timed row of" in capsys.readouterr().err


def test_the_gate_compares_only_the_same_machine_kind(tmp_path, capsys):
    base = _results(tmp_path / "BASELINE.csv")
    other = _results(tmp_path / "other.csv", scale=2.0, machine="another-cpu")
    assert bench(["perf", "--compare", str(base), "--current", str(other)]) == 1  # nothing compared fails
    assert "nothing compared" in capsys.readouterr().err


def test_the_gate_compares_only_the_same_heap_condition(tmp_path, capsys):
    base = _results(tmp_path / "BASELINE.csv", heap="glibc")
    other = _results(tmp_path / "other.csv", scale=2.0, heap="cached")
    assert bench(["perf", "--compare", str(base), "--current", str(other)]) == 1  # nothing compared fails
    err = capsys.readouterr().err
    assert f"the 6 timed rows of {other} with the case, impl, batch, n, dtype, device, heads and d_head of one of {base} " \
           f"differ in heap ('glibc' in {base}, 'cached' in {other})" in err
    result = guard.compare(guard.read_results(base), guard.read_results(other))
    assert (result.compared, result.other_condition, result.regressions) == (0, 6, ())


@pytest.mark.parametrize("current, compared", [("glibc", 6), ("cached", 0)])
def test_a_csv_without_a_heap_column_was_timed_under_glibc(current, compared, tmp_path):
    old = guard.read_results(_results(tmp_path / "old.csv", heap=None))
    assert "heap" not in old.columns
    new = guard.read_results(_results(tmp_path / "new.csv", scale=1.2, heap=current))
    result = guard.compare(old, new)
    assert (result.compared, result.other_condition, len(result.regressions)) == (compared, 6 - compared, compared)


def test_cuda_rows_of_a_csv_without_a_heap_column_match_new_cuda_rows(tmp_path):
    old = pd.read_csv(_results(tmp_path / "old.csv", heap=None)).assign(device="cuda")
    new = pd.read_csv(_results(tmp_path / "new.csv", heap="cuda")).assign(device="cuda")
    assert guard.compare(old, new).compared == 6


def test_the_gate_rejects_a_file_that_is_not_a_benchmark_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert bench(["perf", "--compare", str(bad), "--current", str(bad)]) == 2
    assert "not a benchmark CSV" in capsys.readouterr().err


# ---------------------------------------------------------------------------- peers
def test_absent_peers_are_reported_not_installed(monkeypatch):
    for dist in peers.MODULES:
        monkeypatch.setitem(peers.MODULES, dist, "attnbench_no_such_peer_module")
    rows = run_suite(PerfConfig(variants=("local", "linear"), **TINY), log=quiet)
    peer_rows = [r for r in rows if r["impl"].startswith("peer:")]
    assert len(peer_rows) == 4  # 2 local + 2 linear cases; the compiled cases share them
    assert all(r["status"] == "not installed" and r["median_s"] is None for r in peer_rows)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "core")
    from attnbench.benchmarks.targets import check_targets

    verdicts = {t.name: t for t in check_targets(rows)}
    assert verdicts["linear: at least as fast as linear-attention-transformer at every n"].detail == "not installed"
    shared = verdicts["linear(kernel=compiled): at least as fast as linear-attention-transformer at every n"]
    assert shared.detail == "not installed"  # read from the eager twin's peer row


@pytest.mark.parametrize("dist", list(peers.MODULES))
def test_installed_peers_match_their_own_definition(dist):
    pytest.importorskip(peers.MODULES[dist])
    q, k, v = (torch.randn(1, 2, 256, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    rows = torch.arange(256)
    for causal in (False, True):
        if dist == peers.LOCAL_ATTENTION:
            got = peers.local_attention(window=64, causal=causal)(q, k, v)
            want = refs.softmax_rows(q, k, v, rows, causal=causal, window=65)
        else:
            got = peers.linear_attention(causal=causal)(q, k, v)
            want = refs.peer_linear_rows(q, k, v, rows, causal=causal)
        assert (got - want).abs().max() / want.abs().max() < 1e-5


# ------------------------------------------------------------------- sampled references
@pytest.mark.parametrize("case", [c for c in CASES if c.variant], ids=lambda c: c.label)
def test_row_references_equal_the_project_references(case):
    if "window" in case.opts:  # a window shorter than the sequence
        case = dataclasses.replace(case, options=(("window", 5),))
    torch.manual_seed(0)
    layer = build_variant(case.variant, d_model=D_MODEL // 8, n_heads=case.heads, **case.opts)
    n, d = 23, D_MODEL // 8 // case.heads
    q, k, v = (torch.randn(2, layer.heads, n, d) for _ in range(3))
    want = layer.reference_core(q, k, v, None, case.causal)[0]
    from attnbench.benchmarks.suite import rows_reference

    rows = torch.tensor([0, 4, 11, 22])
    got = rows_reference(case, layer)(q, k, v, rows)
    torch.testing.assert_close(got, want[:, :, rows], rtol=1e-5, atol=1e-6)


def test_sample_rows_cover_both_ends_and_the_middle():
    rows = refs.sample_rows(1000, block=8)
    assert rows[:8].tolist() == list(range(8)) and rows[-8:].tolist() == list(range(992, 1000))
    assert 500 in rows.tolist() and len(rows) == 24
    assert refs.sample_rows(20, block=8).tolist() == list(range(20))


def test_row_references_agree_with_full_attention_on_windows_and_causal():
    q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))
    rows = torch.arange(40)
    for causal in (False, True):
        full = full_attention(q, k, v, causal=causal, window=7)[0]
        torch.testing.assert_close(refs.softmax_rows(q, k, v, rows, causal=causal, window=7), full)
        lin = linear_attention(q, k, v, causal=causal)[0]
        torch.testing.assert_close(refs.linear_rows(q, k, v, rows, causal=causal), lin)


def test_sdpa_kernels_names_the_kernel_sdpa_ran_and_the_math_fallback():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnbench.runner.measure import sdpa_kernels

    q = torch.randn(1, 2, 64, 16)
    sdpa = lambda: F.scaled_dot_product_attention(q, q, q)  # noqa: E731
    kernels, out = sdpa_kernels(sdpa)
    assert kernels == ("flash (CPU)",) and out.shape == q.shape
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_kernels(sdpa)[0] == ("math",)
    assert sdpa_kernels(lambda: q @ q.transpose(-1, -2))[0] == ()


# a fresh process: torch's allocator logs its warning once (then one in a thousand) per process
ALLOCATOR_WARNING_PROBE = """
import os, sys, warnings, torch
from attnbench.runner.measure import allocator_peak
box = {"out": torch.empty(1_000_000)}  # made before profiling

def call():  # as verify() does: each call's output replaces the last one's, freeing it while profiling
    os.write(2, b"a native line\\n")
    print("a python line", file=sys.stderr)
    warnings.warn("a warning of its own")
    box["out"] = torch.empty(1_000_000)

print(allocator_peak(call))
"""


def test_the_compiled_kernels_memory_count_keeps_torchs_allocator_warning_off_stderr_and_nothing_else():
    done = subprocess.run([sys.executable, "-c", ALLOCATOR_WARNING_PROBE], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4000000"
    # before: [W1128 04:34:34.392851362 CPUAllocator.cpp:245] Memory block of unknown size was allocated before …
    assert "CPUAllocator" not in done.stderr and "unknown size" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    shown = [next(i for i, line in enumerate(lines) if text in line)
             for text in ("a native line", "a python line", "UserWarning: a warning of its own")]
    assert shown == sorted(shown), done.stderr  # the other lines all come out, in order


def test_bench_perf_records_the_sdpa_kernel_and_judges_multi_head_by_it(monkeypatch):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnbench.benchmarks.targets import check_targets

    name = "multi-head core runs a fused SDPA kernel (flash / memory-efficient / cuDNN), not the math path"
    rows = run_suite(PerfConfig(variants=("multi-head",), **TINY), log=quiet)
    core = next(r for r in rows if r["case"] == "multi-head" and r["impl"] == "core")
    assert core["sdpa_kernel"] == "flash (CPU)"
    assert next(r for r in rows if r["impl"] == "sdpa")["sdpa_kernel"] == "flash (CPU)"
    assert next(t for t in check_targets(rows) if t.name == name).status == "PASS"
    with sdpa_kernel([SDPBackend.MATH]):  # SDPA forced onto its unfused path
        rows = run_suite(PerfConfig(variants=("multi-head",), **TINY), log=quiet)
    verdict = next(t for t in check_targets(rows) if t.name == name)
    assert verdict.status == "FAIL" and verdict.detail == "math at every n"
    old = [{k: v for k, v in r.items() if k != "sdpa_kernel"} for r in rows]  # a CSV from before the column
    assert next(t for t in check_targets(old) if t.name == name).status == "n/a"


def test_gpu_rows_get_the_fraction_of_the_rated_dense_peak_and_the_page_a_table(tmp_path):
    from attnbench.benchmarks.outputs import write_markdown
    from attnbench.benchmarks.rated_peaks import rated_peak
    from attnbench.benchmarks.suite import _row
    from attnbench.runner.measure import Timing

    assert rated_peak("NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(989.4e12)
    assert rated_peak("NVIDIA H100 PCIe", "bfloat16") == pytest.approx(756.5e12)  # not the SXM's
    assert rated_peak("NVIDIA H200 NVL", "bfloat16") is None  # NVL parts: unknown, not the SXM's
    assert rated_peak("NVIDIA H200", "float32") is None and rated_peak("Intel(R) Xeon(R)", "bfloat16") is None
    common = {"d_head": None, "dtype": "bfloat16", "device": "cuda", "matmul_peak_flops": 700e12,
              "machine": "NVIDIA H200", "threads": 1, "heap": "cuda", "torch": "x", "git_sha": "y"}
    case = next(c for c in CASES if c.label == "multi-head")
    a, b = torch.empty(10_000, 10_000, device="meta"), torch.empty(10_000, 2474, device="meta")
    cand = Candidate(case, CORE, lambda: None, lambda out: 0.0, meta_fn=lambda: a @ b)  # 494.8 GFLOP
    cand.times = [Timing(median_s=1e-3, iqr_s=0.0, runs=1)]  # so 494.8 TFLOP/s
    row = _row(cand, 1, 4096, common, 700e12, {})
    assert row["rated_peak_fraction"] == pytest.approx(494.8 / 989.4)
    page = write_markdown([row], tmp_path / "gpu.md", csv_name="gpu.csv", png_name="gpu.png").read_text()
    assert "rated dense peak" in page and "| multi-head | core | 495 (50%) |" in page
    cpu_row = _row(cand, 1, 4096, {**common, "device": "cpu", "machine": "Intel(R) Xeon(R)"}, 700e12, {})
    assert cpu_row["rated_peak_fraction"] is None


@pytest.mark.parametrize("case", [c for c in CASES if not c.compiled], ids=lambda c: c.label)
def test_every_case_verifies_in_bf16_against_its_fp32_reference(case):
    """The CUDA run's dtype, on CPU at the shortest quick length: each implementation's output is
    checked against the fp32 reference (no bf16 parameter mixed into it) within bf16's tolerance.
    Compiled kernels are left out: they share these references and compile for seconds. (Not
    shorter: local-attention's peer disagrees with its own definition below its window.)"""
    from attnbench.benchmarks.suite import QUICK_LENGTHS, build_candidates, verify

    cfg = PerfConfig(variants=(case.label,), dtype=torch.bfloat16, **TINY)
    with torch.inference_mode():
        cands = [c for c in build_candidates([case], 1, min(QUICK_LENGTHS), cfg, {}) if c.fn is not None]
        for cand in cands:
            verify(cand, cfg)
    assert cands and {(c.impl, c.status) for c in cands} == {(c.impl, "verified") for c in cands}


def test_a_same_as_case_takes_its_twins_naive_estimate_so_alone_at_a_length_it_keeps_the_limit():
    # with PerfConfig.cells a `same_as` case can run at a length where its twin does not: its naive
    # row is then its own, and must still be skipped past --naive-limit-gib (not run unestimated)
    from attnbench.benchmarks.suite import build_candidates, calibrate_naive

    twins = [c for c in CASES if c.label in ("sdpa", "linear", "linear(kernel=compiled)")]
    estimates = calibrate_naive(twins, 1, PerfConfig(**TINY))
    assert estimates["linear(kernel=compiled)"] == estimates["linear"]
    alone = [c for c in twins if c.label != "linear"]
    cfg = PerfConfig(**{**TINY, "naive_limit_gib": 0.0})
    naive = [c for c in build_candidates(alone, 1, 48, cfg, estimates) if c.impl == "naive"]
    assert [c.case.label for c in naive] == ["linear(kernel=compiled)"]
    assert naive[0].fn is None and naive[0].status.startswith("skipped: would need"), naive[0].status



def test_split_k_linear_is_the_library_s_non_causal_form():
    from attnbench.benchmarks.linear_state import split_k_linear
    from attnbench.variants.linear import global_linear_attention

    q, k, v = (torch.randn(2, 3, 48, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for splits in (1, 4, 48):
        torch.testing.assert_close(split_k_linear(q, k, v, splits), global_linear_attention(q, k, v))


@pytest.mark.compiler
def test_the_linear_state_benchmark_rehearses_on_cpu(capsys):
    from attnbench.benchmarks import linear_state

    assert linear_state.main(["--device", "cpu", "--lengths", "64", "--splits", "4", "--min-run-time", "0.01"]) == 0
    out = capsys.readouterr().out
    for label in ("eager (library)", "compiled (library)", "eager split-K 4", "compiled split-K 4"):
        assert f"n=64: {label} " in out and "x sdpa, err " in out
    assert "where compiled linear's time goes" in out and "aten::bmm" in out
    if not torch.cuda.is_available():
        assert linear_state.main(["--lengths", "64"]) == 2  # CUDA asked for, none here


def test_a_skip_or_limit_below_one_unit_keeps_its_first_two_digits():
    from attnbench.benchmarks.suite import _figure

    # before: "one call took 0.0 s", "skipped: predicted 0 s per call (> --max-cell-s 0.08)"
    assert [_figure(x, d) for x, d in [(90, 0), (20.0, 1), (0.0123, 0), (0.07, 1), (1.5, 0)]] == [
        "90", "20.0", "0.012", "0.070", "1.5"]
