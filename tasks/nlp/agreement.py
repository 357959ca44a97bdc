"""`agreement`: subject–verb number agreement across attractors (Linzen, Dupoux & Goldberg 2016).

Capability: tracking a syntactic dependency, not the nearest cue. The input is an English sentence
prefix that stops right before its main verb: a subject noun phrase followed by prepositional
phrases and relative clauses ("the key to the cabinets that the men like"). The class is the
number the verb must take: that of the subject's head noun (0 = singular, 1 = plural). Nouns
inside the modifiers whose number differs from the head's are *attractors*; a model that agrees
with the most recent noun fails exactly on them, as Linzen et al. found for LSTMs on corpus
sentences. Generated from a small grammar (word-level tokens; irregular plurals included), so the
ground truth is exact and the attractor count is controlled: it is drawn uniformly from
0..min(max_attractors, intervening nouns), and the subject's number uniformly (chance 0.5).

Grammar: S → NP_subj; NP → the (ADJ) N MOD*; MOD → P NP | that V NP (subject relative) |
that NP V (object relative). The subject takes up to `max_modifiers` modifiers, and no more than
the (seq_len - 2) // 3 that fit (each takes >= 3 tokens after `the N`); a noun phrase inside a
modifier takes one more with probability 1/2 while nesting is below `max_depth`. Verbs
inside relative clauses agree with their own subjects (the modified noun, or the relative
clause's NP), so they are correct intervening cues of the *wrong* dependency.

`.meta`: `distance` = verb position − subject head position (1 = the verb would follow the head),
`attractors` (intervening nouns of the other number), `head` (position of the subject's head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnbench.options import Option
from attnbench.tasks.base import MAX_ITEMS, Batch, Example, GeneratedTask, TaskSpec, register_task

NOUNS = (  # (singular, plural)
    ("dog", "dogs"), ("cat", "cats"), ("key", "keys"), ("cabinet", "cabinets"),
    ("author", "authors"), ("book", "books"), ("teacher", "teachers"), ("student", "students"),
    ("farmer", "farmers"), ("table", "tables"), ("pilot", "pilots"), ("senator", "senators"),
    ("painting", "paintings"), ("child", "children"), ("man", "men"), ("woman", "women"),
    ("mouse", "mice"), ("box", "boxes"),
)
VERBS = (  # relative-clause verbs (singular, plural)
    ("likes", "like"), ("sees", "see"), ("knows", "know"), ("chases", "chase"),
    ("admires", "admire"), ("helps", "help"), ("follows", "follow"), ("visits", "visit"),
)
ADJECTIVES = ("old", "small", "red", "happy", "famous", "quiet", "tall", "new")
PREPOSITIONS = ("near", "behind", "with", "beside", "from", "under", "of", "to")
DETERMINER, COMPLEMENTIZER = "the", "that"
P_ADJECTIVE = 0.3
NUMBER_NAMES = ("singular", "plural")
# nesting goes one level deeper with probability 1/2, so a depth past this one never occurs (2^-63)
MAX_DEPTH = 64

WORDS = (
    ("<pad>", DETERMINER, COMPLEMENTIZER)
    + ADJECTIVES
    + PREPOSITIONS
    + tuple(w for pair in NOUNS for w in pair)
    + tuple(w for pair in VERBS for w in pair)
)
WORD_ID = {w: i for i, w in enumerate(WORDS)}
NOUN_NUMBER = {w: k for pair in NOUNS for k, w in enumerate(pair)}  # word → 0 singular / 1 plural


@dataclass
class _Noun:
    """A noun slot of a sentence skeleton; its number is assigned after the skeleton is drawn."""

    lemma: int
    number: int = 0


@dataclass
class _Verb:
    """A relative-clause verb that agrees with `subject`."""

    lemma: int
    subject: _Noun


@register_task("agreement")
class AgreementTask(GeneratedTask):
    """Predict the number of the main verb after a subject with intervening attractors."""

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="subject-verb number agreement across attractor nouns (Linzen et al. 2016)",
        source="Linzen, Dupoux & Goldberg 2016 (TACL), agreement prediction; generated from a small grammar",
        licence="generated (no data)",
        options=(
            Option("max_attractors", int, 3, "most intervening nouns of the other number (at most all of "
                   "them)", minimum=0, maximum=MAX_ITEMS),
            Option("max_modifiers", int, 3, "most modifiers (PP / relative clause) on the subject; at most "
                   "(seq_len - 2) // 3 fit", minimum=0, maximum=MAX_ITEMS),
            Option("max_depth", int, 2, "most nesting of modifiers inside modifiers (each level with "
                   "probability 1/2)", minimum=1, maximum=MAX_DEPTH),
        ),
        has_distance=True,
    )
    pooling = "last"  # the verb would come right after the last token: classify from it

    def setup(self) -> None:
        self.vocab_size = len(WORDS)
        self.n_classes = 2
        self.chance = 0.5

    # ---------------------------------------------------------------- the grammar
    def noun_phrase(self, rng: np.random.Generator, depth: int, nouns: list) -> list:
        """the (ADJ) N, then one modifier with probability 1/2 while depth < max_depth."""
        noun = _Noun(int(rng.integers(len(NOUNS))))
        nouns.append(noun)
        items: list = [DETERMINER]
        if rng.random() < P_ADJECTIVE:
            items.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
        items.append(noun)
        if depth < self.options["max_depth"] and rng.random() < 0.5:
            items += self.modifier(rng, noun, depth + 1, nouns)
        return items

    def modifier(self, rng: np.random.Generator, head: _Noun, depth: int, nouns: list) -> list:
        """A PP, a subject relative (that V NP) or an object relative (that NP V) on `head`."""
        kind = int(rng.integers(3))
        if kind == 0:
            return [PREPOSITIONS[rng.integers(len(PREPOSITIONS))]] + self.noun_phrase(rng, depth, nouns)
        verb = int(rng.integers(len(VERBS)))
        if kind == 1:
            return [COMPLEMENTIZER, _Verb(verb, head)] + self.noun_phrase(rng, depth, nouns)
        inner: list = []
        phrase = self.noun_phrase(rng, depth, inner)
        nouns += inner
        return [COMPLEMENTIZER] + phrase + [_Verb(verb, inner[0])]

    def skeleton(self, rng: np.random.Generator, seq_len: int) -> tuple[list, list[_Noun]]:
        """Items of a subject NP with its modifiers, and its noun slots (the head first); no more
        modifiers than `seq_len` has room for (so a large max_modifiers costs no more than it)."""
        nouns: list[_Noun] = []
        head = _Noun(int(rng.integers(len(NOUNS))))
        nouns.append(head)
        items: list = [DETERMINER]
        if rng.random() < P_ADJECTIVE:
            items.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
        items.append(head)
        most = min(self.options["max_modifiers"], max(0, (seq_len - 2) // 3))  # a modifier: >= 3 tokens
        for _ in range(int(rng.integers(most + 1))):
            items += self.modifier(rng, head, 1, nouns)
        return items, nouns

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        for _ in range(100):
            items, nouns = self.skeleton(rng, seq_len)
            if len(items) <= seq_len:
                break
        else:  # nothing longer fits: the bare subject
            items, nouns = [DETERMINER, nouns[0]], nouns[:1]
        head, others = nouns[0], nouns[1:]
        head.number = int(rng.integers(2))
        k = int(rng.integers(min(self.options["max_attractors"], len(others)) + 1))
        flip = set(rng.choice(len(others), size=k, replace=False).tolist()) if k else set()
        for j, noun in enumerate(others):
            noun.number = 1 - head.number if j in flip else head.number
        tokens = [WORD_ID[self.word(item)] for item in items]
        head_pos = next(i for i, item in enumerate(items) if item is head)
        meta = {"distance": len(tokens) - head_pos, "attractors": k, "head": head_pos}
        return Example(tokens, head.number, meta)

    @staticmethod
    def word(item: str | _Noun | _Verb) -> str:
        if isinstance(item, _Noun):
            return NOUNS[item.lemma][item.number]
        if isinstance(item, _Verb):
            return VERBS[item.lemma][item.subject.number]
        return item

    def min_seq_len(self) -> int:
        return 2  # "the N"

    # ---------------------------------------------------------------- for people
    def token_names(self) -> list[str]:
        return list(WORDS)

    def describe_target(self, batch: Batch, i: int) -> str:
        return NUMBER_NAMES[int(batch.target[i])] + " verb"
