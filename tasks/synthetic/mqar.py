"""`mqar`: multi-query associative recall, as in Zoology (Arora et al. 2023, "Zoology: Measuring
and Improving Recall in Efficient Language Models", the `multiquery_ar` generator).

Capability: recall — store many key→value bindings and look several of them up later. Attention
solves it at any number of pairs; fixed-size recurrent states (linear attention) degrade as
`num_kv_pairs` grows at a fixed model width, which is what this task is for.

Layout (Zoology's): k_1 v_1 … k_N v_N, then a query region where each key appears once more at
an even offset 2·g, the gaps g drawn without replacement with power-law probabilities
p(g) ∝ a·g^(a-1) (a = 0.01), every other position a random token. The target at a query is the
value bound to that key (tag kind; other positions are ignored). Keys are ids 1 … V/2-1, values
V/2 … V-1, 0 is padding; the label is the value's index (value id - V/2). The distance of a query
is its offset from the key's binding.
"""

from __future__ import annotations

import numpy as np
import torch

from attnbench.errors import OptionError
from attnbench.options import Option
from attnbench.tasks.base import (
    IGNORE_INDEX, MAX_ITEMS, MAX_VOCAB, NO_DISTANCE, Batch, Example, GeneratedTask, TaskSpec, register_task,
    row_counts,
)

POWER_A = 0.01  # Zoology's default power_a


@register_task("mqar", aliases=("associative-recall", "multi-query-ar"))
class MQARTask(GeneratedTask):
    """Zoology's multi-query associative recall, one label per query position."""

    spec = TaskSpec(
        kind="tag",
        metric="accuracy",
        description="multi-query associative recall: kv pairs, then queries at power-law gaps",
        source="Arora et al. 2023 (Zoology) multiquery_ar; generated",
        licence="generated (no data)",
        options=(
            Option("num_kv_pairs", int, 8, "key-value pairs per sequence (needs seq_len >= 4 * num_kv_pairs)",
                   minimum=1, maximum=MAX_ITEMS),
            Option("vocab_size", int, 64, "ids in all: pad, keys (first half), values (second half)", minimum=4,
                   maximum=MAX_VOCAB),
        ),
        has_distance=True,
    )

    def setup(self) -> None:
        vocab, pairs = self.options["vocab_size"], self.options["num_kv_pairs"]
        self.vocab_size = vocab
        self.value_base = vocab // 2
        self.n_keys = self.value_base - 1  # ids 1 .. value_base - 1
        self.n_classes = vocab - self.value_base
        if pairs > min(self.n_keys, self.n_classes):
            raise OptionError(
                f"{self.name}: num_kv_pairs={pairs} needs vocab_size >= {2 * pairs + 2} "
                f"(distinct keys and values), got vocab_size={vocab}"
            )
        self.chance = 1.0 / self.n_classes

    def min_seq_len(self) -> int:
        return 4 * self.options["num_kv_pairs"]

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        pairs = self.options["num_kv_pairs"]
        context = 2 * pairs
        keys = rng.choice(self.n_keys, size=pairs, replace=False) + 1
        values = rng.choice(self.n_classes, size=pairs, replace=False)
        space = (seq_len - context) // 2
        p = POWER_A * np.arange(1, space + 1, dtype=np.float64) ** (POWER_A - 1)
        gaps = rng.choice(space, size=pairs, replace=False, p=p / p.sum())
        tokens = rng.integers(1, self.vocab_size, size=seq_len)  # random non-query tokens
        tokens[0:context:2] = keys
        tokens[1:context:2] = values + self.value_base
        query = context + 2 * gaps
        tokens[query] = keys
        # a filler token must not repeat a key: its label would be ambiguous (ignored) noise
        filler = np.ones(seq_len, dtype=bool)
        filler[:context] = False
        filler[query] = False
        clash = filler & np.isin(tokens, keys)
        while clash.any():
            tokens[clash] = rng.integers(1, self.vocab_size, size=int(clash.sum()))
            clash = filler & np.isin(tokens, keys)
        target = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
        target[query] = values
        distance = np.full(seq_len, NO_DISTANCE, dtype=np.int64)
        distance[query] = query - 2 * np.arange(pairs)  # from the key's binding
        return Example(tokens, target, {"distance": distance})

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Also "random context value": the expected accuracy of answering each query with a value
        of its sequence's bindings drawn at random (1 / num_kv_pairs when the bindings hold the
        answer once, as here): what a model scores that knows the layout but recalls nothing."""
        pairs = self.options["num_kv_pairs"]
        values = test.tokens[:, 1:2 * pairs:2] - self.value_base  # (n, pairs)
        counts = row_counts(values, torch.ones_like(values, dtype=torch.bool), self.n_classes)  # bound, per row
        row, _ = (test.target != IGNORE_INDEX).nonzero(as_tuple=True)
        answers = test.target[test.target != IGNORE_INDEX]
        expected = float(counts[row, answers].double().mean() / pairs) if len(answers) else 0.0
        return {**super().trivial_baselines(train, test), "random context value": expected}

    def token_names(self) -> list[str]:
        return ["<pad>"] + [f"k{i}" for i in range(1, self.value_base)] + self.class_names()

    def class_names(self) -> list[str]:
        """A class is a value: named as the input names it."""
        return [f"v{i}" for i in range(self.n_classes)]
