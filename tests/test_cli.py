"""The `bench` command line: help with examples, listing, checking, and one-line errors with exit 2."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from attnbench.cli_run import summary_tables


@pytest.mark.parametrize("command", [[], ["ls"], ["check"], ["perf"], ["ceiling"]])
def test_help_shows_an_example(command, bench_output):
    code, out, _ = bench_output(*command, "--help")
    assert code == 0 and "Example" in out and "bench " in out


def test_a_bare_bench_shows_its_help_as_help_does(bench_output):
    code, out, err = bench_output()
    assert (code, err) == (0, "") and out == bench_output("--help")[1]


def test_ls_help_shows_what_as_optional_since_it_defaults_to_variants(bench_output):
    assert "Usage: bench ls [OPTIONS] [WHAT] [PATTERN]" in bench_output("ls", "--help")[1]
    assert bench_output("ls")[1] == bench_output("ls", "variants")[1]


def test_ls_variants_lists_every_builtin_with_its_capabilities(bench_output):
    code, out, _ = bench_output("ls", "variants")
    assert code == 0
    for name in ("additive", "dot-product", "multi-head", "local", "linear"):
        assert name in out
    local_row = next(line for line in out.splitlines() if "│ local" in line)
    assert "n*w" in local_row and "window: int = 128" in local_row and "cross" not in local_row


def test_ls_glob(bench_output):
    code, out, _ = bench_output("ls", "variants", "lin*")
    assert code == 0 and "linear" in out and "local" not in out


def test_ls_shows_a_plugin_s_option_help_as_written_not_as_rich_markup(bench_output, sandbox, monkeypatch):
    from attnbench import Option, VariantSpec, register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("zz-markup")
    class Markup(MultiHeadAttention):
        spec = VariantSpec(complexity="n^2", options=(Option("rule", str, "[red]", help="a regex like [a-z]+ [/oops]"),))

    monkeypatch.setenv("COLUMNS", "240")
    code, out, err = bench_output("ls", "variants", "zz-*")  # before: rich.errors.MarkupError on [/oops]
    assert code == 0 and "a regex like [a-z]+ [/oops]" in out and "rule: str = [red]" in out, err


def test_show_task_prints_data_and_file_names_as_they_are_not_as_rich_markup(bench_output, tmp_path, monkeypatch):
    # a user's file whose text and name hold what rich would read as markup or an emoji code
    folder = tmp_path / "a[bold]b"
    folder.mkdir()
    data = folder / "x[red].csv"
    data.write_text("text,label\n" + "".join(f'"[laughter] a [/] b :smile: {i}",{i % 2}\n' for i in range(60)))
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = bench_output("show-task", f"text-cls(source={data},balance=false)", "-n", "5")
    assert code == 0, err  # before: rich.errors.MarkupError, a traceback and exit 1
    assert str(data) in out and out.count("[laughter] a [/] b :smile:") == 5
    code, out, err = bench_output("show-task", "char-lm", "--seq-len", "4096", "-n", "50", "--seed", "52")
    assert code == 0 and "the charter [see APP Note] will expire" in out, err  # before: 'the charter  will expire'


@pytest.mark.parametrize(("what", "pattern", "option", "accepts", "words"), [
    ("variants", "local", "window", "a positive int", "query i sees key j where |i - j| < window"),
    ("variants", "linear", "kernel", "one of eager, compiled", "eager: ATen ops; compiled: fused by torch.compile"),
    ("tasks", "listops", "max_depth", "a positive int <= 100", "deepest nesting (LRA: 10)"),
])
def test_ls_with_a_pattern_says_what_each_option_accepts_and_does(bench_output, monkeypatch, what, pattern, option,
                                                                   accepts, words):
    monkeypatch.setenv("COLUMNS", "240")  # one line a row
    code, out, _ = bench_output("ls", what, pattern)
    row = next(line for line in out.splitlines() if f"│ {pattern} " in line and f"│ {option} " in line)
    assert code == 0 and accepts in row and words in row
    code, out, _ = bench_output("ls", what)  # the whole list stays one table
    assert code == 0 and "options (NAME(option=value" not in out


def test_check_passes_for_builtins_and_prints_a_table(bench_output):
    code, out, err = bench_output("check", "--variants", "local(window=4),dot", "--checks", "reference,causal")
    assert code == 0, out
    assert out.count("PASS") == 4 and "local(window=4)" in out and "all 4 checks passed" in out
    # and a progress line on stderr as each check ends, so a slow (compiling) check shows where it is
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert [line.split(" (")[0] for line in progress] == [
        "[1/4] local(window=4) reference: PASS", "[2/4] local(window=4) causal: PASS",
        "[3/4] dot-product reference: PASS", "[4/4] dot-product causal: PASS",
    ]


def test_check_exits_1_and_names_the_failure(tmp_path, sandbox, bench_output):
    bad = tmp_path / "bad_attention.py"
    bad.write_text(
        "from torch import nn\n"
        "from attnbench import VariantSpec, register_variant\n"
        "@register_variant('nan-attention')\n"
        "class NaNAttention(nn.Module):\n"
        "    spec = VariantSpec(complexity='n', supports_cross=False, supports_causal=False,\n"
        "                       supports_padding_mask=False, returns_weights=False)\n"
        "    def __init__(self, d_model, n_heads):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(d_model, d_model)\n"
        "    def forward(self, x, context=None, **kwargs):\n"
        "        return self.proj(x) * float('nan'), None\n"
    )
    code, out, _ = bench_output("check", "--variants", "nan-attention", "--plugin", str(bad))
    assert code == 1
    assert "FAIL" in out and "non-finite output" in out and "checks failed" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chek"], "no such command 'chek'; did you mean 'check'?"),
        (["check", "--variants", "lcoal"], "unknown variant 'lcoal'; did you mean 'local'"),
        (["check", "--variants", "local(window=-3)"], "local: window must be a positive int, got -3"),
        (["check", "--variants", "local(window=abc)"], "local: window must be a positive int, got 'abc'"),
        (["check", "--variants", "local(size=3)"], "local: unknown option 'size'"),
        (["check", "--variants", "multi-head(window=3)"], "multi-head: takes no options"),
        (["check", "--variants", ""], "--variants: empty list"),
        (["check", "--checks", "refrence"], "unknown check 'refrence'; did you mean 'reference'?"),
        (["check", "--checks", " , "], "--checks: empty list (give names, or 'all'; known: shape,"),
        (["show-task", ""], "show-task: empty; give one task"),
        (["attention", "--variant", " ", "--task", "copy"], "--variant: empty; give one variant"),
        (["attention", "--variant", "linear", "--task", "copy", "--out", ""],
         "Invalid value for '--out': empty path; name a figure file"),
        (["check", "--device", "tpu"], "Invalid value for '--device'"),
        (["ls", "variants", "zzz*"], "no variant matches 'zzz*'"),
        (["ls", "gizmos"], "Invalid value for 'WHAT'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, bench_output):
    code, _, err = bench_output(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:") and message in lines[0], err
    assert "Traceback" not in err


def test_device_cuda_without_cuda_is_a_clear_error(bench_output):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = bench_output("check", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err



def summary_record(kind: str, variant: str, n: int, seed: int, status: str, result: dict | None,
                   task: str | None = None) -> dict:
    return {"key": f"{kind}/{variant}/{task or '-'}/n={n}/seed={seed}", "kind": kind, "variant": variant,
            "variant_label": variant, "variant_options": {}, "task": task, "task_label": task or "-", "seq_len": n,
            "seed": seed, "status": status, "message": "", "result": result if status == "ok" else None}


def table_rows(table) -> dict[str, list[str]]:
    """{variant: its cells} of a rich table, as printed."""
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    lines = [line.split("│")[1:-1] for line in console.file.getvalue().splitlines() if line.startswith("│")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in lines}


def test_run_summary_pools_seeds_and_lengths_and_names_statuses():
    def score(variant, task, n, seed, value, status="ok"):
        return summary_record("accuracy", variant, n, seed, status, {"metric": "accuracy", "score": value}, task)

    def timing(variant, n, seconds, peak, status="ok"):
        result = {"fwd_bwd": {"median_s": seconds, "iqr_s": 0.0, "runs": 3}, "peak_bytes_fwd_bwd": peak}
        return summary_record("efficiency", variant, n, 0, status, result)

    records = [score("multi-head", "task-a", 32, 0, 0.5), score("multi-head", "task-a", 32, 1, 0.75),
               score("multi-head", "task-a", 64, 0, 1.0), score("linear", "task-a", 32, 0, None, "timeout"),
               score("linear", "task-a", 32, 1, None, "oom"), score("linear", "task-b", 32, 0, 0.25),
               timing("multi-head", 256, 2e-3, 3 * 2**20), timing("linear", 256, None, None, "oom"),
               timing("linear", 512, 5e-3, 2**20)]
    accuracy, efficiency = (table_rows(t) for t in summary_tables(records))
    # every ok seed at every length counts once: not the mean of the two lengths' means (0.8125)
    assert accuracy == {"multi-head": ["0.750", ""], "linear": ["oom,timeout", "0.250"]}
    # a seed that did not score is marked, as the report marks it: 0.9 alone read as better than 0.6 on three
    partial = [score("steady", "task-a", 32, seed, 0.6) for seed in range(3)] + [
        score("flaky", "task-a", 32, 0, 0.9), score("flaky", "task-a", 32, 1, None, "error"),
        score("flaky", "task-a", 64, 0, None, "timeout"), score("flaky", "task-a", 64, 1, 0.7)]
    assert table_rows(summary_tables(partial)[0]) == {"steady": ["0.600"], "flaky": ["0.800 (2/4 seeds)"]}
    assert efficiency == {"multi-head": ["2.0 (3.0)", ""], "linear": ["oom", "5.0 (1.0)"]}


def test_ls_profiles_names_the_efficiency_layer_and_the_options_a_profile_gives_variants():
    from attnbench.cli_tasks import profiles_table

    table, found = profiles_table("standard")
    row = {column.header: column._cells[0] for column in table.columns}
    assert found == 1 and row["efficiency layer and n"] == "d=256 h=4 b=1; 256,1024,4096,8192"
    assert row["variant defaults"] == "local: window=16"  # quick's is 4: a local cell differs between them


def test_a_failed_cell_s_progress_line_names_its_seed_and_keeps_its_message_s_brackets():
    """Two seeds of one failing cell printed the same line twice, with nothing to tell them apart."""
    from rich.console import Console

    from attnbench.cli_run import describe

    record = {"status": "error", "kind": "accuracy", "variant_label": "flaky", "task_label": "listops", "task": "listops",
              "seq_len": 64, "seed": 1, "message": "RuntimeError: boom at [64]"}
    console = Console(width=200, markup=False, color_system=None)
    with console.capture() as captured:
        console.print(describe(record), markup=True, highlight=False)
    assert captured.get().strip() == "error accuracy flaky listops n=64 seed=1: RuntimeError: boom at [64]"
