"""`distance`: the long-range probe — retrieve a value bound d positions before the query.

Capability: reach. The query names a key; the key–value pair that answers it is the only one with
that key, and its nearest token (the value) sits exactly d positions before the query; decoy pairs
with other keys and filler tokens fill the rest. A model that only sees the last W tokens (local
attention of window w stacked L layers deep reaches W = w·L) receives, for d > W, a window whose
content is independent of the answer, so it is at chance by construction; full attention is not.
Accuracy bucketed by d (recorded in `.meta["distance"]`) shows where a mechanism stops reaching.
In the spirit of the LRA's long-range motivation (Tay et al. 2020) and of needle-in-a-haystack
probes; generated.

Layout: filler / decoy pairs (k, v) … K* V* … filler … Q K*; the query is the last token (K*,
position seq_len-1), the answer is V* (class = value index) at position seq_len-1-d, its key right
before it. d is drawn uniformly from the given `distances`, or by default first a power-of-two
bucket [2^j, 2^(j+1)) uniformly, then d uniformly inside it, for 2 <= d <= seq_len - 2.
"""

from __future__ import annotations

import numpy as np

from attnbench.errors import OptionError
from attnbench.options import Option
from attnbench.tasks.base import Example, GeneratedTask, TaskSpec, parse_distances, register_task

PAD, QUERY, FIRST_KEY = 0, 1, 2


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
            Option("num_pairs", int, 4, "key-value pairs in a sequence (1 answer + decoys)", minimum=1),
            Option("num_keys", int, 8, "distinct key tokens", minimum=1),
            Option("num_values", int, 8, "distinct values (= classes)", minimum=2),
            Option("num_filler", int, 8, "distinct filler tokens", minimum=1),
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
        self.value_base = FIRST_KEY + o["num_keys"]
        self.filler_base = self.value_base + o["num_values"]
        self.vocab_size = self.filler_base + o["num_filler"]
        self.n_classes = o["num_values"]
        self.chance = 1.0 / self.n_classes

    def min_seq_len(self) -> int:
        # 2 decoy slots per pair, query marker + key; the answer pair at the farthest distance
        room = 2 * self.options["num_pairs"] + 2
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
        keys = rng.choice(o["num_keys"], size=o["num_pairs"], replace=False) + FIRST_KEY
        values = rng.integers(0, o["num_values"], size=o["num_pairs"]) + self.value_base
        tokens = rng.integers(0, o["num_filler"], size=seq_len) + self.filler_base
        free = np.ones(seq_len, dtype=bool)
        tokens[q - 1], tokens[q] = QUERY, keys[0]
        free[q - 1 :] = False
        v_pos = q - d
        tokens[v_pos - 1], tokens[v_pos] = keys[0], values[0]
        free[v_pos - 1 : v_pos + 1] = False
        for key, value in zip(keys[1:], values[1:]):
            starts = np.flatnonzero(free[:-1] & free[1:])
            if len(starts) == 0:
                break
            s = int(starts[rng.integers(len(starts))])
            tokens[s], tokens[s + 1] = key, value
            free[s : s + 2] = False
        answer = int(values[0]) - self.value_base
        return Example(tokens, answer, {"distance": d, "query_pos": q, "value_pos": v_pos})

    def token_names(self) -> list[str]:
        o = self.options
        return (
            ["<pad>", "?"]
            + [f"K{i}" for i in range(o["num_keys"])]
            + [f"v{i}" for i in range(o["num_values"])]
            + ["." if o["num_filler"] == 1 else f".{i}" for i in range(o["num_filler"])]
        )
