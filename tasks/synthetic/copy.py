"""`copy`: copy (or reverse) a random segment after a separator.

Capability: position-addressed retrieval over a fixed offset (copy: every output reads the token
k+1 positions back; reverse: offsets 2, 4, ..., 2k). The classic sequence-to-sequence sanity task
(Graves et al. 2014, "Neural Turing Machines"; the copy/reverse tasks of the Long Range Arena's
precursors), posed here as tagging so that one encoder pass answers it.

Layout: x_1 … x_k SEP _ … _ (k blanks) pad…; the target at blank i is x_i (x_{k+1-i} reversed);
k is drawn from [ceil(k_max/2), k_max] with k_max = (seq_len - 1) // 2.
"""

from __future__ import annotations

import numpy as np

from attnbench.options import Option
from attnbench.tasks.base import IGNORE_INDEX, MAX_VOCAB, NO_DISTANCE, Example, TaskSpec, register_task
from attnbench.tasks.synthetic.symbols import SymbolTask

PAD, SEP, BLANK, FIRST = 0, 1, 2, 3


@register_task("copy")  # no "reverse-copy" alias: an alias cannot set reverse=True
class CopyTask(SymbolTask):
    """Copy or reverse a random segment of symbols into the blanks after a separator."""

    first_symbol = FIRST

    spec = TaskSpec(
        kind="tag",
        metric="accuracy",
        description="copy (or reverse) a random segment after a separator",
        source="Graves et al. 2014 (copy task); generated",
        licence="generated (no data)",
        options=(
            Option("reverse", bool, False, "write the segment reversed"),
            Option("num_symbols", int, 8, "distinct symbols in the segment", minimum=2, maximum=MAX_VOCAB - FIRST),
        ),
        has_distance=True,
    )

    def min_seq_len(self) -> int:
        return 3

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        k_max = (seq_len - 1) // 2
        k = int(rng.integers((k_max + 1) // 2, k_max + 1)) if k_max > 1 else 1
        segment = rng.integers(0, self.n_classes, size=k)
        src = np.arange(k)[::-1] if self.options["reverse"] else np.arange(k)
        out = k + 1 + np.arange(k)  # positions of the blanks
        tokens = [*(segment + FIRST), SEP, *([BLANK] * k)]
        target = [IGNORE_INDEX] * (k + 1) + segment[src].tolist()
        distance = [NO_DISTANCE] * (k + 1) + (out - src).tolist()
        return Example(tokens, target, {"distance": distance, "length": k})

    def token_names(self) -> list[str]:
        return ["<pad>", "|", "_"] + [chr(ord("a") + i) if i < 26 else f"s{i}" for i in range(self.n_classes)]
