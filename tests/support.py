"""Helpers the test modules share (imported, not collected: the name does not start with test_)."""

from __future__ import annotations


def one_error_line(err: str) -> str:
    """The single stderr line of a refused command (and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert "Traceback" not in err
    return lines[0]


# a task that can only be built up to 16 tokens: written as a --plugin file, or exec'd in process
CAPPED = '''
from attnbench import register_task
from attnbench.tasks import Example, GeneratedTask, TaskSpec


@register_task("capped")
class Capped(GeneratedTask):
    """A task that can only be built up to 16 tokens."""

    spec = TaskSpec(kind="classify", metric="accuracy", description="first bit", source="a test plugin",
                    licence="generated (no data)", max_seq_len=16)
    vocab_size, n_classes, chance, pad_id = 3, 2, 0.5, 0

    def sample(self, rng, seq_len):
        bits = rng.integers(0, 2, size=seq_len)
        return Example(bits + 1, int(bits[0]))
'''


def register_uniform_weights() -> None:
    """Register `uniform-weights`: multi-head attention whose weights are uniform over the keys each
    query may see (non-negative, rows summing to 1, causal), not the ones its output used. Call it
    inside the `sandbox` fixture."""
    from attnbench import register_variant
    from attnbench.variants.multi_head import MultiHeadAttention

    @register_variant("uniform-weights")
    class UniformWeights(MultiHeadAttention):
        def forward(self, x, context=None, *, need_weights=False, **kwargs):
            out, weights = super().forward(x, context, need_weights=need_weights, **kwargs)
            if weights is None:
                return out, None
            allowed = (weights > 0).to(weights.dtype)  # uniform over the keys it may see: causal, rows sum to 1
            return out, allowed / allowed.sum(-1, keepdim=True)
