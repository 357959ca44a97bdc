"""`translation`: toy translation with reordering and agreement morphology, with gold alignments.

Capability: content-based cross-attention — find, for each output word, the input word it
translates when the word order differs, and carry agreement across the sentence. The source is an
English-like SVO language, DET ADJ* N V DET ADJ* N (determiners and the verb agree in number
with their noun), clauses joined by "and"; the target
language is verb-final (SOV), puts adjectives after the noun in mirror order, and marks the verb's
agreement with its subject by a suffix token (-ka singular, -ri plural):

    the big old dog sees some red cats  →  le kan vyel gran des maou rug vid -ka <eos>
                                           (DET N ADJ* mirrored; verb stem + suffix, at the end)

Every source word has one target word (the LEXICON), except that both forms of a source verb
("sees" / "see") translate to one stem; the suffix carries the number instead. The metric is exact
match of the whole target (greedy decoding). In the spirit of the toy reordering tasks used to
study attention in NMT (Bahdanau et al. 2015; Luong et al. 2015); generated.

Vocabularies are separate: source ids 0 = pad, then source words; target ids 0 = pad, 1 = <bos>,
2 = <eos>, then target words (`target_vocab_size`, `bos_id`, `eos_id`).

`.meta["alignment"]` (n, target_len): for each target position j the source position its word
translates (the verb stem → the source verb); -1 for the agreement suffix (it translates no single
word), <eos> and padding. Row j is scored against the cross-attention of the decoder step that
*predicts* target[j]. `alignment_error_rate(weights, alignment)` scores attention against it.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from attnbench.options import Option
from attnbench.tasks.base import (
    IGNORE_INDEX,
    MAX_ITEMS,
    NO_DISTANCE,
    Batch,
    Example,
    GeneratedTask,
    TaskError,
    TaskSpec,
    register_task,
)

DETERMINERS = {"the": "le", "a": "un", "this": "ce", "these": "ces", "some": "des"}
DETERMINER_NUMBERS = {"the": (0, 1), "a": (0,), "this": (0,), "these": (1,), "some": (1,)}  # agreement
ADJECTIVES = {"old": "vyel", "red": "rug", "small": "piti", "happy": "gai", "big": "gran", "quiet": "kwa"}
NOUNS = {  # (singular, plural) → (singular, plural)
    ("dog", "dogs"): ("kan", "kanu"),
    ("cat", "cats"): ("mao", "maou"),
    ("bird", "birds"): ("pio", "piou"),
    ("child", "children"): ("bam", "bamu"),
    ("farmer", "farmers"): ("rol", "rolu"),
    ("teacher", "teachers"): ("mes", "mesu"),
    ("book", "books"): ("liv", "livu"),
    ("house", "houses"): ("kaz", "kazu"),
}
VERBS = {  # (singular, plural) → stem
    ("sees", "see"): "vid",
    ("likes", "like"): "am",
    ("helps", "help"): "jut",
    ("finds", "find"): "tro",
    ("follows", "follow"): "seg",
    ("visits", "visit"): "viz",
}
CONJUNCTION = ("and", "e")
SUFFIXES = ("-ka", "-ri")  # verb agreement: singular, plural subject

SOURCE_WORDS = (
    ("<pad>", CONJUNCTION[0])
    + tuple(DETERMINERS)
    + tuple(ADJECTIVES)
    + tuple(w for pair in NOUNS for w in pair)
    + tuple(w for pair in VERBS for w in pair)
)
TARGET_WORDS = (
    ("<pad>", "<bos>", "<eos>", CONJUNCTION[1])
    + SUFFIXES
    + tuple(DETERMINERS.values())
    + tuple(ADJECTIVES.values())
    + tuple(w for pair in NOUNS.values() for w in pair)
    + tuple(VERBS.values())
)
LEXICON: dict[str, str] = {  # source word → the target word it translates to
    CONJUNCTION[0]: CONJUNCTION[1],
    **DETERMINERS,
    **ADJECTIVES,
    **{s: t for src, tgt in NOUNS.items() for s, t in zip(src, tgt)},
    **{form: stem for forms, stem in VERBS.items() for form in forms},
}
SOURCE_ID = {w: i for i, w in enumerate(SOURCE_WORDS)}
TARGET_ID = {w: i for i, w in enumerate(TARGET_WORDS)}
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
_NOUN_PAIRS = tuple(NOUNS)
_VERB_PAIRS = tuple(VERBS)
_ADJECTIVES = tuple(ADJECTIVES)
_DETERMINERS_OF = tuple(tuple(d for d, ok in DETERMINER_NUMBERS.items() if k in ok) for k in (0, 1))


def alignment_error_rate(weights: Tensor, alignment: Tensor) -> float:
    """Share of aligned target positions whose most-attended source position is not the gold one.

    weights: (b, tgt, src) cross-attention, or (b, heads, tgt, src) averaged over heads;
    alignment: (b, tgt') gold source positions with -1 where unscored, tgt' <= tgt (the rows beyond
    tgt' are ignored). With one predicted and one gold link per scored position this equals the
    AER of Och & Ney (2003) with sure links only. NaN when nothing is scored.
    """
    if weights.dim() == 4:
        weights = weights.float().mean(dim=1)
    if weights.dim() != 3 or alignment.dim() != 2:
        raise TaskError(
            f"alignment_error_rate: weights must be (b, tgt, src) or (b, h, tgt, src) and alignment "
            f"(b, tgt); got {tuple(weights.shape)} and {tuple(alignment.shape)}"
        )
    b, width = alignment.shape
    if weights.shape[0] != b or weights.shape[1] < width:
        raise TaskError(
            f"alignment_error_rate: weights {tuple(weights.shape)} do not cover alignment "
            f"{tuple(alignment.shape)}"
        )
    scored = alignment >= 0
    if not bool(scored.any()):
        return float("nan")
    predicted = weights[:, :width].argmax(dim=-1).to(alignment.device)
    wrong = (predicted != alignment) & scored
    return float(wrong.sum()) / float(scored.sum())


@register_task("translation")
class TranslationTask(GeneratedTask):
    """Translate an SVO sentence into a verb-final language with agreement suffixes."""

    spec = TaskSpec(
        kind="seq2seq",
        metric="exact_match",
        description="toy translation: SVO→SOV, adjectives after nouns, verb agreement suffix",
        source="attnbench toy translation (cf. Bahdanau et al. 2015 alignment); generated",
        licence="generated (no data)",
        options=(
            Option("max_adjectives", int, 2, f"most adjectives before a noun (distinct: of the {len(ADJECTIVES)})",
                   minimum=0, maximum=len(ADJECTIVES)),
            Option("max_clauses", int, 1, "most S-V-O clauses joined by 'and'; at most (seq_len + 1) // 6 fit",
                   minimum=1, maximum=MAX_ITEMS),
        ),
    )

    bos_id = BOS_ID
    eos_id = EOS_ID

    def setup(self) -> None:
        o = self.options
        self.vocab_size = len(SOURCE_WORDS)
        self.target_vocab_size = len(TARGET_WORDS)
        self.n_classes = None
        clause = 2 * (2 + o["max_adjectives"]) + 1
        self.max_source_len = o["max_clauses"] * (clause + 1) - 1
        self.max_target_len = self.max_source_len + o["max_clauses"] + 1  # suffixes, eos
        self.chance = self.constant_guess_rate()

    def constant_guess_rate(self) -> float:
        """Exact match of always answering the likeliest target (at full length): about 1e-5.

        That target is one clause, DET N V DET N with no adjectives: P(one clause) · P(no
        subject adjectives) · P(no object adjectives) · P(number, determiner, noun)² · P(verb).
        """
        o = self.options
        budget = self.max_source_len
        one_clause = 1.0 / max(1, min(o["max_clauses"], (budget + 1) // 6))
        spare = budget - 5  # the clause's words beyond DET N V DET N
        top = o["max_adjectives"]
        bare_subject = float(np.mean([1.0 / (min(top, r) + 1) for r in range(spare + 1)]))
        bare_object = 1.0 / (min(top, spare) + 1)
        phrase = max(0.5 / len(dets) for dets in _DETERMINERS_OF) / len(_NOUN_PAIRS)
        return one_clause * bare_subject * bare_object * phrase**2 / len(_VERB_PAIRS)

    def min_seq_len(self) -> int:
        return 5  # DET N V DET N

    def target_len(self, seq_len: int) -> int:
        # a source of seq_len words gives at most one suffix per clause (every clause is >= 5
        # words, so at most one per 6 source tokens counting "and") and an eos
        return min(self.max_target_len, seq_len + (seq_len + 1) // 6 + 1)

    def meta_width(self, key: str, seq_len: int) -> int:
        return self.target_len(seq_len) if key == "alignment" else seq_len

    # ---------------------------------------------------------------- the two grammars
    def noun_phrase(self, rng: np.random.Generator, budget: int) -> tuple[list[str], list[str], list[int], int]:
        """Source words, target words, each target word's source offset, and the noun's number."""
        number = int(rng.integers(2))
        dets = _DETERMINERS_OF[number]
        det = dets[rng.integers(len(dets))]
        n_adj = int(rng.integers(min(self.options["max_adjectives"], budget) + 1))
        adjs = [_ADJECTIVES[i] for i in rng.choice(len(_ADJECTIVES), size=n_adj, replace=False)]
        noun = _NOUN_PAIRS[rng.integers(len(_NOUN_PAIRS))][number]
        source = [det] + adjs + [noun]
        # target: DET N ADJ(reversed)
        order = [0, len(source) - 1] + list(range(len(adjs), 0, -1))
        return source, [LEXICON[source[k]] for k in order], order, number

    def clause(self, rng: np.random.Generator, budget: int) -> tuple[list[str], list[str], list[int]]:
        """One S V O clause in `budget` source words or fewer (budget >= 5)."""
        spare = budget - 5
        subj = self.noun_phrase(rng, int(rng.integers(spare + 1)))
        obj = self.noun_phrase(rng, spare - (len(subj[0]) - 2))
        verb = _VERB_PAIRS[rng.integers(len(_VERB_PAIRS))][subj[3]]
        source = subj[0] + [verb] + obj[0]
        v_pos, o_base = len(subj[0]), len(subj[0]) + 1
        target = subj[1] + obj[1] + [LEXICON[verb], SUFFIXES[subj[3]]]
        align = subj[2] + [o_base + k for k in obj[2]] + [v_pos, NO_DISTANCE]
        return source, target, align

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        budget = min(seq_len, self.max_source_len)
        most = max(1, min(self.options["max_clauses"], (budget + 1) // 6))  # a clause is >= 5 words + "and"
        n_clauses = 1 + int(rng.integers(most))
        per = (budget + 1) // n_clauses - 1  # source words each clause may use
        source: list[str] = []
        target: list[str] = []
        align: list[int] = []
        for c in range(n_clauses):
            if c:
                align.append(len(source))
                source.append(CONJUNCTION[0])
                target.append(CONJUNCTION[1])
            s, t, a = self.clause(rng, per)
            align += [len(source) + k if k != NO_DISTANCE else NO_DISTANCE for k in a]
            source += s
            target += t
        tokens = [SOURCE_ID[w] for w in source]
        out = [TARGET_ID[w] for w in target] + [EOS_ID]
        return Example(tokens, out, {"alignment": align + [NO_DISTANCE]})

    # ---------------------------------------------------------------- for people
    def token_names(self) -> list[str]:
        return list(SOURCE_WORDS)

    def target_names(self) -> list[str]:
        """Printable name of every target id."""
        return list(TARGET_WORDS)

    def decode_target(self, ids: list[int]) -> str:
        """Target ids as text, padding and ignored positions dropped."""
        return " ".join(TARGET_WORDS[i] for i in ids if 0 < i < len(TARGET_WORDS))

    def describe_target(self, batch: Batch, i: int) -> str:
        target = batch.target[i]
        return self.decode_target(target[target != IGNORE_INDEX].tolist())
