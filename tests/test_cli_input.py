"""Bad input to `bench attention`, `bench show-task`, `bench ls` and `bench check` that used to train
first, run out of memory, trace back or mislead: each is now one line and exit 2, before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import attnbench.runner.attention_map as attention_map
from attnbench.errors import OptionError
from attnbench.options import INT_MAX, Option
from attnbench.tasks.base import MAX_VOCAB, TASKS, Task
from attnbench.tasks.synthetic.copy import FIRST
from support import CAPPED, one_error_line

HUGE = "99999999999999999999"  # past int64: torch raised OverflowError deep inside a check
SMOKE = ["attention", "--profile", "smoke", "--steps", "1"]


@pytest.fixture(autouse=True)
def _isolated(sandbox):
    """Tasks registered by a test end with it (the sandbox fixture does the same for variants);
    one thread, as the smoke models are too small to gain from a second on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with TASKS.temporary():
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if bench attention generates data or trains: the refusal must come first."""
    monkeypatch.setattr(attention_map, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(attention_map, "task_data", lambda *a, **k: pytest.fail("generated data"))


# ---------------------------------------------------------------------------- --save-weights, --out
@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        ("--save-weights", ".", "bench: error: --save-weights: {dir} is a directory; give a file name"),
        ("--save-weights", "a-file/w.pt",
         "--save-weights: cannot write {dir}/a-file/w.pt: {dir}/a-file is not a directory"),
        ("--save-weights", "a-file/deeper/w.pt", "{dir}/a-file is not a directory"),
        ("--out", "dir.png", "--out: {dir}/dir.png is a directory; give a file name"),
        ("--out", "a-file/map.png", "--out: cannot write {dir}/a-file/map.png: {dir}/a-file is not a directory"),
        # before: the checkpoint replaced the run's records, or the figure (written second) the checkpoint
        ("--save-weights", "run/cells.jsonl", "--save-weights: cannot write {dir}/run/cells.jsonl: it is the "
         "cells.jsonl of the run {dir}/run, which writing over it would lose; name another file"),
        ("--save-weights", "map.png", "--save-weights: {dir}/map.png is the --out figure too; give each its own file"),
    ],
)
def test_an_unwritable_file_path_is_refused_before_training(tmp_path, no_work, bench_output, flag, target, message):
    (tmp_path / "a-file").write_text("a file, not a folder")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "run").mkdir()  # a run directory's files
    for name in ("grid.json", "cells.jsonl"):
        (tmp_path / "run" / name).write_text("{}\n")
    before = sorted(tmp_path.rglob("*"))
    path = tmp_path / target if target != "." else tmp_path
    out = [] if flag == "--out" else ["--out", str(tmp_path / "map.png")]
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "copy", *out, flag, str(path))
    assert code == 2 and message.format(dir=tmp_path) in one_error_line(err)
    assert sorted(tmp_path.rglob("*")) == before, "nothing is written for bad input"


# ---------------------------------------------------------------------------- int options past what torch takes
def test_an_int_option_past_int32_is_one_line(no_work, bench_output):
    code, out, err = bench_output("check", "--variants", f"local(window={HUGE})")
    assert code == 2 and one_error_line(err) == f"bench: error: local: window must be at most {INT_MAX}, got {HUGE}"
    assert out == ""
    code, _, err = bench_output(*SMOKE, "--variant", f"local(window={HUGE})", "--task", "copy")
    assert code == 2 and f"local: window must be at most {INT_MAX}" in one_error_line(err)
    code, _, err = bench_output("show-task", f"copy(num_symbols={HUGE})")
    assert code == 2 and f"copy: num_symbols must be at most {MAX_VOCAB - FIRST}, got {HUGE}" in one_error_line(err)


def test_int_bounds_are_the_declared_maximum_or_int32():
    assert Option("window", int, 4, minimum=1).validate(INT_MAX, "local") == INT_MAX
    with pytest.raises(OptionError, match=rf"^local: window must be at most {INT_MAX}, got {INT_MAX + 1}$"):
        Option("window", int, 4, minimum=1).validate(INT_MAX + 1, "local")
    small = Option("depth", int, 2, minimum=1, maximum=8)
    assert small.describe() == "a positive int <= 8"
    with pytest.raises(OptionError, match=r"^t: depth must be at most 8, got 9$"):
        small.parse("9", "t")
    assert Option("scale", float, 1.0).validate(1e300, "x") == 1e300  # floats have no implicit bound


# ---------------------------------------------------------------------------- --seq-len
def test_attention_seq_len_past_the_model_or_task_is_one_line(no_work, bench_output):
    code, _, err = bench_output(*SMOKE, "--variant", "local(window=4)", "--task", "copy", "--seq-len", "100000000")
    assert code == 2
    assert one_error_line(err) == (
        "bench: error: --seq-len: 100000000 is more than bench attention draws (at most 8192 tokens)"
    )
    for command in ([*SMOKE, "--variant", "multi-head", "--task", "copy"], ["show-task", "copy"]):
        code, _, err = bench_output(*command, "--seed", HUGE)
        assert code == 2 and "'--seed': 99999999999999999999 is not in the range 0<=x<=4294967295" in one_error_line(err)
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "copy", "--seq-len", "2")
    assert code == 2 and one_error_line(err) == "bench: error: --seq-len: 2 is too short for copy (its minimum is 3)"
    _register_capped()
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "capped", "--seq-len", "17")
    assert code == 2 and one_error_line(err) == "bench: error: --seq-len: 17 exceeds capped's maximum of 16"


def test_show_task_seq_len_is_capped_before_any_example_is_made(monkeypatch, bench_output):
    monkeypatch.setattr(Task, "build", lambda *a, **k: pytest.fail("built examples"))
    code, out, err = bench_output("show-task", "distance", "--seq-len", "100000000")
    assert code == 2 and out == ""
    assert one_error_line(err) == (
        "bench: error: --seq-len: 100000000 is more than show-task prints (at most 8192 tokens an example)"
    )
    _register_capped()
    code, _, err = bench_output("show-task", "capped", "--seq-len", "17")
    assert code == 2 and one_error_line(err) == "bench: error: --seq-len: 17 exceeds capped's maximum of 16"


def _register_capped() -> None:
    exec(compile(CAPPED, "capped_task.py", "exec"), {})  # the plugin file's source, registered here


# ---------------------------------------------------------------------------- --weights
def test_weights_for_another_variant_task_or_options_are_refused(tmp_path, monkeypatch, bench_output):
    saved = tmp_path / "local4.pt"
    code, _, err = bench_output(*SMOKE, "--variant", "local(window=4)", "--task", "copy",
                                "--out", str(tmp_path / "a.png"), "--save-weights", str(saved))
    assert code == 0 and saved.exists(), err
    load = [*SMOKE, "--task", "copy", "--out", str(tmp_path / "b.png"), "--weights", str(saved)]
    with monkeypatch.context() as patch:  # refused before any data is made
        patch.setattr(attention_map, "task_data", lambda *a, **k: pytest.fail("generated data"))
        for variant in ("local(window=8)", "linear"):  # the shapes fit both: only the record tells
            code, _, err = bench_output(*load, "--variant", variant)
            assert code == 2 and one_error_line(err).endswith(
                "it was saved for local(window=4) on copy (d_model=32, n_layers=1, n_heads=2)"
            ), err
        code, _, err = bench_output(*SMOKE, "--variant", "local(window=4)", "--task", "copy(reverse=true)",
                                    "--out", str(tmp_path / "c.png"), "--weights", str(saved))
        assert code == 2 and "does not fit local(window=4) on copy(reverse=True)" in one_error_line(err)
    code, out, err = bench_output(*load, "--variant", "local(window=4)")
    assert code == 0 and f"weights from {saved}" in out  # and SMOKE's --steps said to be unused:
    assert err == "bench: warning: --steps 1: --weights loads a trained model, so no step is run; ignored\n"


def test_a_bare_state_dict_still_loads_with_a_warning(tmp_path, bench_output):
    saved = tmp_path / "new.pt"
    code, _, err = bench_output(*SMOKE, "--variant", "linear", "--task", "copy",
                                "--out", str(tmp_path / "a.png"), "--save-weights", str(saved))
    assert code == 0, err
    old = tmp_path / "old.pt"  # what --save-weights wrote before it recorded the model
    torch.save(torch.load(saved, weights_only=True)["state_dict"], old)
    code, out, err = bench_output("attention", "--profile", "smoke", "--variant", "linear", "--task", "copy",
                                  "--out", str(tmp_path / "b.png"), "--weights", str(old))  # no --steps: loaded
    assert code == 0 and f"weights from {old}" in out
    assert err.strip().splitlines() == [
        f"bench: warning: --weights: {old} records no variant, task or model size (a bare state dict, "
        "or a file from an older bench attention); only the shapes were checked"
    ]


class Unlisted:
    """A class that torch.load(weights_only=True) refuses to unpickle."""


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"not a checkpoint", "not a torch.save archive"),
        (None, "UnpicklingError: Unsupported global"),
        ([1, 2], "it holds a list"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_one_line_without_unsafe_advice(tmp_path, no_work, bench_output, content,
                                                                         detail):
    path = tmp_path / "garbage.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"x": Unlisted()} if content is None else content, path)
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "copy",
                                "--out", str(tmp_path / "a.png"), "--weights", str(path))
    line = one_error_line(err)
    assert code == 2 and line.startswith(
        f"bench: error: --weights: cannot read {path}: not a checkpoint saved by bench attention ("
    ) and detail in line, line
    assert "weights_only" not in line and "Please" not in line and "trust" not in line


# ---------------------------------------------------------------------------- did you mean
@pytest.mark.parametrize(
    ("args", "says", "not_said"),
    [
        (["ls", "variant"], "did you mean 'variants'?", None),
        (["ls", "profile"], "did you mean 'profiles'?", None),
        (["check", "--variants", "cosine-demo"],
         "unknown variant 'cosine-demo'; a plugin's variant? load it with --plugin MODULE", "did you mean"),
        (["show-task", "my-task"], "unknown task 'my-task'; a plugin's task? load it with --plugin MODULE",
         "did you mean"),
        (["show-task", "distanse"], "unknown task 'distanse'; did you mean 'distance'? (known:",
         "retrieval-distance'"),
        (["show-task", "copy", "--split", "tset"], "did you mean 'test'?", None),
        (["ls", "variants", "additve"], "no variant matches 'additve'; did you mean 'additive'? (bench ls", None),
        (["ls", "tasks", "selctive-copy"], "no task matches 'selctive-copy'; did you mean 'selective-copy'?", None),
        (["ls", "profiles", "quik"], "no profile matches 'quik'; did you mean 'quick'?", None),
        (["ls", "variants", "local(window=4)"], "bench ls takes one name or glob, without options: 'local'", "plugin"),
        (["ls", "variants", "linear,additve"], "bench ls takes one name or glob, without options: 'linear'", "plugin"),
        (["ls", "variants", "lcoal(window=4)"], "without options; did you mean 'local'?", "'lcoal'?"),
    ],
)
def test_did_you_mean(bench_output, args, says, not_said):
    code, out, err = bench_output(*args)
    line = one_error_line(err)
    assert code == 2 and out == "" and says in line, line
    assert not_said is None or not_said not in line


def test_ls_with_no_match_prints_only_the_error(bench_output):
    code, out, err = bench_output("ls", "variants", "zzz*")
    assert code == 2 and out == ""
    assert one_error_line(err) == "bench: error: no variant matches 'zzz*' (bench ls variants lists all)"
    code, out, _ = bench_output("ls", "variants", "loc*")
    assert code == 0 and "local" in out


def test_ls_with_an_empty_pattern_is_no_match_not_an_empty_table(bench_output):
    code, out, err = bench_output("ls", "tasks", "")
    assert code == 2 and out == ""
    assert one_error_line(err) == "bench: error: no task matches '' (bench ls tasks lists all)"


# ---------------------------------------------------------------------------- a plugin's own fault
FAULTS = Path(__file__).parent / "fixtures" / "fault_variants.py"
RAISING_TASK = '''
from attnbench import GeneratedTask, TaskSpec, register_task


@register_task("bad-sample")
class BadSample(GeneratedTask):
    spec = TaskSpec(kind="classify", metric="accuracy", description="sample raises", source="generated",
                    licence="generated (no data)")

    def setup(self):
        self.vocab_size, self.n_classes, self.chance = 4, 2, 0.5

    def sample(self, rng, seq_len):
        raise ValueError("sample exploded")
'''


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show-task", "bad-sample"], "bad-sample: generating examples failed: ValueError: sample exploded (at "),
        ([*SMOKE, "--variant", "multi-head", "--task", "bad-sample"],
         "multi-head on bad-sample failed: ValueError: sample exploded (at "),
        ([*SMOKE, "--variant", "fault-raise", "--task", "copy"],
         "fault-raise on copy failed: RuntimeError: this variant always raises (at "),
        ([*SMOKE, "--variant", "fault-exit", "--task", "copy"], "fault-exit on copy failed: SystemExit: 5 (at "),
    ],
)
def test_a_plugins_own_exception_is_one_line_naming_where_it_was_raised(tmp_path, bench_output, args, says):
    task = tmp_path / "raising_task.py"
    task.write_text(RAISING_TASK)
    out_file = ["--out", tmp_path / "map.png"] if args[0] == "attention" else []
    code, out, err = bench_output(*args, "--plugin", task, "--plugin", FAULTS, *out_file)
    line = one_error_line(err)
    assert code == 1 and says in line, line
    assert re.search(r"\(at \S+\.py:\d+\)$", line), line


def test_attention_warns_of_an_example_its_text_replaces(tmp_path, bench_output):
    # before: silent, rc 0, though the same index without --text is refused
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "sentiment", "--text", "a fine movie",
                                "--example", "9999", "--out", tmp_path / "a.png")
    assert code == 0 and err == ("bench: warning: --example 9999: --text gives the input, so no test example is drawn; "
                                 "ignored\n")


def test_attention_warns_of_a_cross_no_task_uses_and_names_cross_where_it_lacks_cross_attention(tmp_path, bench_output):
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "copy", "--cross", "additive",
                                "--out", tmp_path / "a.png")
    assert code == 0 and err == "bench: warning: --cross additive: copy is no seq2seq task, so nothing attends across; ignored\n"
    code, _, err = bench_output(*SMOKE, "--variant", "multi-head", "--task", "translation", "--cross", "local",
                                "--out", tmp_path / "b.png")
    assert code == 2 and one_error_line(err).endswith("give --cross a variant that has it (e.g. --cross additive)")
