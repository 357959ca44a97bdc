"""`induction`: induction heads, `A B … A → B`.

Capability: match the current token to its earlier occurrence and copy what followed it — the
two-layer "induction head" circuit (Olsson et al. 2022, "In-context Learning and Induction Heads";
the synthetic task of Fu et al. 2023, H3). The earlier occurrence sits d tokens back (d recorded).

Layout: random symbols with one trigger A at position p followed by B; the last token is A again;
classify B. distance = (seq_len - 1) - (p + 1), the gap from the query to B, uniform in
[1, seq_len - 2].
"""

from __future__ import annotations

import numpy as np

from attnbench.options import Option
from attnbench.tasks.base import MAX_VOCAB, Example, TaskSpec, register_task
from attnbench.tasks.synthetic.symbols import SymbolTask

PAD, TRIGGER, FIRST = 0, 1, 2


@register_task("induction", aliases=("induction-heads",))
class InductionTask(SymbolTask):
    """Classify the token that followed the earlier occurrence of the final trigger."""

    first_symbol = FIRST
    pooling = "last"  # the question is the last token: classify from it, not from a mean

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="A B ... A -> B: recall what followed the trigger d tokens back",
        source="Olsson et al. 2022; Fu et al. 2023 (H3); generated",
        licence="generated (no data)",
        options=(
            Option("num_symbols", int, 16, "distinct symbols (= classes)", minimum=2, maximum=MAX_VOCAB - FIRST),
        ),
        has_distance=True,
    )

    def min_seq_len(self) -> int:
        return 3

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        tokens = rng.integers(0, self.n_classes, size=seq_len) + FIRST
        p = int(rng.integers(0, seq_len - 2))  # trigger position; B at p + 1
        tokens[p] = TRIGGER
        tokens[-1] = TRIGGER
        answer = int(tokens[p + 1]) - FIRST
        q = seq_len - 1
        return Example(tokens, answer, {"distance": q - (p + 1), "query_pos": q})

    def token_names(self) -> list[str]:
        return ["<pad>", "A*"] + [f"s{i}" for i in range(self.n_classes)]
