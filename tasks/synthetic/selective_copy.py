"""`selective-copy`: copy the data tokens in order, ignoring the noise between them.

Capability: content-dependent selection — which tokens matter depends on what they are, not where
they are (Gu & Dao 2023, "Mamba", Section 3.1 / Figure 2; after Jing et al. 2019's variable copy).
Time-invariant recurrences and fixed-offset lookups fail it; attention solves it.

Layout: a region of seq_len - 1 - k positions holding k data symbols at random places among noise
tokens, then SEP and k blanks; blank i is labelled with the i-th data symbol. The distance of a
blank is its offset from the data symbol it must copy.
"""

from __future__ import annotations

import numpy as np

from attnbench.options import Option
from attnbench.tasks.base import IGNORE_INDEX, MAX_ITEMS, MAX_VOCAB, NO_DISTANCE, Example, TaskSpec, register_task
from attnbench.tasks.synthetic.symbols import SymbolTask

PAD, NOISE, SEP, BLANK, FIRST = 0, 1, 2, 3, 4


@register_task("selective-copy", aliases=("selective-copying",))
class SelectiveCopyTask(SymbolTask):
    """Copy the non-noise symbols, in order, into the blanks after a separator."""

    first_symbol = FIRST

    spec = TaskSpec(
        kind="tag",
        metric="accuracy",
        description="copy the data tokens scattered among noise, in order",
        source="Gu & Dao 2023 (Mamba) selective copying; generated",
        licence="generated (no data)",
        options=(
            Option("num_tokens", int, 8, "data tokens to copy (needs seq_len >= 2 * num_tokens + 1)", minimum=1,
                   maximum=MAX_ITEMS),
            Option("num_symbols", int, 8, "distinct data symbols", minimum=2, maximum=MAX_VOCAB - FIRST),
        ),
        has_distance=True,
    )

    def min_seq_len(self) -> int:
        return 2 * self.options["num_tokens"] + 1

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        k = self.options["num_tokens"]
        region = seq_len - 1 - k
        where = np.sort(rng.choice(region, size=k, replace=False))
        data = rng.integers(0, self.n_classes, size=k)
        tokens = np.full(region, NOISE, dtype=np.int64)
        tokens[where] = data + FIRST
        out = region + 1 + np.arange(k)
        return Example(
            [*tokens, SEP, *([BLANK] * k)],
            [IGNORE_INDEX] * (region + 1) + data.tolist(),
            {"distance": [NO_DISTANCE] * (region + 1) + (out - where).tolist()},
        )

    def token_names(self) -> list[str]:
        return ["<pad>", ".", "|", "_"] + [chr(ord("a") + i) if i < 26 else f"s{i}" for i in range(self.n_classes)]
