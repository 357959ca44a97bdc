"""The harness: heads per task kind, positions, pooling, unsupported combinations."""

from __future__ import annotations

import pytest
import torch

from attnbench.errors import UnsupportedError
from attnbench.runner.model import BenchModel, ModelSize
from attnbench.tasks import build_task

SIZE = ModelSize(d_model=16, n_layers=1, n_heads=2)


@pytest.mark.parametrize("task_name", ["copy", "distance", "char-lm", "translation"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_logits_have_the_shape_each_kind_needs(task_name, positions):
    task = build_task(task_name)
    batch = task.build("train", 3, 32, 0)
    model = BenchModel.for_task(task, "multi-head", {}, ModelSize(**{**SIZE.to_dict(), "positions": positions}))
    if task.spec.kind == "seq2seq":
        from attnbench.tasks import shift_right

        logits = model(batch.tokens, batch.padding_mask, shift_right(batch.target, task.bos_id, task.pad_id))
        assert logits.shape == (*batch.target.shape, task.target_vocab_size)
    else:
        logits = model(batch.tokens, batch.padding_mask)
        width = {"classify": task.n_classes, "tag": task.n_classes, "lm": task.vocab_size}[task.spec.kind]
        expected = (3, width) if task.spec.kind == "classify" else (3, 32, width)
        assert logits.shape == expected


def test_lm_is_causal_the_future_does_not_change_the_past():
    task = build_task("char-lm")
    model = BenchModel.for_task(task, "linear", {}, SIZE).eval()
    tokens = torch.randint(1, 257, (1, 16))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] % 256) + 1
    pad = torch.zeros_like(tokens, dtype=torch.bool)
    with torch.no_grad():
        a, b = model(tokens, pad), model(changed, pad)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_last_pooling_reads_the_last_real_token():
    task = build_task("distance")
    model = BenchModel.for_task(task, "multi-head", {}, SIZE)
    assert model.pooling == "last"
    states = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    pad = torch.tensor([[False, False, False, False], [False, False, True, True]])
    assert model.pool(states, pad).flatten().tolist() == [3.0, 5.0]
    model.pooling = "mean"
    assert model.pool(states, pad).flatten().tolist() == [1.5, 4.5]


def test_unsupported_combinations_raise_unsupported():
    with pytest.raises(UnsupportedError, match="cross-attention"):
        BenchModel.for_task(build_task("translation"), "local", {"window": 4}, SIZE)
    model = BenchModel.for_task(build_task("translation"), "multi-head", {}, SIZE, cross=("additive", {}))
    assert type(model.decoder.blocks[0].cross_attn).__name__ == "AdditiveAttention"
