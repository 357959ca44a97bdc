"""`distance`: the long-range probe — retrieve the value bound to the query's key, d tokens back.

Capability: reach. The input holds a few bindings, each ONE token that names a key and its value
(`K3=v5`), among filler; the last token is the query key. The binding with that key — the only one
— sits exactly d positions before the query; decoy bindings with other keys and filler fill the
rest. Full attention answers in one content-based hop at any d (the query matches its binding's
key and reads its value), so its accuracy should not depend on d. A model that only sees the last
W tokens (local attention of window w stacked L layers deep reaches W ≈ w·L) receives, for d > W,
a window whose content is independent of the answer, so it is at chance by construction. Accuracy
bucketed by d (recorded in `.meta["distance"]`) shows where a mechanism stops reaching. A model
that sees the whole input can beat chance without the query, though: the answer is one of the bound
values, so their mode scores about 0.41 with the default options (`trivial_baselines`); read a
bucket against that, not only against chance. In the
spirit of the LRA's long-range motivation (Tay et al. 2020) and of needle-in-a-haystack probes;
generated.

Why one token per binding: with the key and the value in two adjacent tokens, the lookup needs a
two-hop circuit (a value must first learn which key precedes it, as in induction heads), and a
small multi-head model trained for 800 steps still fell from 0.95 at d in [2,4) to 0.16 at
[16,32): the probe measured how hard that circuit is to learn, not reach. With one token per
binding the same model reached 0.99 at every distance in 400 steps.

Layout: filler / decoy bindings … B* … filler … ? K*; the query key K* is the last token (position
seq_len-1) after a query marker `?`; its binding B* = (K*, V*) sits at position seq_len-1-d, and
the class is V*'s index. d is drawn uniformly from the given `distances`, or by default first a
power-of-two bucket [2^j, 2^(j+1)) uniformly, then d uniformly inside it, for 2 <= d <= seq_len - 2.
Token ids: 0 pad, 1 `?`, then the num_keys query keys, then num_keys × num_values bindings
(key-major), then the filler.
"""

from __future__ import annotations

import numpy as np

from attnbench.errors import OptionError
from attnbench.options import Option
from attnbench.tasks.base import (
    MAX_VOCAB, Batch, Example, GeneratedTask, TaskSpec, accuracy_of, parse_distances, register_task, row_counts,
)

PAD, QUERY, FIRST_KEY = 0, 1, 2
# the options' maxima: any combination keeps the vocabulary, 2 + keys + keys × values + filler,
# within MAX_VOCAB (the keys × values bindings take at most half of it, the filler a quarter)
MAX_KEYS, MAX_VALUES, MAX_FILLER = 2**8, 2**7, MAX_VOCAB // 4


@register_task("distance", aliases=("long-range", "retrieval-distance"))
class DistanceTask(GeneratedTask):
    """Classify the value bound to the query's key, d tokens back among decoys."""

    pooling = "last"  # the question is the last token: classify from it, not from a mean

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="long-range probe: the answer sits d tokens before the query (d swept)",
        source="attnbench long-range probe (cf. Tay et al. 2020, LRA); generated",
        licence="generated (no data)",
        options=(
            Option("distances", str, "", "comma-separated d values, e.g. '8,32,128'; '' = log buckets"),
            Option("num_pairs", int, 4, "key-value pairs in a sequence (1 answer + decoys; <= num_keys)",
                   minimum=1, maximum=MAX_KEYS),
            Option("num_keys", int, 8, "distinct key tokens", minimum=1, maximum=MAX_KEYS),
            Option("num_values", int, 8, "distinct values (= classes)", minimum=2, maximum=MAX_VALUES),
            Option("num_filler", int, 8, "distinct filler tokens", minimum=1, maximum=MAX_FILLER),
        ),
        has_distance=True,
    )

    def setup(self) -> None:
        o = self.options
        self.fixed = parse_distances(o["distances"], self.name)
        if self.fixed and min(self.fixed) < 2:
            raise OptionError(f"{self.name}: every distance must be >= 2 (the query marker sits at 1)")
        if o["num_pairs"] > o["num_keys"]:
            raise OptionError(
                f"{self.name}: num_pairs={o['num_pairs']} needs num_keys >= num_pairs (keys are distinct)"
            )
        self.binding_base = FIRST_KEY + o["num_keys"]
        self.filler_base = self.binding_base + o["num_keys"] * o["num_values"]
        self.vocab_size = self.filler_base + o["num_filler"]
        self.n_classes = o["num_values"]
        self.chance = 1.0 / self.n_classes

    def binding(self, key: int, value: int) -> int:
        """The token of the binding key → value (key, value as indices from 0)."""
        return self.binding_base + key * self.options["num_values"] + value

    def min_seq_len(self) -> int:
        # one slot per binding, the query marker and key; the answer at the farthest distance
        room = self.options["num_pairs"] + 2
        return max(room, max(self.fixed) + 2) if self.fixed else max(room, 4)

    def draw_distance(self, rng: np.random.Generator, seq_len: int) -> int:
        top = seq_len - 2
        if self.fixed:
            return int(self.fixed[rng.integers(len(self.fixed))])
        edges = [2]
        while edges[-1] * 2 <= top:
            edges.append(edges[-1] * 2)
        j = int(rng.integers(len(edges)))
        low, high = edges[j], min(edges[j] * 2 - 1, top)
        return int(rng.integers(low, high + 1))

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        o = self.options
        q = seq_len - 1
        d = self.draw_distance(rng, seq_len)
        keys = rng.choice(o["num_keys"], size=o["num_pairs"], replace=False)
        values = rng.integers(0, o["num_values"], size=o["num_pairs"])
        tokens = rng.integers(0, o["num_filler"], size=seq_len) + self.filler_base
        free = np.ones(seq_len, dtype=bool)
        tokens[q - 1], tokens[q] = QUERY, FIRST_KEY + keys[0]
        free[q - 1 :] = False
        v_pos = q - d
        tokens[v_pos] = self.binding(keys[0], values[0])
        free[v_pos] = False
        for key, value in zip(keys[1:], values[1:]):
            slots = np.flatnonzero(free)
            if len(slots) == 0:
                break
            s = int(slots[rng.integers(len(slots))])
            tokens[s] = self.binding(key, value)
            free[s] = False
        return Example(tokens, int(values[0]), {"distance": d, "query_pos": q, "value_pos": v_pos})

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Also "most frequent bound value": the value bound most often in the sequence, whatever its
        key (the smallest among ties): the answer is one of the bound values, so this beats chance
        without finding the query's binding."""
        o = self.options
        is_binding = (test.tokens >= self.binding_base) & (test.tokens < self.filler_base)
        values = (test.tokens - self.binding_base).clamp(min=0) % o["num_values"]
        answer = row_counts(values, is_binding, o["num_values"]).argmax(-1)
        return {**super().trivial_baselines(train, test), "most frequent bound value": accuracy_of(answer, test.target)}

    def class_names(self) -> list[str]:
        """A class is a value, v0 … as the bindings K·=v· in the input name it."""
        return [f"v{v}" for v in range(self.options["num_values"])]

    def token_names(self) -> list[str]:
        o = self.options
        return (
            ["<pad>", "?"]
            + [f"K{i}" for i in range(o["num_keys"])]
            + [f"K{k}=v{v}" for k in range(o["num_keys"]) for v in range(o["num_values"])]
            + ["." if o["num_filler"] == 1 else f".{i}" for i in range(o["num_filler"])]
        )
