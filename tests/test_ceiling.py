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
    monkeypatch.setattr("attnbench.benchmarks.ceiling.pin_mmap_threshold", lambda nbytes: pins.append(nbytes) or True)
    return pins


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse fixture is not active yet
        mp.setattr("attnbench.benchmarks.ceiling.pin_mmap_threshold", lambda nbytes: True)
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
    monkeypatch.setattr("attnbench.benchmarks.ceiling.pin_mmap_threshold", lambda nbytes: False)
    out = run_ceiling(lengths=(32,), heads=1, d_head=8, repeat=1, min_run_time=0.001)
    assert {r["heap"] for r in out} == {GLIBC}


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


def test_verdict_below_the_target_names_the_best_gemm_and_sdpa():
    text = ceiling.verdict(fake_rows({"square": 1.0, "qk": 0.45, "pv": 0.66, "qk_block": 0.45,
                                      "pv_block": 0.5, "sdpa": 0.74}))
    assert "66%" in text and "pv at n = 2048" in text and "SDPA 74%" in text
    assert "None reaches it" in text and "no path built from explicit GEMMs can beat the fused kernel" in text


def test_verdict_when_a_gemm_reaches_the_target_but_sdpa_does_not():
    text = ceiling.verdict(fake_rows({"square": 1.0, "qk": 0.47, "pv": 0.7, "qk_block": 0.93,
                                      "pv_block": 0.9, "sdpa": 0.7}))
    assert "93%" in text and "qk_block at n = 2048" in text and "SDPA 70%" in text
    assert "None reaches" not in text and "do not put the target out of reach" in text


def test_verdict_blames_the_softmax_when_the_blocks_reach_the_target_but_blocked_attention_does_not():
    text = ceiling.verdict(fake_rows({"square": 1.0, "qk_block": 0.93, "pv_block": 0.9, "blocked": 0.44,
                                      "sdpa": 0.7}))
    assert "(`blocked`) reaches 44%" in text and "not the GEMM shapes" in text
    assert "(SDPA is the faster of the two)" in text


@pytest.mark.parametrize(("n", "block"), [(100, 32), (64, 256), (300, 128)])
def test_blocked_attention_equals_sdpa(n, block):
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, 3, n, 16, generator=gen) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(ceiling.blocked_attention(q, k, v, block=block), expected, atol=1e-5, rtol=1e-5)


def test_verdict_when_sdpa_meets_the_target():
    text = ceiling.verdict(fake_rows({"square": 1.0, "qk": 0.8, "pv": 0.9, "qk_block": 0.8, "pv_block": 0.8,
                                      "sdpa": 0.85}))
    assert text.endswith("SDPA meets it.")


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
    ["--repeat", "x"], ["--name", "a/b"], ["--min-run-time", "0"], ["--bogus"],
])
def test_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--out", str(tmp_path / "out")])
    assert done.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("ceiling: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was run or written


def test_main_writes_the_files(capsys, tmp_path):
    main(["--lengths", "32", "--threads", "1", "--repeat", "1", "--min-run-time", "0.001",
          "--out", str(tmp_path), "--name", "check"])
    out = capsys.readouterr().out
    assert (tmp_path / "check.csv").exists() and (tmp_path / "check.md").exists()
    assert f"wrote {tmp_path / 'check.md'}" in out and "n=   32 sdpa" in out
