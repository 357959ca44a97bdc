"""`bench attention`: one example's attention weights, extracted exactly and drawn with token labels."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import pytest
import torch
from support import register_uniform_weights

import attnbench
import attnbench.runner.attention_map as attention_map
from attnbench.runner.attention_map import AttentionRequest, attention_figure, encode_text, extract_attention
from attnbench.runner.model import BenchModel, ModelSize
from attnbench.runner.profiles import PROFILES, Profile, register_profile
from attnbench.runner.train import TrainSettings, task_data
from attnbench.tasks import build_task
from attnbench.variants.base import VARIANTS, get_variant_spec

TINY = "attention-tiny"
SIZE = ModelSize(d_model=16, n_layers=2, n_heads=2)
SETTINGS = TrainSettings(steps=5, batch_size=8, eval_every=5, n_train=64, n_valid=16, n_test=16)
WEIGHTED = [n for n in VARIANTS.names() if get_variant_spec(n).returns_weights]


@pytest.fixture(autouse=True)
def tiny_profile():
    """A profile small enough for a test: 2 layers of width 16, 5 steps on 64 examples, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only lose time to a second thread on a busy machine
    with PROFILES.temporary():
        register_profile(Profile(name=TINY, description="tests", lengths=(16,), size=SIZE, train=SETTINGS))
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def attention(bench_output):
    """`attention(*args)`: `bench attention --profile TINY ARGS` in this process; (exit code, stdout, stderr)."""
    return lambda *args: bench_output("attention", "--profile", TINY, *args)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------- the figure
@pytest.mark.parametrize(
    ("variant", "task", "extra"),
    [
        ("multi-head", "copy", []),
        ("additive", "translation", []),
        ("dot-product", "sentiment", ["--text", "a fine movie"]),
    ],
)
def test_the_figure_is_written_and_the_score_printed(tmp_path, variant, task, extra, attention):
    out = tmp_path / f"{variant}-{task}.png"
    code, stdout, err = attention("--variant", variant, "--task", task, "--out", str(out), *extra)
    assert code == 0, err
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    assert 600 <= width <= 6000 and 600 <= height <= 6000
    assert f"wrote {out}" in stdout and re.search(r"test (accuracy|exact match) \d\.\d{3}", stdout)
    if task == "translation":
        rates = [float(x) for x in re.findall(r"(\d\.\d+) on (?:this example|the test split)", stdout)]
        assert len(rates) == 2 and all(0.0 <= r <= 1.0 for r in rates)


def test_default_out_is_named_for_variant_and_task(tmp_path, monkeypatch, attention):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = attention("--variant", "local(window=3)", "--task", "copy", "--layer", "1", "--head", "2")
    assert code == 0, err
    assert (tmp_path / "attention-local-window=3-copy.png").exists()


def test_translation_map_is_target_by_source_with_the_gold_alignment(tmp_path):
    outcome = attention_figure(request("additive", "translation", tmp_path))
    amap = outcome.amap
    example = task_data(build_task("translation"), "test", SETTINGS.n_test, 16, 0).select([0])
    source_len = int((~example.padding_mask).sum())
    target_len = int((example.target != -100).sum())
    assert amap.kind == "cross" and amap.weights.shape == (1, target_len, source_len)
    assert amap.rows[-1] == "<eos>" and amap.cols[0] in ("the", "a", "this", "these", "some")
    assert amap.gold and all(0 <= r < target_len and 0 <= c < source_len for r, c in amap.gold)
    assert 0.0 <= amap.aer <= 1.0 and 0.0 <= outcome.test_aer <= 1.0
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(1, target_len))


def test_word_text_for_translation_is_greedy_decoded(tmp_path, monkeypatch):
    import matplotlib.figure

    legends, legend = [], matplotlib.figure.Figure.legend
    monkeypatch.setattr(matplotlib.figure.Figure, "legend", lambda self, *args, handles=(), **kwargs: (
        legends.append([h.get_label() for h in handles]), legend(self, *args, handles=handles, **kwargs))[1])
    outcome = attention_figure(request("additive", "translation", tmp_path, text="The dog sees a cat"))
    assert outcome.amap.cols == ("the", "dog", "sees", "a", "cat") and outcome.amap.aer is None
    assert "no gold alignment" in outcome.amap.caption
    assert legends == [["most-attended source word"]]  # no box drawn, none in the legend


# ---------------------------------------------------------------------------- the weights themselves
@pytest.mark.parametrize("variant", WEIGHTED)
def test_rows_sum_to_one_over_real_keys_and_pads_get_nothing(variant):
    task = build_task("agreement")
    batch = task_data(task, "test", 8, 16, 0)
    assert bool(batch.padding_mask.any()), "the check needs padded examples"
    torch.manual_seed(0)
    model = BenchModel.for_task(task, variant, {}, SIZE).eval()
    with torch.no_grad():
        weights = model.attention_weights(batch.tokens, batch.padding_mask, layer=0)
    real = ~batch.padding_mask
    rows = weights.sum(-1)[real[:, None, :].expand(-1, weights.shape[1], -1)]
    torch.testing.assert_close(rows, torch.ones_like(rows))
    assert weights.masked_select(batch.padding_mask[:, None, None, :]).abs().max() == 0
    amap = extract_attention(model, task, batch.select([1]), layer=0)
    n = int(real[1].sum())
    assert amap.weights.shape[1:] == (n, n) and len(amap.rows) == len(amap.cols) == n
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(amap.heads, n))


def test_lm_self_attention_is_causal():
    task = build_task("char-lm")
    model = BenchModel.for_task(task, "multi-head", {}, SIZE).eval()
    amap = extract_attention(model, task, encode_text(task, "attention", 16))
    assert amap.cols == tuple("attention")
    assert torch.triu(amap.matrix(), diagonal=1).abs().max() == 0


def test_local_attention_is_zero_outside_its_window():
    task, window = build_task("copy"), 3
    batch = task_data(task, "test", 4, 16, 0)
    model = BenchModel.for_task(task, "local", {"window": window}, SIZE).eval()
    amap = extract_attention(model, task, batch, layer=1)
    n = amap.weights.shape[-1]
    offset = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    assert amap.weights[:, offset >= window].abs().max() == 0
    assert bool((amap.weights[:, offset < window] > 0).all())


def test_layer_and_head_pick_one_matrix():
    task = build_task("copy")
    batch = task_data(task, "test", 4, 16, 0)
    model = BenchModel.for_task(task, "multi-head", {}, SIZE).eval()
    first, last = extract_attention(model, task, batch, layer=0), extract_attention(model, task, batch)
    assert last.layer == 1 and not torch.equal(first.weights, last.weights)
    torch.testing.assert_close(last.matrix(), last.weights.mean(0))
    assert torch.equal(last.matrix(1), last.weights[1])


# ---------------------------------------------------------------------------- --text
def test_byte_text_is_encoded_as_characters():
    task = build_task("sentiment")
    batch = encode_text(task, "a fine movie", 16)
    assert task.decode(batch.tokens[0].tolist()) == "a fine movie" and int((~batch.padding_mask).sum()) == 12


def test_unknown_words_are_named(tmp_path, attention):
    code, _, err = attention("--variant", "multi-head", "--task", "agreement",
                             "--text", "The cat sat on the mat", "--out", str(tmp_path / "a.png"))
    line = one_line_error(err)
    assert code == 2 and "'sat'" in line and "'mat'" in line and "'on'" in line and "'cat'" not in line


def test_text_on_a_synthetic_task_is_not_supported(tmp_path, attention):
    code, _, err = attention("--variant", "multi-head", "--task", "copy", "--text", "abc")
    assert code == 2 and "--text is not supported for copy" in one_line_error(err)


# ---------------------------------------------------------------------------- refusals before training
def test_a_variant_without_weights_is_refused_before_training(sandbox, monkeypatch, attention):
    @attnbench.register_variant("no-weights")
    class NoWeights(torch.nn.Module):
        spec = attnbench.VariantSpec(complexity="n", returns_weights=False)

        def __init__(self, d_model, n_heads):
            super().__init__()

        def forward(self, x, context=None, *, key_padding_mask=None, causal=False, need_weights=False):
            return x, None

    def no_training(*args, **kwargs):
        raise AssertionError("trained a model whose weights cannot be drawn")

    monkeypatch.setattr(attention_map, "train_and_evaluate", no_training)
    code, _, err = attention("--variant", "no-weights", "--task", "copy")
    assert code == 2
    assert one_line_error(err) == (
        "bench: error: no-weights does not return attention weights (returns_weights=False in its spec)"
    )


def test_weights_that_fail_bench_check_are_drawn_with_a_warning(sandbox, tmp_path, attention):
    """Before: drawn without a word, as if they were the variant's attention."""
    register_uniform_weights()
    code, out, err = attention("--variant", "uniform-weights", "--task", "copy", "--out", tmp_path / "a.png")
    assert code == 0 and (tmp_path / "a.png").exists()
    assert ("bench: warning: uniform-weights fails bench check's weights check (weights differ from the "
            "reference's: rel err ") in err
    code, _, err = attention("--variant", "multi-head", "--task", "copy", "--out", tmp_path / "b.png")
    assert code == 0 and "warning" not in err


def test_the_weights_check_builds_the_layer_as_the_model_does(tmp_path, bench_output):
    """Before: checked at bench check's width (32), where heads=64 cannot be built, so a layer the
    quick profile's model (width 64) builds and draws got a warning that its weights check failed."""
    code, _, err = bench_output("attention", "--variant", "additive(heads=64)", "--task", "copy", "--steps", "1",
                                "--out", tmp_path / "a.png")
    assert code == 0 and "warning" not in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "3"], "--layer: 3 does not exist"),
        (["--head", "3"], "--head: 3 does not exist"),
        (["--head", "first"], "--head: expected"),
        (["--out", "x.txt"], "--out: x.txt must end in"),
        (["--variant", "lin*"], "--variant: give one variant"),
    ],
)
def test_bad_choices_are_one_line_errors(monkeypatch, args, message, attention):
    monkeypatch.setattr(attention_map, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    given = ["--variant", "multi-head", "--task", "copy", *args]
    if "--variant" in args:
        given = given[2:]
    code, _, err = attention(*given)
    assert code == 2 and message in one_line_error(err)


# ---------------------------------------------------------------------------- saved weights
def request(variant: str, task: str, tmp_path: Path, **changes) -> AttentionRequest:
    base = dict(variant=variant, task=task, seq_len=16, size=SIZE, settings=SETTINGS, out=tmp_path / "map.png")
    return AttentionRequest(**{**base, **changes})


def test_saved_weights_load_back_to_the_same_map(tmp_path):
    saved = tmp_path / "model.pt"
    trained = attention_figure(request("multi-head", "copy", tmp_path, save_weights=saved))
    loaded = attention_figure(request("multi-head", "copy", tmp_path, weights=saved, out=tmp_path / "again.png"))
    assert torch.equal(trained.amap.weights, loaded.amap.weights) and trained.amap.rows == loaded.amap.rows
    assert loaded.record["score"] == trained.record["score"] and loaded.record["loaded_from"] == str(saved)


def test_weights_of_another_architecture_are_one_line_errors(tmp_path, attention):
    saved = tmp_path / "copy.pt"
    code, stdout, err = attention("--variant", "multi-head", "--task", "copy", "--save-weights", str(saved),
                                  "--out", str(tmp_path / "a.png"))
    assert code == 0 and saved.exists() and f"wrote weights {saved}" in stdout, err
    code, _, err = attention("--variant", "multi-head", "--task", "agreement", "--weights", str(saved),
                             "--out", str(tmp_path / "b.png"))
    assert code == 2 and "does not fit multi-head on agreement" in one_line_error(err)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    code, _, err = attention("--variant", "multi-head", "--task", "copy", "--weights", str(junk))
    assert code == 2 and "cannot read" in one_line_error(err)


def test_a_label_in_the_figure_and_its_messages_pastes_back():
    """Before: `text-cls(source=a(1).csv)`, which --task refuses (nested parentheses)."""
    from attnbench.selection import parse_one
    from attnbench.tasks.base import TASKS

    label = attention_map._label("text-cls", {"source": "a(1).csv", "window": 64})
    assert label == "text-cls(source='a(1).csv', window=64)"
    chosen = parse_one(label, TASKS, lambda n: TASKS[n].spec.options, what="--task")
    assert (chosen.name, chosen.options) == ("text-cls", {"source": "a(1).csv", "window": 64})
