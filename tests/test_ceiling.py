"""The matmul-ceiling benchmark (`benchmarks/ceiling.py`): rows, FLOP formulas, fractions, the
memory-limit skip, its files and its command line. Nothing here asserts on time."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from attnbench.benchmarks import ceiling
from attnbench.benchmarks.ceiling import COLUMNS, GEMMS, SHAPES, main, run_ceiling, write_ceiling
from attnbench.runner.heap import CACHED, CACHED_BYTES, GLIBC
from attnbench.runner.measure import MATMUL_SIZE, count_flops

TINY = dict(lengths=(64, 128), heads=2, d_head=16, repeat=2, min_run_time=0.001)
SQUARE_FLOPS = 2 * MATMUL_SIZE["cpu"] ** 3


@pytest.fixture(autouse=True)
def heap_pins(monkeypatch):
    """The mmap-threshold pins, recorded instead of made: this process's allocator stays as it was."""
    pins = []
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: pins.append(nbytes) or True)
    return pins


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse fixture is not active yet
        mp.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: True)
        return run_ceiling(**TINY)


def by_shape(rows, n):
    return {r["shape"]: r for r in rows if r["n"] == n}


# --------------------------------------------------------------------------------- rows
def test_every_shape_is_timed_at_every_length(rows):
    assert [(r["n"], r["shape"]) for r in rows] == [(n, s) for n in (64, 128) for s in SHAPES]
    for r in rows:
        assert r["status"] == "ok"
        assert r["median_s"] > 0 and r["iqr_s"] >= 0
        assert r["rounds"] == 2 and r["runs"] >= 2
        assert (r["heads"], r["d_head"], r["device"], r["dtype"]) == (2, 16, "cpu", "float32")
        assert r["torch"] == torch.__version__ and r["machine"] and r["heap"] == CACHED
        assert set(r) == set(COLUMNS)


@pytest.mark.parametrize("n", [64, 128])
def test_flops_are_the_formulas(rows, n):
    h, d = 2, 16
    at = by_shape(rows, n)
    assert at["square"]["flops"] == SQUARE_FLOPS
    assert at["qk"]["flops"] == at["pv"]["flops"] == 2 * h * n * n * d
    assert at["qk_block"]["flops"] == at["pv_block"]["flops"] == 2 * h * min(256, n) * d * n
    assert at["sdpa"]["flops"] == at["blocked"]["flops"] == 4 * h * n * n * d
    assert at["qk"]["operands"] == f"({h},{n},{d})@({h},{d},{n})"
    assert at["pv"]["operands"] == f"({h},{n},{n})@({h},{n},{d})"
    assert at["pv_block"]["operands"] == f"({h},{min(256, n)},{n})@({h},{n},{d})"
    assert at["sdpa"]["operands"] == f"q,k,v (1,{h},{n},{d})"


@pytest.mark.parametrize("n", [64, 512])
def test_flop_formulas_match_torchs_flop_counter(n):
    gen = torch.Generator().manual_seed(0)
    for shape in ceiling.shapes_at(n, heads=2, d_head=16, square=32):
        assert count_flops(ceiling._call(shape, "cpu", gen)) == shape.flops, shape.name


def test_fractions_are_against_the_square_matmul_of_the_same_length(rows):
    for n in (64, 128):
        at = by_shape(rows, n)
        peak = at["square"]["flops_per_s"]
        assert peak == SQUARE_FLOPS / at["square"]["median_s"]
        for r in at.values():
            assert r["flops_per_s"] == pytest.approx(r["flops"] / r["median_s"], rel=1e-12)
            assert r["square_flops_per_s"] == peak
            assert r["fraction"] == pytest.approx(r["flops_per_s"] / peak, rel=1e-12)
        assert at["square"]["fraction"] == 1.0


def test_the_heap_is_pinned_before_timing_and_threads_are_restored(heap_pins):
    before = torch.get_num_threads()
    out = run_ceiling(lengths=(32,), heads=1, d_head=8, threads=1, repeat=1, min_run_time=0.001)
    assert heap_pins == [CACHED_BYTES]
    assert {r["threads"] for r in out} == {1}
    assert torch.get_num_threads() == before


def test_a_refused_pin_is_recorded_as_glibc(monkeypatch):
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: False)
    out = run_ceiling(lengths=(32,), heads=1, d_head=8, repeat=1, min_run_time=0.001)
    assert {r["heap"] for r in out} == {GLIBC}


def test_one_round_shows_no_spread_rather_than_an_iqr_of_0():
    logged = []
    out = run_ceiling(lengths=(32,), heads=1, d_head=8, threads=1, repeat=1, min_run_time=0.001, log=logged.append)
    assert {r["iqr_s"] for r in out} == {None} and {r["rounds"] for r in out} == {1}
    assert any(", 1 thread, heap " in line for line in logged), logged  # not '1 threads'
    timed = [line for line in logged if line.startswith("n=   32")]
    assert timed and all(" ms ± n/a " in line for line in timed), timed


# ------------------------------------------------------------------------- memory limit
def test_shapes_over_the_memory_limit_are_skipped_untimed(monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("a skipped shape was timed")

    monkeypatch.setattr("attnbench.benchmarks.ceiling.time_call", no_timing)
    out = run_ceiling(lengths=(64,), heads=2, d_head=16, repeat=1, min_run_time=0.001, limit_gib=1e-9)
    assert [r["shape"] for r in out] == list(SHAPES)
    for r in out:
        assert r["status"].startswith("skipped: needs") and "GiB limit" in r["status"]
        assert r["median_s"] is None and r["flops_per_s"] is None and r["fraction"] is None
        assert r["flops"] > 0 and r["tensor_bytes"] > 1e-9 * 2**30


def test_only_the_shapes_over_the_limit_are_skipped():
    # n = 64, h = 2, d = 16: the attention shapes need 24–48 KiB, the square matmul 12 MiB
    out = run_ceiling(lengths=(64,), heads=2, d_head=16, repeat=1, min_run_time=0.001, limit_gib=1 / 1024)
    at = by_shape(out, 64)
    assert at["square"]["status"].startswith("skipped") and at["square"]["median_s"] is None
    for name in ("qk", "pv", "qk_block", "pv_block", "sdpa"):
        assert at[name]["status"] == "ok" and at[name]["median_s"] > 0
        assert at[name]["fraction"] is None  # no square timed: no reference to divide by
    assert at["pv"]["tensor_bytes"] == 4 * (2 * 64 * 64 + 2 * 64 * 16 + 2 * 64 * 16)


# ------------------------------------------------------------------------------ outputs
def test_write_ceiling_writes_the_csv_and_a_markdown_table(rows, tmp_path):
    paths = write_ceiling(rows, tmp_path / "out", "t")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t.csv", "t.md"]  # no temp files left
    df = pd.read_csv(paths["csv"])
    assert list(df.columns) == list(COLUMNS) and len(df) == len(rows)
    assert df["fraction"].tolist() == pytest.approx([r["fraction"] for r in rows])
    md = paths["md"].read_text()
    assert "| shape | operands (largest n) | n=64 | n=128 |" in md
    for shape in SHAPES:
        assert f"\n| {shape} | " in md
    r = by_shape(rows, 128)["pv"]
    assert f"{r['flops_per_s'] / 1e9:.1f} ({r['fraction']:.0%})" in md
    assert "75 %" in md or "75%" in md
    assert f"{rows[0]['threads']} threads" in md and f"heap {CACHED}" in md and torch.__version__ in md


def test_skipped_shapes_show_their_status_in_the_table():
    rows = [dict.fromkeys(COLUMNS) | {"shape": s, "n": 64, "operands": "x", "status": "skipped: needs 9 GiB"}
            for s in SHAPES]
    assert "skipped: needs 9 GiB" in ceiling.ceiling_table(rows)


def fake_rows(fractions: dict[str, float], n: int = 2048) -> list[dict]:
    """Rows at one length whose square matmul runs at 1e11 FLOP/s and each shape at `fraction` of it."""
    rows = []
    for s, f in fractions.items():
        flops = 1e9 * (1 + len(rows))  # unequal FLOPs: the block pair's rate is a weighted one
        rows.append(dict.fromkeys(COLUMNS) | {"shape": s, "n": n, "d_head": 64, "fraction": f, "flops": flops,
                                              "flops_per_s": f * 1e11, "median_s": flops / (f * 1e11),
                                              "square_flops_per_s": 1e11})
    return rows


def two_lengths(at_1024: dict[str, float], at_4096: dict[str, float]) -> list[dict]:
    return fake_rows({"square": 1.0, **at_1024}, n=1024) + fake_rows({"square": 1.0, **at_4096}, n=4096)


def test_verdict_when_the_block_gemms_stay_below_the_target():
    rows = two_lengths({"qk_block": 0.6, "pv_block": 0.6, "blocked": 0.4, "sdpa": 0.7},
                       {"qk_block": 0.7, "pv_block": 0.7, "blocked": 0.4, "sdpa": 0.72})
    text = ceiling.verdict(rows)
    assert "at n = 1024, 4096" in text and "reach 60%–70% of the square matmul" in text
    assert "(`blocked`) 40%" in text and "SDPA 70%–72%" in text
    assert text.endswith("these GEMM shapes put it out of reach here.")


def test_verdict_when_the_block_gemms_reach_it_but_attention_built_from_them_does_not():
    rows = two_lengths({"qk_block": 0.9, "pv_block": 0.9, "blocked": 0.45, "sdpa": 0.7},
                       {"qk_block": 0.93, "pv_block": 0.93, "blocked": 0.44, "sdpa": 0.71})
    text = ceiling.verdict(rows)
    assert "reach 90%–93%" in text and "so the GEMM shapes are not what holds it below" in text
    assert "out of reach" not in text


def test_verdict_claims_nothing_from_one_fast_gemm_or_lengths_that_disagree():
    """A fast full-size qk does not count (the block pair is what a kernel runs); SDPA reaching the
    target at one length only, or the pair reaching it at one length only, is no conclusion."""
    one_fast_gemm = two_lengths({"qk": 0.8, "qk_block": 0.5, "pv_block": 0.5, "blocked": 0.4, "sdpa": 0.6},
                                {"qk": 0.8, "qk_block": 0.5, "pv_block": 0.5, "blocked": 0.4, "sdpa": 0.6})
    assert ceiling.verdict(one_fast_gemm).endswith("put it out of reach here.")
    sdpa_once = two_lengths({"qk_block": 0.9, "pv_block": 0.9, "blocked": 0.5, "sdpa": 0.5},
                            {"qk_block": 0.9, "pv_block": 0.9, "blocked": 0.5, "sdpa": 0.8})
    assert "meets" not in ceiling.verdict(sdpa_once) and "SDPA 50%–80%" in ceiling.verdict(sdpa_once)
    pair_once = two_lengths({"qk_block": 0.5, "pv_block": 0.5, "blocked": 0.4, "sdpa": 0.6},
                            {"qk_block": 0.9, "pv_block": 0.9, "blocked": 0.4, "sdpa": 0.6})
    assert ceiling.verdict(pair_once).endswith("The lengths disagree; see the table.")


def test_verdict_when_sdpa_meets_the_target_at_every_length():
    rows = two_lengths({"qk_block": 0.8, "pv_block": 0.8, "blocked": 0.6, "sdpa": 0.76},
                       {"qk_block": 0.8, "pv_block": 0.8, "blocked": 0.6, "sdpa": 0.85})
    assert ceiling.verdict(rows).endswith("SDPA meets the target at every length.")


def test_verdict_without_sdpa_or_the_block_pair_says_so():
    assert ceiling.verdict(fake_rows({"square": 1.0, "qk": 0.5, "sdpa": 0.7})).startswith("Too few shapes")


@pytest.mark.parametrize(("n", "block"), [(100, 32), (64, 256), (300, 128)])
def test_blocked_attention_equals_sdpa(n, block):
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, 3, n, 16, generator=gen) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(ceiling.blocked_attention(q, k, v, block=block), expected, atol=1e-5, rtol=1e-5)


def test_blocked_attention_that_disagrees_with_sdpa_is_not_timed(monkeypatch):
    monkeypatch.setattr(ceiling, "blocked_attention", lambda q, k, v: torch.zeros_like(q))
    rows = run_ceiling(lengths=(64,), heads=2, d_head=16, repeat=1, min_run_time=0.001)
    blocked = next(r for r in rows if r["shape"] == "blocked")
    assert blocked["status"].startswith("mismatch: max|Δ|/max|SDPA| = 1.0e+00") and blocked["median_s"] is None
    assert next(r for r in rows if r["shape"] == "sdpa")["median_s"] > 0


def test_the_block_pair_rate_is_total_flops_over_total_time():
    rows = fake_rows({"square": 1.0, "qk_block": 0.9, "pv_block": 0.6})
    qk, pv = rows[1], rows[2]  # 2e9 FLOPs at 0.9, 3e9 at 0.6 → 5e9 / (2e9/0.9e11 + 3e9/0.6e11)
    assert ceiling.block_pair_fractions(rows) == pytest.approx([(qk["flops"] + pv["flops"]) / (
        qk["median_s"] + pv["median_s"]) / 1e11])
    assert ceiling.block_pair_fractions(rows)[0] == pytest.approx(5 / (2 / 0.9 + 3 / 0.6))
    assert set(GEMMS) <= set(SHAPES)


# -------------------------------------------------------------------------- command line
@pytest.mark.parametrize("argv", [
    ["--lengths", "a,b"], ["--lengths", "0,64"], ["--lengths", ""], ["--threads", "0"],
    ["--threads", "99999999999999999999"], ["--repeat", "x"], ["--name", "a/b"], ["--min-run-time", "0"],
    ["--min-run-time", "inf"], ["--bogus"],
])
def test_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--out", str(tmp_path / "out")])
    assert done.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("bench: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was run or written


def test_an_out_under_a_file_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as done:
        main(["--lengths", "32", "--out", str(tmp_path / "file" / "out")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bench: error: --out {tmp_path / 'file' / 'out'}:")


def test_bench_ceiling_writes_the_files(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["--lengths", "32", "--threads", "1", "--repeat", "1", "--min-run-time", "0.001",
              "--out", str(tmp_path), "--name", "check"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert (tmp_path / "check.csv").exists() and (tmp_path / "check.md").exists()
    assert "check.md" in out and "n=   32 sdpa" in out


def test_bench_ceiling_refuses_a_length_past_bench_perfs_token_limit(capsys, tmp_path, monkeypatch):
    """The limit `bench perf` applies (MAX_TOKENS), in one line; 2**64 and more once overflowed the seed."""
    from attnbench.limits import MAX_TOKENS

    monkeypatch.setattr(ceiling, "run_ceiling", lambda *a, **k: pytest.fail("timed anyway"))
    for n in (MAX_TOKENS + 1, 10**20):
        with pytest.raises(SystemExit) as done:
            main(["--lengths", f"64,{n}", "--out", str(tmp_path / "out")])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err == (f"bench: error: --lengths {n}: {n} tokens in one call, more than {MAX_TOKENS} (its inputs "
                       f"alone would take {3 * n * 512 * 4 / 2**30:.3g} GiB in fp32)\n")
    assert not (tmp_path / "out").exists()


def test_bench_ceilings_default_name_is_the_utc_time_to_the_second(capsys, tmp_path, monkeypatch):
    """Like `bench perf`'s: a second run on the same day writes beside the first, not over it."""
    import re

    names = []
    monkeypatch.setattr(ceiling, "run_ceiling", lambda *a, **k: [])
    monkeypatch.setattr(ceiling, "write_ceiling", lambda rows, out, name: names.append(name) or {})
    with pytest.raises(SystemExit) as done:
        main(["--lengths", "32", "--out", str(tmp_path)])
    assert done.value.code == 0
    assert len(names) == 1 and re.fullmatch(r"\d{8}T\d{6}Z-cpu-ceiling", names[0])
