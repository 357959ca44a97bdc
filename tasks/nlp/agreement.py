"""`agreement`: subject–verb number agreement across attractors (Linzen, Dupoux & Goldberg 2016).

Capability: tracking a syntactic dependency, not the nearest cue. The input is an English sentence
prefix that stops right before the verb of its last clause: leading clauses ("the men say that"),
then that clause's subject noun phrase followed by prepositional phrases and relative clauses
("the key to the cabinets that the men like"). The class is the number the verb must take: that
of the subject's head noun (0 = singular, 1 = plural). Nouns inside the modifiers whose number
differs from the head's are *attractors*; a model that agrees with the most recent noun fails
exactly on them, as Linzen et al. found for LSTMs on corpus sentences. Generated from a small
grammar (word-level tokens; irregular plurals included), so the ground truth is exact and the
attractor count is controlled: it is drawn uniformly from 0..min(max_attractors, intervening
nouns), and the subject's number uniformly (chance 0.5).

No positional or counting shortcut decides it (the first noun, the last, the nouns' majority: its
`trivial_baselines`, 0.62-0.68 at seq_len 32), though counting gets further than any of them where
it counts the right nouns: most of the nouns after the last clause verb (the subject's clause)
scores 0.75 at seq_len 32, and a naive Bayes over the words, order ignored, 0.66-0.68 at 64 and
0.67-0.71 from 128 on (2000 test examples, seeds 0-2); both are recorded too. What decides it is
the syntax the task tests — the subject's head is
the first noun after the last clause verb (says, thinks, ...), or the first noun, which a parser of
this grammar finds every time. The leading clauses (0..`max_clauses`, uniformly) move the head off a
fixed position, and their own nouns take random numbers (with only the subject at the start,
"the first noun's number" scored 1.000); by default the attractors are any share of the
intervening nouns, so the majority's number is no cue either (capped at 3, it scored 0.87); and
by default the subject takes as many modifiers as `seq_len` has room for, so the dependency spans
the length a cell asks for (capped at 3, sentences stayed within 28 tokens at any seq_len).

Grammar: S → (NP CV that)* NP_subj; NP → the (ADJ) N MOD*; MOD → P NP | that V NP (subject
relative) | that NP V (object relative); CV a verb taking a clause (says, thinks, ...), agreeing
with its NP. The subject takes up to `max_modifiers` modifiers, drawn uniformly, and no more than
the (room - 2) // 3 that fit in what the leading clauses leave (each takes >= 3 tokens after
`the N`); a noun phrase inside a modifier or a leading clause takes one more with probability 1/2
while nesting is below `max_depth`. Verbs inside leading clauses and object relatives agree with
their own subjects, cues of the *wrong* dependency; a subject relative's verb agrees with the noun
it modifies, so on the subject's head (`the N that V ...`) it gives the answer away (571 of 2000
examples at seq_len 64, in every one with the target's number), which no trivial baseline reads.

`.meta`: `distance` = verb position − subject head position (1 = the verb would follow the head),
`attractors` (intervening nouns of the other number), `head` (position of the subject's head).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from attnbench.options import Option
from attnbench.tasks.base import MAX_ITEMS, Batch, Example, GeneratedTask, TaskSpec, accuracy_of, register_task
from attnbench.tasks.nlp.words import bag_naive_bayes_accuracy

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
CLAUSE_VERBS = (  # verbs taking a clause, in the leading clauses (singular, plural)
    ("says", "say"), ("thinks", "think"), ("believes", "believe"), ("hopes", "hope"),
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
    + tuple(w for pair in CLAUSE_VERBS for w in pair)
)
WORD_ID = {w: i for i, w in enumerate(WORDS)}
NOUN_NUMBER = {w: k for pair in NOUNS for k, w in enumerate(pair)}  # word → 0 singular / 1 plural


Draw = Callable[[], float]


def _below(draw: Draw, n: int) -> int:
    """A uniform int in [0, n)."""
    return int(draw() * n)


def _distinct(draw: Draw, n: int, k: int) -> set[int]:
    """k distinct ints of [0, n), uniformly (the first k steps of a Fisher–Yates shuffle)."""
    pool = list(range(n))
    for i in range(k):
        j = i + _below(draw, n - i)
        pool[i], pool[j] = pool[j], pool[i]
    return set(pool[:k])


@dataclass(slots=True)
class _Noun:
    """A noun slot of a sentence skeleton; its number is assigned after the skeleton is drawn."""

    lemma: int
    number: int = 0


@dataclass(slots=True)
class _Verb:
    """A relative-clause verb (or, `clause`, a leading clause's) that agrees with `subject`."""

    lemma: int
    subject: _Noun
    clause: bool = False


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
            Option("max_attractors", int, MAX_ITEMS, "most intervening nouns of the other number (default: "
                   "any share of them)", minimum=0, maximum=MAX_ITEMS),
            Option("max_modifiers", int, MAX_ITEMS, "most modifiers (PP / relative clause) on the subject "
                   "(default: as many as fit, at most (room - 2) // 3)", minimum=0, maximum=MAX_ITEMS),
            Option("max_clauses", int, 3, "most leading clauses ('the men say that') before the subject",
                   minimum=0, maximum=MAX_ITEMS),
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
    # `draw()` is a uniform float in [0, 1) from Python's Mersenne Twister, as listops draws: its
    # output is fixed across Python versions and machines, and a call costs a tenth of a numpy
    # scalar draw (a sentence at seq_len 2048 takes thousands of draws)
    def noun_phrase(self, draw: Draw, depth: int, nouns: list) -> list:
        """the (ADJ) N, then one modifier with probability 1/2 while depth < max_depth."""
        noun = _Noun(_below(draw, len(NOUNS)))
        nouns.append(noun)
        items: list = [DETERMINER]
        if draw() < P_ADJECTIVE:
            items.append(ADJECTIVES[_below(draw, len(ADJECTIVES))])
        items.append(noun)
        if depth < self.options["max_depth"] and draw() < 0.5:
            items += self.modifier(draw, noun, depth + 1, nouns)
        return items

    def modifier(self, draw: Draw, head: _Noun, depth: int, nouns: list) -> list:
        """A PP, a subject relative (that V NP) or an object relative (that NP V) on `head`."""
        kind = _below(draw, 3)
        if kind == 0:
            return [PREPOSITIONS[_below(draw, len(PREPOSITIONS))]] + self.noun_phrase(draw, depth, nouns)
        verb = _below(draw, len(VERBS))
        if kind == 1:
            return [COMPLEMENTIZER, _Verb(verb, head)] + self.noun_phrase(draw, depth, nouns)
        inner: list = []
        phrase = self.noun_phrase(draw, depth, inner)
        nouns += inner
        return [COMPLEMENTIZER] + phrase + [_Verb(verb, inner[0])]

    def leading_clauses(self, draw: Draw, seq_len: int) -> tuple[list, list[_Noun]]:
        """0..max_clauses clauses `NP CV that` (uniformly), as many as leave room for `the N`; their
        noun slots, whose numbers are drawn independently of the subject's."""
        items: list = []
        nouns: list[_Noun] = []
        for _ in range(_below(draw, self.options["max_clauses"] + 1)):
            inner: list[_Noun] = []
            clause = self.noun_phrase(draw, 1, inner)
            clause += [_Verb(_below(draw, len(CLAUSE_VERBS)), inner[0], clause=True), COMPLEMENTIZER]
            if len(items) + len(clause) + 2 > seq_len:
                break
            items += clause
            nouns += inner
        return items, nouns

    def skeleton(self, draw: Draw, room: int) -> tuple[list, list[_Noun]]:
        """Items of a subject NP with its modifiers, and its noun slots (the head first); no more
        modifiers than `room` tokens hold (so a large max_modifiers costs no more than it)."""
        nouns: list[_Noun] = []
        head = _Noun(_below(draw, len(NOUNS)))
        nouns.append(head)
        items: list = [DETERMINER]
        if draw() < P_ADJECTIVE:
            items.append(ADJECTIVES[_below(draw, len(ADJECTIVES))])
        items.append(head)
        most = min(self.options["max_modifiers"], max(0, (room - 2) // 3))  # a modifier: >= 3 tokens
        for _ in range(_below(draw, most + 1)):
            items += self.modifier(draw, head, 1, nouns)
            if len(items) > room:  # sample() refuses it: drawing the rest would be wasted
                break
        return items, nouns

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        draw = random.Random(int(rng.integers(2**63))).random
        prefix, leading = self.leading_clauses(draw, seq_len)
        room = seq_len - len(prefix)
        for _ in range(100):
            items, nouns = self.skeleton(draw, room)
            if len(items) <= room:
                break
        else:  # nothing longer fits: the bare subject
            items, nouns = [DETERMINER, nouns[0]], nouns[:1]
        for noun in leading:
            noun.number = _below(draw, 2)
        items = prefix + items
        head, others = nouns[0], nouns[1:]
        head.number = _below(draw, 2)
        k = _below(draw, min(self.options["max_attractors"], len(others)) + 1)
        flip = _distinct(draw, len(others), k)
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
            return (CLAUSE_VERBS if item.clause else VERBS)[item.lemma][item.subject.number]
        return item

    def min_seq_len(self) -> int:
        return 2  # "the N"

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Also the number of the sentence's first noun, of its last, of most of its nouns and of
        most of the nouns after its last clause verb (the subject's clause; singular on a tie):
        what a model scores that counts nouns but finds no subject; and a naive Bayes over the
        sentence's words, their order ignored (`words.bag_naive_bayes_accuracy`)."""
        number = torch.full((len(WORDS),), -1, dtype=torch.long)
        for word, k in NOUN_NUMBER.items():
            number[WORD_ID[word]] = k
        clause_verb = torch.zeros(len(WORDS), dtype=torch.bool)
        clause_verb[[WORD_ID[w] for pair in CLAUSE_VERBS for w in pair]] = True
        numbers = number[test.tokens]  # (n, seq_len): 0 / 1 at a noun, -1 elsewhere
        is_noun = numbers >= 0
        first = is_noun.long().argmax(1)  # the first of equal maxima: the first noun
        last = test.tokens.shape[1] - 1 - is_noun.flip(1).long().argmax(1)
        ends = numbers.gather(1, torch.stack([first, last], dim=1))  # (n, 2): the two nouns' numbers
        most = (2 * (numbers == 1).sum(1) > is_noun.sum(1)).long()
        positions = torch.arange(test.tokens.shape[1])
        after = positions > torch.where(clause_verb[test.tokens], positions, -1).max(1, keepdim=True).values
        in_clause = (2 * ((numbers == 1) & after).sum(1) > (is_noun & after).sum(1)).long()
        bags = [[[t for t in row if t != self.pad_id] for row in batch.tokens.tolist()] for batch in (train, test)]
        return {**super().trivial_baselines(train, test), "first noun": accuracy_of(ends[:, 0], test.target),
                "last noun": accuracy_of(ends[:, 1], test.target), "nouns' majority": accuracy_of(most, test.target),
                "last clause's nouns' majority": accuracy_of(in_clause, test.target),
                "word naive Bayes": bag_naive_bayes_accuracy(bags[0], train.target, bags[1], test.target, 2)}

    # ---------------------------------------------------------------- for people
    def token_names(self) -> list[str]:
        return list(WORDS)

    def describe_target(self, batch: Batch, i: int) -> str:
        return NUMBER_NAMES[int(batch.target[i])] + " verb"
