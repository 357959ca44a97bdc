"""`bench perf --against REV`: a variant's core at another git revision, timed beside the working
tree's in the same rounds, and the gate on that side-by-side ratio. Nothing here asserts on time."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnbench.benchmarks import revision
from attnbench.benchmarks.cases import select_cases
from attnbench.benchmarks.guard import side_by_side
from attnbench.benchmarks.suite import PerfConfig, run_suite
from attnbench.cli import main
from attnbench.errors import AttnbenchError
from attnbench.runner.environment import cpu_model
from attnbench.variants import base as variant_base
from attnbench.variants import linear
from attnbench.variants.base import VARIANTS, build_variant

VARIANTS_DIR = Path(linear.__file__).parent
IN_GIT = subprocess.run(["git", "rev-parse", "HEAD"], cwd=VARIANTS_DIR, capture_output=True).returncode == 0
needs_git = pytest.mark.skipif(not IN_GIT, reason="attnbench is not a git checkout here")
TINY = dict(lengths=(32,), batches=(1,), repeat=1, min_run_time=0.001, memory_probes=())


@pytest.fixture(autouse=True)
def heap_pins(monkeypatch):
    """The suite's heap pin is recorded, not made: this process's allocator stays as it was."""
    monkeypatch.setattr("attnbench.runner.heap.pin_mmap_threshold", lambda nbytes: True)


def bench(argv) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code


@needs_git
def test_head_classes_load_beside_the_registered_ones_and_compute_the_same():
    before = {name: VARIANTS.get(name).obj for name in ("linear", "local")}
    short, classes = revision.revision_classes("HEAD", ["linear", "local"])
    assert short and set(classes) == {"linear", "local"}
    assert {name: VARIANTS.get(name).obj for name in before} == before  # the registry is untouched
    for name, options in (("linear", {}), ("local", {"window": 8})):
        assert classes[name] is not before[name] and classes[name].__name__ == before[name].__name__
        old = revision.build_at(classes[name], name, 32, 4, options)
        new = build_variant(name, d_model=32, n_heads=4, **options)
        q, k, v = (torch.randn(2, 4, 40, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
        want = new.core(q, k, v, None, True, False)[0]
        assert torch.allclose(old.core(q, k, v, None, True, False)[0], want, atol=1e-5)


def test_an_unknown_revision_is_one_line_from_git():
    with pytest.raises(AttnbenchError, match=r"^--against no-such-rev: not a commit of the git checkout attnbench "
                                             r"runs from$"):
        revision.revision_classes("no-such-rev", ["linear"])


def test_a_module_that_no_longer_loads_is_one_line(monkeypatch):
    def fake_git(args, cwd, rev):
        return "abc1234" if args[0] == "rev-parse" else "from attnbench.variants.base import Gone\n"
    monkeypatch.setattr(revision, "_git", fake_git)
    register = variant_base.register_variant
    with pytest.raises(AttnbenchError, match=r"^--against old: linear.py there does not load with this "
                                             r"attnbench: ImportError: cannot import name 'Gone'"):
        revision.revision_classes("old", ["linear"])
    assert variant_base.register_variant is register  # the capture was undone
    assert not [name for name in sys.modules if name.startswith("attnbench._at_abc1234")]


def test_a_module_that_registers_another_name_is_refused(monkeypatch):
    register = variant_base.register_variant
    source = ("from attnbench.variants.base import register_variant\n"
              "@register_variant('other')\nclass Other:\n    pass\n")
    monkeypatch.setattr(revision, "_git", lambda args, cwd, rev: "abc1234" if args[0] == "rev-parse" else source)
    with pytest.raises(AttnbenchError, match="linear.py there registers no variant 'linear'"):
        revision.revision_classes("old", ["linear"])
    assert VARIANTS.get("linear").obj is linear.LinearAttention and variant_base.register_variant is register


def test_a_variant_missing_at_the_revision_is_left_out_with_a_line(monkeypatch):
    def fake_git(args, cwd, rev):
        if args[0] == "rev-parse":
            return "abc1234"
        raise AttnbenchError("fatal: path 'variants/linear.py' exists on disk, but not in 'abc1234'")
    monkeypatch.setattr(revision, "_git", fake_git)
    lines = []
    assert revision.revision_classes("old", ["linear"], lines.append) == ("abc1234", {})
    assert lines == ["--against old: linear not compared (fatal: path 'variants/linear.py' exists on disk, "
                     "but not in 'abc1234')"]


@needs_git
def test_a_variant_whose_core_lives_in_another_module_is_left_out():
    """dot-product inherits multi-head's core, which --against would take from the working tree."""
    lines = []
    _, classes = revision.revision_classes("HEAD", ["dot-product", "linear"], lines.append)
    assert set(classes) == {"linear"}
    assert len(lines) == 1 and lines[0].startswith("--against HEAD: dot-product not compared (its core comes from "
                                                   "attnbench.variants.multi_head")


@needs_git
def test_the_suite_verifies_and_times_the_revision_beside_the_working_tree():
    rows = run_suite(PerfConfig(variants=("linear",), against="HEAD", **TINY), log=lambda line: None)
    short = revision.revision_classes("HEAD", ["linear"])[0]
    at_rev = {r["case"]: r for r in rows if r["impl"] == f"core@{short}"}
    assert set(at_rev) == {c.label for c in select_cases(["linear"]) if c.variant}
    compared = 0
    for r in at_rev.values():
        if r["options"] == "kernel=compiled" and r["status"].startswith("unavailable"):
            # HEAD predates the option (before it was committed): left out, with why
            assert "kernel" in r["status"] and r["median_s"] is None
            continue
        assert r["status"] == "ok" and r["verified"] and r["rel_err"] <= r["tolerance"] and r["median_s"] > 0
        compared += 1
    assert compared >= 2 and side_by_side(rows).compared == 2 * compared  # each core's layer too


def test_a_case_whose_options_the_revision_lacks_is_marked_unavailable_and_the_rest_compared():
    class Before(variant_base.ProjectedAttention):
        """`linear` as at a revision before `kernel` existed: chunk_size its only option, eager."""

        spec = dataclasses.replace(linear.LinearAttention.spec, options=linear.LinearAttention.spec.options[:1])
        reference_core = linear.LinearAttention.reference_core

        def core(self, q, k, v, key_padding_mask, causal, need_weights):
            if causal:
                return linear.causal_linear_attention(q, k, v, chunk_size=self.options["chunk_size"] or None), None
            return linear.global_linear_attention(q, k, v), None

    rows = run_suite(PerfConfig(variants=("linear",), **TINY), log=lambda line: None,
                     at_rev=("abc1234", {"linear": Before}))
    at_rev = {r["case"]: r for r in rows if r["impl"] == "core@abc1234"}
    for label, r in at_rev.items():
        if "kernel=compiled" in label:
            assert r["status"] == "unavailable: linear: unknown option 'kernel' (options: chunk_size)"
            assert r["median_s"] is None
        else:
            assert r["status"] == "ok" and r["verified"]
    assert len(at_rev) == 4 and side_by_side(rows).compared == 4  # the eager cases' cores and layers


def row(case, impl, n, seconds):
    return {"case": case, "impl": impl, "batch": 1, "n": n, "median_s": seconds}


def test_side_by_side_flags_only_a_working_tree_slower_than_tolerance():
    rows = [row("linear", "core", 512, 1.2), row("linear", "core@abc", 512, 1.0),   # 1.20×: regressed
            row("linear", "core", 1024, 1.05), row("linear", "core@abc", 1024, 1.0),  # 1.05×: within 10 %
            row("local", "core", 512, 0.5), row("local", "core@abc", 512, 1.0),      # faster
            row("local", "core@abc", 1024, 1.0), row("local", "core", 1024, None),   # not timed: lost
            row("linear", "layer", 512, 9.0)]
    result = side_by_side(rows)
    assert result.compared == 3
    assert [str(lost) for lost in result.lost] == [
        "local core b=1 n=1024: 1000.00 ms in the baseline, not timed here (no time recorded)"]
    # read back from a CSV, an untimed core is NaN: not compared either
    frame = pd.DataFrame(rows).to_csv(index=False)
    assert side_by_side(pd.read_csv(io.StringIO(frame)).to_dict("records")).compared == 3
    assert [(r.case, r.impl, r.n, r.ratio) for r in result.regressions] == [("linear", "core vs core@abc", 512, 1.2)]


@needs_git
def test_bench_perf_against_writes_the_rows_and_reports(tmp_path, capsys):
    argv = ["perf", "--variants", "linear", "--lengths", "32", "--batch", "1", "--repeat", "1", "--min-run-time",
            "0.001", "--against", "HEAD", "--out", str(tmp_path), "--name", "t"]
    code = bench(argv)
    out = capsys.readouterr().out
    df = pd.read_csv(tmp_path / "t.csv")
    compared = df[df["impl"].str.contains("@") & df["median_s"].notna()]
    assert len(compared) >= 4  # core and layer of the eager cases; the compiled ones too once HEAD has the option
    # the same code on both sides: noise may still tip one ratio over 10 %; either way it is reported
    assert code in (0, 1)
    if code == 0:
        assert f"no regression: {len(compared)} timings within 10% of HEAD's code timed beside it" in out
    else:
        assert "regressed by more than 10% against HEAD's code timed beside it" in out


@needs_git
def test_against_fails_a_working_tree_kernel_whose_output_is_wrong(tmp_path, capsys, monkeypatch):
    from attnbench.benchmarks import suite

    build = suite.build_candidates

    def broken(*args, **kwargs):  # this tree's linear core 1 % off; HEAD's, beside it, as it is
        candidates = build(*args, **kwargs)
        for c in candidates:
            if c.case.label == "linear" and c.impl == "core":
                c.fn = lambda f=c.fn: f() * 1.01
        return candidates

    monkeypatch.setattr(suite, "build_candidates", broken)
    code = bench(["perf", "--variants", "linear", "--lengths", "32", "--batch", "1", "--repeat", "1", "--min-run-time",
                  "0.001", "--tolerance", "9", "--against", "HEAD", "--out", str(tmp_path), "--name", "t"])
    out = capsys.readouterr().out
    assert code == 1  # before: the rows timed on both sides passed, and so did the gate
    assert "1 core or layer timings of HEAD's code were not timed in this run:" in out
    assert re.search(r"linear core b=1 n=32: [\d.]+ ms in the baseline, not timed here \(mismatch", out), out


@pytest.mark.parametrize(("argv", "says"), [
    (["--against", "no-such-rev"], "--against no-such-rev: "),
    (["--against", "HEAD", "--compare", "x.csv", "--current", "y.csv"], "it cannot check --current"),
])
def test_bad_against_is_one_line_and_exit_2(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame([{"case": "linear", "impl": "core", "batch": 1, "n": 32, "dtype": "float32", "device": "cpu",
                   "machine": "m", "threads": 1, "median_s": 1.0}]).to_csv("x.csv", index=False)
    assert bench(["perf", "--variants", "linear", "--lengths", "32", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: ")
    assert says in err[0]
    assert not (tmp_path / "out").exists()  # refused before anything was created or timed


def test_a_module_that_no_longer_loads_stops_bench_perf_before_out_is_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(revision, "_git", lambda args, cwd, rev: "abc1234" if args[0] == "rev-parse" else "1/0\n")
    argv = ["perf", "--variants", "linear", "--lengths", "32", "--against", "old", "--out", str(tmp_path / "out")]
    assert bench(argv) == 2
    assert capsys.readouterr().err.strip() == ("bench: error: --against old: linear.py there does not load with "
                                               "this attnbench: ZeroDivisionError: division by zero")
    assert not (tmp_path / "out").exists()


@needs_git
def test_nothing_to_compare_is_refused_before_the_run(tmp_path, capsys):
    """Before: the whole benchmark ran, then failed with "nothing compared" (exit 1)."""
    argv = ["perf", "--variants", "dot-product", "--lengths", "32", "--batch", "1", "--repeat", "1",
            "--min-run-time", "0.001", "--against", "HEAD", "--out", str(tmp_path / "out"), "--name", "t"]
    assert bench(argv) == 2
    captured = capsys.readouterr()
    assert "dot-product not compared" in captured.out
    assert captured.err.strip() == ("bench: error: --against HEAD: none of dot-product can be timed at that revision "
                                    "(above); nothing would be compared")
    assert not (tmp_path / "out").exists()


@needs_git
def test_a_run_that_timed_no_pair_is_a_failure(tmp_path, capsys, monkeypatch):
    from attnbench.benchmarks import suite

    build = suite.build_candidates

    def untimed(*args, **kwargs):  # every core and layer, this tree's and HEAD's, fails its check
        candidates = build(*args, **kwargs)
        for c in candidates:
            if c.impl.startswith(("core", "layer")):
                c.fn = lambda f=c.fn: f() * 1.01
        return candidates

    monkeypatch.setattr(suite, "build_candidates", untimed)
    argv = ["perf", "--variants", "linear", "--lengths", "32", "--batch", "1", "--repeat", "1",
            "--min-run-time", "0.001", "--against", "HEAD", "--out", str(tmp_path), "--name", "t"]
    assert bench(argv) == 1
    assert "bench perf: no core or layer was timed beside HEAD's; nothing compared" in capsys.readouterr().err


def test_the_page_shows_the_side_by_side_ratios(tmp_path):
    from attnbench.benchmarks.outputs import write_markdown
    from attnbench.benchmarks.suite import ROW_COLUMNS

    base = dict.fromkeys(ROW_COLUMNS) | {"batch": 1, "status": "ok", "device": "cpu", "heap": "cached", "iqr_s": 0.0,
                                         "repeats": 1}
    rows = [base | row("linear", "core", 512, 1.2), base | row("linear", "core@abc", 512, 1.0),
            base | row("linear", "core", 1024, 2.0), base | row("linear", "core@abc", 1024, None)]
    text = write_markdown(rows, tmp_path / "p.md", csv_name="p.csv", png_name="p.png").read_text()
    assert "## Core ÷ core@abc: this tree's time over that revision's" in text
    assert "| linear | 1 | 1.20× | — |" in text
    # with the rounds kept, each ratio gets its lowest and highest over them
    rows[0]["round_medians_s"], rows[1]["round_medians_s"] = "1.1;1.2;1.4", "1.0;1.0;1.0"
    text = write_markdown(rows, tmp_path / "p.md", csv_name="p.csv", png_name="p.png").read_text()
    assert "| linear | 1 | 1.20× [1.10–1.40] | — |" in text


# -------------------------------------------------------- layers beside their revision's, and --confirm
def test_side_by_side_pairs_each_layer_with_its_revisions_layer():
    rows = [row("local", "core", 512, 1.0), row("local", "core@abc", 512, 1.0),
            row("local", "layer", 512, 1.5), row("local", "layer@abc", 512, 1.0),   # the layer regressed
            row("local", "layer", 1024, 1.0), row("local", "core@abc", 1024, 0.5)]  # no layer@: not compared
    result = side_by_side(rows)
    assert result.compared == 2
    assert [(r.impl, r.n, r.ratio) for r in result.regressions] == [("layer vs layer@abc", 512, 1.5)]


@needs_git
def test_the_layer_at_the_revision_is_verified_and_timed_beside_the_layer():
    rows = run_suite(PerfConfig(variants=("local",), against="HEAD", **TINY), log=lambda line: None)
    short = revision.revision_classes("HEAD", ["local"])[0]
    impls = [r["impl"] for r in rows if r["case"] == "local(window=128)"]
    assert impls.index(f"core@{short}") == impls.index("core") + 1  # each beside its own
    assert impls.index(f"layer@{short}") == impls.index("layer") + 1
    layer_at = next(r for r in rows if r["case"] == "local(window=128)" and r["impl"] == f"layer@{short}")
    assert layer_at["status"] == "ok" and layer_at["verified"] and layer_at["median_s"] > 0
    # the gate pairs each layer@ with its layer: a 0 tolerance flags every pair slower by any amount
    compared = side_by_side(rows, tolerance=0)
    assert compared.compared >= 4  # core and layer of both eager windows
    layers = {(r["case"], r["n"]): r["median_s"] for r in rows if r["impl"] == "layer" and r["median_s"]}
    slower = {(r.case, r.n) for r in compared.regressions if r.impl == f"layer vs layer@{short}"}
    assert slower == {key for key, t in layers.items() if key in {(r["case"], r["n"]) for r in rows
                      if r["impl"] == f"layer@{short}" and r["median_s"] and t > r["median_s"]}}


def _gate_rows(path, *, scale, sha, impls=("core", "layer", "naive"), case="linear", n=32, batches=(1,), peak=None,
               machine=None, **columns):
    """A results CSV: `case`'s rows and raw SDPA's at n, each 1e-4 s × scale, timed at revision `sha`
    on `machine` (None: this one) with this torch; `peak`: the matmul peak the run recorded."""
    rows = [{"case": case, "impl": impl, "batch": batch, "n": n, "dtype": "float32", "device": "cpu",
             "machine": machine or cpu_model(), "threads": 1, "heap": "cached", "median_s": 1e-4 * scale, "status": "ok",
             "git_sha": sha, "torch": torch.__version__, "matmul_peak_flops": peak, **columns}
            for batch in batches for impl in impls]
    rows.append({**rows[0], "case": "sdpa", "impl": "sdpa"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_the_gate_records_where_each_flagged_row_was_timed_and_the_baselines_revision(tmp_path):
    from attnbench.benchmarks import guard

    base = guard.read_results(_gate_rows(tmp_path / "b.csv", scale=1, sha="abc123", torch="2.0"))
    slow = guard.read_results(_gate_rows(tmp_path / "s.csv", scale=2, sha="def456", machine="m"))
    slow["machine"] = base["machine"] = "m"
    reg = next(r for r in guard.compare(base, slow).regressions if r.impl == "core")
    assert (reg.device, reg.dtype, reg.threads, reg.heap, reg.machine) == ("cpu", "float32", 1, "cached", "m")
    assert (reg.revision, reg.torch, reg.baseline_revision, reg.baseline_torch) == ("def456", torch.__version__, "abc123", "2.0")
    no_sha = guard.read_results(_gate_rows(tmp_path / "n.csv", scale=1, sha=None)).drop(columns=["torch"])
    no_sha["machine"] = "m"
    assert all(r.baseline_revision is r.baseline_torch is None for r in guard.compare(no_sha, slow).regressions)
    why = lambda **fields: guard.unconfirmable(dataclasses.replace(reg, **fields), torch.__version__)  # noqa: E731
    assert why(baseline_revision=None) == "the baseline row records no git revision"
    assert "uncommitted changes (abc-dirty)" in why(baseline_revision="abc-dirty")
    assert why(device=None) == "the row records no device or dtype"
    assert why() == f"the baseline was timed with torch 2.0, and this is {torch.__version__}"
    assert why(baseline_torch=None) == f"the baseline was timed with torch (not recorded), and this is {torch.__version__}"
    assert why(baseline_torch=torch.__version__) is None
    assert why(baseline_torch=torch.__version__, dtype="float64") == "bench perf times float32, bfloat16 and float16, not float64"
    assert [guard.not_ours(dataclasses.replace(reg, impl=impl)) for impl in ("sdpa", "naive", "peer:x", "core", "layer@a")] \
        == [True, True, True, False, False]


def test_confirmations_fail_only_a_slowdown_beside_the_old_code_or_what_was_not_timed():
    from attnbench.benchmarks.guard import Regression, confirmations

    regs = tuple(Regression("linear", "core", 1, n, 1.0, 2.0) for n in (512, 1024, 2048))
    rows = [row("linear", "core", 512, 1.5), row("linear", "core@abc", 512, 1.0),    # 1.5× beside it: confirmed
            row("linear", "core", 1024, 1.05), row("linear", "core@abc", 1024, 1.0),  # drift: not confirmed
            row("linear", "core", 2048, 1.0), row("linear", "core@abc", 2048, None)]  # not timed: stands
    got = [(reg.n, None if ratio is None else round(ratio, 2), bad) for reg, ratio, bad in confirmations(regs, rows, "abc")]
    assert got == [(512, 1.5, True), (1024, 1.05, False), (2048, None, True)]


def test_the_files_a_variant_uses_and_the_files_changed_since_a_revision(monkeypatch):
    own, uses = revision.module_files("local")
    assert own == "local.py" and {"local.py", "base.py", "masking.py", "local_flex.py"} <= uses
    assert "local_flex.py" not in revision.module_files("linear")[1]
    assert revision.module_files("dot-product")[1] >= {"dot_product.py", "multi_head.py"}  # its core's module too
    folder = VARIANTS_DIR
    source = """
from attnbench.variants.reference import CONSTANT            # a constant: no __module__ to follow
import attnbench.variants.local as loc
from attnbench.variants import masking
from . import compiled
from .local_flex import flex_window_attention
from attnbench.options import Option                         # outside the package
def core():
    from attnbench.variants.multi_head import MultiHeadAttention   # in a function body
"""
    assert revision._package_imports(source, folder) == {"reference.py", "local.py", "masking.py", "compiled.py",
                                                          "local_flex.py", "multi_head.py"}
    # what the module at a revision imports counts too: its code runs on the working tree's files
    monkeypatch.setattr(revision, "_git", lambda args, cwd, rev: "from attnbench.variants.local_flex import x\n")
    assert "local_flex.py" in revision.module_files("linear", "old")[1]
    seen = []
    answers = {"rev-parse": "abcdef0", "diff": "a.py\nsub/b.py\n\n"}
    monkeypatch.setattr(revision, "_git", lambda args, cwd, rev: seen.append(args) or answers[args[0]])
    assert revision.changed_since("abc") == {"a.py", "b.py"}
    assert seen[-1] == ["diff", "--name-only", "--relative", "abcdef0", "--", "."]  # against the working tree


def test_a_file_changed_only_in_docstrings_comments_or_layout_has_not_changed_since(monkeypatch):
    # the gate's "shared code changed since" must not stand on a reworded docstring
    folder = Path(revision.variant_base.__file__).parent
    now = {name: (folder / name).read_text() for name in ("local_flex.py", "masking.py", "local.py")}
    then = {
        "local_flex.py": now["local_flex.py"].replace('"""', '"""An older wording. ', 1).replace("\n\n", "\n\n# a comment\n", 1),
        "masking.py": now["masking.py"] + "\nEXTRA = 1\n",  # code: changed
        "local.py": now["local.py"],
    }
    answers = {"rev-parse": "abcdef0", "diff": "local_flex.py\nmasking.py\ngone.py\nnotes.txt\n"}

    def git(args, cwd, rev):
        return then[args[1].rsplit("/", 1)[1]] if args[0] == "show" else answers[args[0]]

    monkeypatch.setattr(revision, "_git", git)
    assert revision.changed_since("abc") == {"masking.py", "gone.py", "notes.txt"}
    assert revision._code("def f():\n    'doc'\n    return 1  # why\n") == revision._code("def f():\n    return 1\n")
    assert revision._code("def f():\n    return 1\n") != revision._code("def f():\n    return 2\n")
    assert revision._code("def f(:\n") is None


# 30× flags: the same code timed beside itself must stay within 10× of it, a median of 3 interleaved rounds of
# a 0.1 ms core; 2× was not enough on a shared 2-core machine (2.78× [0.34–2.84] while three other jobs ran)
CONFIRM, SLOWER = ["--repeat", "3", "--min-run-time", "0.002", "--tolerance", "9"], 30


@pytest.fixture
def same_code(monkeypatch):
    """The variants package as at every revision the tests name: the working tree's own uncommitted
    changes (a developer's) are not what these tests are about."""
    changed: dict[str, set[str]] = {}  # revision → the files a test says changed since it
    monkeypatch.setattr(revision, "changed_since", lambda rev: changed.get(rev, set()))
    return changed


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=VARIANTS_DIR, capture_output=True, text=True).stdout.strip()


def _confirm_a_3x_core(tmp_path, capsys, sha, *, peak=None, options=CONFIRM, base=None, **now) -> tuple[int, str]:
    """`--compare --current --confirm` of a linear core 30× its baseline's time (at revision `sha`;
    `base`, `now`: columns of the baseline and of the run checked): exit code, stdout."""
    base = _gate_rows(tmp_path / "base.csv", scale=1, sha=sha, impls=("core",), **(base or {}))
    checked = _gate_rows(tmp_path / "now.csv", scale=SLOWER, sha=sha, impls=("core",), peak=peak, **now)
    code = bench(["perf", "--compare", str(base), "--current", str(checked), "--confirm", *options,
                  "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().out


@needs_git
def test_confirm_times_the_flagged_rows_beside_the_baselines_code_and_clears_drift(tmp_path, capsys, same_code):
    head = _head()
    base = _gate_rows(tmp_path / "base.csv", scale=1, sha=head, batches=(1, 2))
    drifted = _gate_rows(tmp_path / "now.csv", scale=SLOWER, sha=head, batches=(1, 2))  # every row 30×: the machine's drift
    code = bench(["perf", "--compare", str(base), "--current", str(drifted), "--confirm", *CONFIRM,
                  "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "4 of 7 timings regressed by more than 900%" in out
    assert "not failed: 3 timings of SDPA, naive references or peers slower by more than 900%" in out
    for batch in (1, 2):  # a run for each batch, of the flagged case only
        assert (f"timing 2 flagged rows again beside {head[:7]}'s code, the baseline's revision (linear at n = 32; "
                f"batch {batch})") in out
        written = pd.read_csv(tmp_path / "out" / f"now-confirm-{head[:7]}-b{batch}.csv")
        assert set(written["case"]) == {"linear", "sdpa"} and set(written["batch"]) == {batch}
        assert {"core", f"core@{head[:7]}", "layer", f"layer@{head[:7]}"} <= set(written["impl"])
    # the same code on both sides, far within the 900 % tolerance
    assert out.count("'s core: not reproduced beside it") + out.count("'s layer: not reproduced beside it") == 4, out
    assert "0 of 4 flagged core and layer timings fail the gate: 0 confirmed beside the baseline's code, 0 not" in out
    assert code == 0


@needs_git
def test_confirm_times_each_flagged_case_only_at_the_lengths_it_was_flagged_at(tmp_path, capsys, same_code):
    head = _head()
    parts = [pd.read_csv(_gate_rows(tmp_path / f"{stem}-{case}.csv", scale=scale, sha=head, impls=("core",),
                                    case=case, n=n))
             for stem, scale in (("base", 1), ("now", SLOWER)) for case, n in (("linear", 32), ("linear(causal)", 48))]
    base, now = tmp_path / "base.csv", tmp_path / "now.csv"
    pd.concat(parts[:2]).to_csv(base, index=False)
    pd.concat(parts[2:]).to_csv(now, index=False)
    code = bench(["perf", "--compare", str(base), "--current", str(now), "--confirm", *CONFIRM,
                  "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "(linear at n = 32; linear(causal) at n = 48; batch 1)" in out, out
    written = pd.read_csv(tmp_path / "out" / f"now-confirm-{head[:7]}-b1.csv")
    timed = set(zip(written["case"], written["n"]))
    assert {("linear", 32), ("linear(causal)", 48)} <= timed  # not the cross product of cases and lengths
    assert not {("linear", 48), ("linear(causal)", 32)} & timed, timed
    assert out.count("not reproduced beside it") == 2 and code == 0, out


def test_cases_at_a_length_are_the_cells_named_there_and_their_baselines():
    from attnbench.benchmarks.cases import cases_at, select_cases

    cases = select_cases(["linear", "local"])
    assert cases_at(cases, None, 64) == cases
    cells = (("linear", 64), ("linear(causal)", 128))
    assert [c.label for c in cases_at(cases, cells, 64)] == ["sdpa", "linear"]
    assert [c.label for c in cases_at(cases, cells, 128)] == ["sdpa(causal)", "linear(causal)"]
    assert cases_at(cases, cells, 256) == []


@needs_git
def test_confirm_fails_a_kernel_slower_than_the_baselines_code(tmp_path, capsys, monkeypatch, same_code):
    import time

    core = linear.LinearAttention.core

    def slower(self, *args):  # the working tree's kernel regressed; HEAD's, loaded from git, did not
        time.sleep(0.02)
        return core(self, *args)

    monkeypatch.setattr(linear.LinearAttention, "core", slower)
    code, out = _confirm_a_3x_core(tmp_path, capsys, _head())
    assert code == 1
    assert "linear core b=1 n=32: 3.00 ms vs 0.10 ms baseline (30.00×); " in out and ": slower beside it too: confirmed" in out
    assert "1 of 1 flagged core and layer timings fail the gate: 1 confirmed" in out


@needs_git
def test_confirm_shows_each_ratios_rounds_and_says_when_the_machine_is_busier_than_in_the_run_checked(
        tmp_path, capsys, same_code):
    head, two_rounds = _head(), ["--repeat", "2", *CONFIRM[2:]]
    # the run checked recorded a matmul peak of 1 PFLOP/s: no CPU here reaches a fifth of it
    _, out = _confirm_a_3x_core(tmp_path, capsys, head, peak=1e15, options=two_rounds)
    assert "the machine is busy: its matmul peak was " in out and "1000000 in the run checked" in out
    line = next(line for line in out.splitlines() if f"beside {head[:7]}'s core" in line)
    assert re.search(r"\d\.\d\d× \[\d\.\d\d–\d\.\d\d\] beside", line), line  # two rounds: their range
    _, out = _confirm_a_3x_core(tmp_path, capsys, head, peak=1.0, options=two_rounds)  # below this machine's
    assert "the machine is busy" not in out


ANOTHER_CPU, UNKNOWN_CASE, NO_DEVICE = {"machine": "another-cpu"}, {"case": "linear(chunk_size=9)"}, {"device": None}


@pytest.mark.parametrize(("sha", "changed", "base", "now", "why"), [
    ("abc-dirty", {}, {}, {}, "the baseline was timed on uncommitted changes (abc-dirty), which no revision holds"),
    (None, {}, {}, {}, "the baseline row records no git revision"),
    # the run checked at a later commit, with masking.py changed since the baseline's
    ("HEAD", {"HEAD": {"masking.py"}}, {}, {"git_sha": "later"}, "masking.py changed since HEAD; timed beside HEAD's "),
    ("HEAD", {}, ANOTHER_CPU, ANOTHER_CPU, "the run checked was timed on another-cpu, and this is "),
    ("HEAD", {}, {}, {"git_sha": "abc-dirty"}, "the run checked was timed on abc-dirty: nothing says its kernels"),
    ("HEAD", {"HEAD": {"linear.py"}}, {}, {}, "linear.py here differ from HEAD, where the run checked was timed"),
    ("HEAD", {}, UNKNOWN_CASE, UNKNOWN_CASE, "linear(chunk_size=9) core is not the core or layer of a case"),
    ("HEAD", {}, NO_DEVICE, NO_DEVICE, "the row records no device or dtype"),
    ("HEAD", {}, {}, {"torch": "1.0.0"}, "the run checked was timed with torch 1.0.0, and this is "),
])
def test_a_flag_that_cannot_be_timed_beside_the_baselines_code_stands(sha, changed, base, now, why, tmp_path, capsys,
                                                                      same_code):
    same_code.update(changed)
    code, out = _confirm_a_3x_core(tmp_path, capsys, sha, base=base, **now)
    assert code == 1
    assert "; stands: " in out and why in out, out
    assert "1 of 1 flagged core and layer timings fail the gate: 0 confirmed beside the baseline's code, 1 not " in out
    assert not (tmp_path / "out").exists()  # nothing was run


@needs_git
def test_the_variants_own_module_may_change_since_the_baseline_it_is_what_is_timed_beside(tmp_path, capsys, same_code):
    # the run checked at a later commit whose linear.py differs from the baseline's: timed beside it
    same_code.update({"HEAD": {"linear.py"}})
    code, out = _confirm_a_3x_core(tmp_path, capsys, "HEAD", git_sha="later")
    assert "not reproduced beside it" in out and "stands" not in out and code == 0, out


@needs_git
def test_confirm_after_a_run_of_this_tree_times_its_flags_beside_the_baseline(tmp_path, capsys, same_code):
    # no --current: the rows come from this tree, just now (the baseline: this machine at 1 ns a call)
    base = _gate_rows(tmp_path / "base.csv", scale=1e-5, sha=_head(), impls=("core",))
    code = bench(["perf", "--variants", "linear", "--lengths", "32", "--batch", "1", "--threads", "1", *CONFIRM,
                  "--out", str(tmp_path / "out"), "--name", "run", "--compare", str(base), "--confirm"])
    out = capsys.readouterr().out
    assert "linear core b=1 n=32" in out and "not reproduced beside it" in out and code == 0, out
    assert (tmp_path / "out" / f"run-confirm-{_head()[:7]}-b1.csv").is_file()


@needs_git
def test_a_revision_this_checkout_lacks_stands_with_gits_reason(tmp_path, capsys):
    code, out = _confirm_a_3x_core(tmp_path, capsys, "0" * 40)  # all digits: read as text, not as 0
    assert code == 1 and "; stands: " in out and "0" * 40 in out, out
    assert not (tmp_path / "out").exists()


def test_another_torch_stands_without_running_anything(tmp_path, capsys):
    base = _gate_rows(tmp_path / "base.csv", scale=1, sha="HEAD", impls=("core",), torch="1.0.0")
    checked = _gate_rows(tmp_path / "now.csv", scale=SLOWER, sha="HEAD", impls=("core",))
    assert bench(["perf", "--compare", str(base), "--current", str(checked), "--confirm", *CONFIRM]) == 1
    assert "stands: the baseline was timed with torch 1.0.0, and this is " in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "says"), [
    (["--confirm"], "--confirm needs --compare BASELINE.csv"),
    (["--confirm", "--compare", "x.csv", "--against", "HEAD"], "it cannot go with --against"),
])
def test_bad_confirm_is_one_line_and_exit_2(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gate_rows(tmp_path / "x.csv", scale=1, sha=None)
    assert bench(["perf", "--variants", "linear", "--lengths", "32", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "out").exists()


@needs_git
def test_a_confirming_run_never_writes_over_an_earlier_one(tmp_path, capsys, same_code):
    head = _head()
    base = _gate_rows(tmp_path / "base.csv", scale=1, sha=head, batches=(1,))
    drifted = _gate_rows(tmp_path / "now.csv", scale=SLOWER, sha=head, batches=(1,))
    earlier = tmp_path / "out" / f"now-confirm-{head[:7]}-b1.csv"
    earlier.parent.mkdir()
    earlier.write_text("an earlier confirming run's")
    code = bench(["perf", "--compare", str(base), "--current", str(drifted), "--confirm", *CONFIRM,
                  "--out", str(tmp_path / "out")])
    assert code == 0 and earlier.read_text() == "an earlier confirming run's"
    written = pd.read_csv(tmp_path / "out" / f"now-confirm-{head[:7]}-b1-2.csv")
    assert {"core", f"core@{head[:7]}"} <= set(written["impl"]), capsys.readouterr().out
