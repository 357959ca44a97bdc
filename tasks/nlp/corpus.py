"""Corpus-backed tasks: documents held once as bytes, split by group, served as byte windows.

A `Corpus` holds every document back to back in one uint8 buffer with its label, its group (the
speech, movie or row that owns it) and the split of that group. A group's split is a stable hash of
its id (80/10/10, blake2b like `split_of`), or where the groups are few, large and drift in time
(presidents) dealt out in order, one in five to valid and one to test (`stratified_splits`), so
no document — and no window of one — appears in two splits. A `CorpusTask` turns the documents
of each split into examples (spans of the buffer), and builds a batch by drawing span indices from
the split's seeded stream.

Byte vocabulary (as LRA's Text task): id 0 is padding and byte b is id b + 1, so `vocab_size` is
257 and a NUL byte in the text never reads as padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnbench.tasks.base import IGNORE_INDEX, SPLITS, Batch, Task, TaskError, split_rng
from attnbench.tasks.nlp.words import naive_bayes_accuracy

PAD_ID = 0
BYTE_OFFSET = 1  # byte b is token id b + BYTE_OFFSET
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET
SHOWN_ABSENT = 4  # classes that a balance error names before '…'
STRATA = ("train", "train", "valid", "train", "test")  # stratified_splits: how each five groups are dealt


def group_split(group: str) -> str:
    """The split that owns a group id: a stable blake2b hash into buckets 0-7 | 8 | 9."""
    digest = hashlib.blake2b(group.encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "little") % 10
    return SPLITS[0 if bucket < 8 else 1 if bucket == 8 else 2]


def stratified_splits(groups: Sequence[str], labels: Sequence[int], order: Mapping[str, Any]) -> tuple[str, ...]:
    """The split of each document where the groups are few and large and drift along `order` (a
    corpus's presidents, by their first year): each class's groups, in that order, are dealt out in
    fives, the third of each five to valid and the fifth to test (`STRATA`), the rest to train, so
    that valid and test span the whole range as train does. (A hash put three presidents in test
    who each served among the other party's: a model that learnt the era named the wrong party, so
    scores fell as it learnt and early stopping on valid chose against test.) A group holds one class."""
    classes: dict[str, set[int]] = {}
    for group, label in zip(groups, labels):
        classes.setdefault(group, set()).add(int(label))
    if mixed := sorted(g for g, owned in classes.items() if len(owned) > 1):
        raise ValueError(f"stratified_splits: group {mixed[0]!r} holds more than one class")
    split_of: dict[str, str] = {}
    for label in sorted({c for owned in classes.values() for c in owned}):
        ranked = sorted((g for g, owned in classes.items() if label in owned), key=lambda g: (order[g], g))
        for i, group in enumerate(ranked):
            split_of[group] = STRATA[i % len(STRATA)]
    return tuple(split_of[g] for g in groups)


def byte_token_names() -> list[str]:
    """Printable names of the 257 byte ids: '<pad>', then each byte as a character or escape."""
    names = ["<pad>"]
    for b in range(256):
        ch = chr(b)
        names.append(ch if 32 <= b < 127 else repr(bytes([b]))[2:-1])
    return names


def decode_bytes(ids: Sequence[int]) -> str:
    """Byte ids as text (UTF-8, undecodable bytes as U+FFFD), padding and ignored ids dropped."""
    raw = bytes(int(i) - BYTE_OFFSET for i in ids if BYTE_OFFSET <= int(i) < BYTE_VOCAB_SIZE)
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True, eq=False)
class Corpus:
    """Documents back to back: doc i is data[offsets[i]:offsets[i+1]], with label, group, split."""

    data: np.ndarray  # (total_bytes,) uint8
    offsets: np.ndarray  # (docs + 1,) int64
    labels: np.ndarray  # (docs,) int64 class id; -1 where unlabelled
    groups: tuple[str, ...]
    splits: tuple[str, ...]
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.groups)

    def docs_in(self, split: str) -> np.ndarray:
        """Indices of the documents that `split` owns."""
        return np.flatnonzero(np.asarray(self.splits) == split)


def make_corpus(
    texts: Sequence[bytes],
    labels: Sequence[int],
    groups: Sequence[str],
    classes: Sequence[str] = (),
    splits: Sequence[str] | None = None,
) -> Corpus:
    """A `Corpus` of encoded texts; each group's split is `group_split(group)` unless given."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = np.frombuffer(b"".join(texts), dtype=np.uint8)
    groups = tuple(str(g) for g in groups)
    if splits is None:
        memo = {g: group_split(g) for g in set(groups)}
        splits = tuple(memo[g] for g in groups)
    return Corpus(data, offsets, np.asarray(labels, dtype=np.int64), groups, tuple(splits), tuple(classes))


@dataclass(frozen=True, eq=False)
class Spans:
    """The examples of one split: byte spans of the corpus buffer, with document and label."""

    doc: np.ndarray  # (m,) int64
    start: np.ndarray  # (m,) int64, absolute offset into Corpus.data
    length: np.ndarray  # (m,) int64
    label: np.ndarray  # (m,) int64

    def __len__(self) -> int:
        return len(self.doc)

    def subset(self, keep: np.ndarray) -> Spans:
        return Spans(self.doc[keep], self.start[keep], self.length[keep], self.label[keep])


def document_spans(corpus: Corpus, docs: np.ndarray, window: int) -> Spans:
    """One span per document: its first `window` bytes (the LRA Text convention)."""
    start = corpus.offsets[docs]
    length = np.minimum(corpus.offsets[docs + 1] - start, window)
    return Spans(docs.astype(np.int64), start, length, corpus.labels[docs])


def tiled_spans(corpus: Corpus, docs: np.ndarray, window: int, stride: int, min_length: int) -> Spans:
    """Windows of `window` bytes every `stride` bytes inside each document, none across two.

    The last window of a document may be shorter; windows under `min_length` bytes are dropped
    (a document shorter than `min_length` yields none).
    """
    parts: list[tuple[np.ndarray, ...]] = []
    for d in docs:
        lo, hi = int(corpus.offsets[d]), int(corpus.offsets[d + 1])
        starts = np.arange(lo, max(hi - window, lo) + 1, stride, dtype=np.int64)
        if len(starts) and starts[-1] + window < hi:  # cover the tail too
            starts = np.append(starts, starts[-1] + stride)
        lengths = np.minimum(hi - starts, window)
        keep = lengths >= min_length
        starts, lengths = starts[keep], lengths[keep]
        parts.append((np.full(len(starts), d, dtype=np.int64), starts, lengths))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Spans(empty, empty, empty, empty)
    doc, start, length = (np.concatenate(p) for p in zip(*parts))
    return Spans(doc, start, length, corpus.labels[doc])


class ClassMissingError(TaskError):
    """Balancing would empty a split that holds examples: some class has none there.
    `CorpusTask.setup` turns it into one line naming the classes and their counts per split."""

    def __init__(self, absent: list[int]) -> None:
        super().__init__(f"balancing empties this split: class id(s) {absent} have no example in it")
        self.absent = absent


def balance_classes(spans: Spans, n_classes: int) -> Spans:
    """Spans subsampled to equal counts per class (the rarest class's), by a fixed permutation.
    Raises `ClassMissingError` where that would leave nothing of a non-empty split."""
    counts = np.bincount(spans.label, minlength=n_classes)
    if len(spans) and (absent := np.flatnonzero(counts == 0).tolist()):
        raise ClassMissingError(absent)
    k = int(counts.min()) if len(counts) else 0
    keep = []
    for c in range(n_classes):
        members = np.flatnonzero(spans.label == c)
        order = np.random.default_rng(c).permutation(len(members))  # fixed: independent of seed
        keep.append(members[np.sort(order[:k])])
    return spans.subset(np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64))


class CorpusTask(Task):
    """A task over a `Corpus`: subclasses implement `load()` and `spans(corpus, docs)`.

    `setup` loads the corpus (cached by its loader, so a second task instance is free) and fixes
    the spans of every split; `size(split)` is their number. `build` draws n distinct spans when
    n <= size; for n > size it cycles through whole seeded permutations of the split (every span
    used ⌊n/size⌋ or ⌈n/size⌉ times, `meta["index"]` shows the repeats). Each span becomes
    bytes cut to seq_len (and padded): for `classify` the label is the target; for `lm` the target
    is the next byte at every position, IGNORE_INDEX past the span. `meta["group"]` holds the
    group id of each example.
    """

    pad_id = PAD_ID
    vocab_size = BYTE_VOCAB_SIZE

    corpus: Corpus
    table: dict[str, Spans]

    def load(self) -> Corpus:
        raise NotImplementedError

    def spans(self, corpus: Corpus, docs: np.ndarray) -> Spans:
        """The examples that documents `docs` (all of one split) give."""
        raise NotImplementedError

    def setup(self) -> None:
        self.corpus = self.load()
        table, emptied = {}, {}
        for split in SPLITS:
            try:
                table[split] = self.spans(self.corpus, self.corpus.docs_in(split))
            except ClassMissingError as missing:
                emptied[split] = missing.absent
        if emptied:
            raise TaskError(self._balance_emptied(emptied))
        self.table = table
        if self.spec.kind == "classify":
            self.classes = self.corpus.classes
            self.n_classes = len(self.classes)
            self.chance = self.majority_rate()

    def _balance_emptied(self, emptied: dict[str, list[int]]) -> str:
        """'balance=true … empties the valid and test splits, which have no row of class zzz (rows in
        train/valid/test: zzz 1/0/0, neg 24/3/3, pos 23/4/3); pass balance=false, …'."""
        names = self.corpus.classes
        absent = sorted({c for classes in emptied.values() for c in classes})
        rows = {s: np.bincount(self.corpus.labels[self.corpus.docs_in(s)], minlength=len(names))
                for s in SPLITS}

        def counts(c: int) -> str:
            return f"{names[c]} {'/'.join(str(int(rows[s][c])) for s in SPLITS)}"

        few = absent[:SHOWN_ABSENT]
        lacking = ", ".join(names[c] for c in few) + (", …" if len(absent) > len(few) else "")
        others = [counts(c) for c in range(len(names)) if c not in absent]
        shown = [counts(c) for c in few] + others[:SHOWN_ABSENT]
        if len(others) > SHOWN_ABSENT:
            shown.append("…")
        where = " and ".join(emptied) + (" splits, which have" if len(emptied) > 1 else " split, which has")
        plural = "es" if len(absent) > 1 else ""
        return (
            f"{self.name}: balance=true (equal examples per class) empties the {where} no row of "
            f"class{plural} {lacking} (rows in {'/'.join(SPLITS)}: {', '.join(shown)}); pass balance=false, "
            f"or remove or relabel the rows of {lacking}"
        )

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """The base's majority, and for a classification task a word-level Naive Bayes fitted on
        the cell's train rows (`tasks.nlp.words`): what word presence alone, without order, scores."""
        out = super().trivial_baselines(train, test)
        if self.spec.kind == "classify" and len(train.target) and len(test.target):
            out["word naive Bayes"] = naive_bayes_accuracy(train.tokens, train.target, test.tokens, test.target,
                                                           self.n_classes)
        return out

    def majority_rate(self) -> float:
        """Test accuracy of always answering the training split's most frequent class."""
        n = self.n_classes or 1
        train, test = self.table["train"].label, self.table["test"].label
        if len(train) == 0 or len(test) == 0:
            return 1.0 / n
        majority = int(np.bincount(train, minlength=n).argmax())
        return float(np.mean(test == majority))

    def size(self, split: str) -> int:
        self.check_split(split)
        return len(self.table[split])

    def groups(self, split: str) -> set[str]:
        """Group ids (speeches, movies, rows) whose examples `split` holds."""
        self.check_split(split)
        return {self.corpus.groups[d] for d in np.unique(self.table[split].doc)}

    def draw(self, split: str, n: int, seed: int) -> np.ndarray:
        """n span indices of `split`: distinct when n <= size, else cycling whole permutations."""
        size = self.size(split)
        if size == 0:
            raise TaskError(f"{self.name}: the {split} split is empty with these options")
        rng = split_rng(seed, split, self.name)
        if n <= size:
            return rng.choice(size, size=n, replace=False)
        rounds = -(-n // size)
        return np.concatenate([rng.permutation(size) for _ in range(rounds)])[:n]

    def make(self, split: str, n: int, seq_len: int, seed: int) -> Batch:
        idx = self.draw(split, n, seed)
        spans = self.table[split]
        lm = self.spec.kind == "lm"
        width = seq_len + 1 if lm else seq_len  # lm reads one byte more: the last target
        offset = self.offsets(split, spans.length[idx], width, seed)
        ids = np.zeros((n, width), dtype=np.int64)
        data = self.corpus.data
        for row, i in enumerate(idx):
            start = int(spans.start[i] + offset[row])
            take = min(int(spans.length[i] - offset[row]), width)
            ids[row, :take] = data[start : start + take] + np.int64(BYTE_OFFSET)
        full = torch.from_numpy(ids)
        tokens = full[:, :seq_len].clone()
        if lm:
            target = full[:, 1:].clone()
            target[target == PAD_ID] = IGNORE_INDEX
        else:
            target = torch.from_numpy(spans.label[idx].copy())
        meta: dict[str, Any] = {
            "index": torch.from_numpy(idx.astype(np.int64)),
            **({"offset": torch.from_numpy(offset)} if lm else {}),  # a classifier's is 0: its data as before
            "group": [self.corpus.groups[d] for d in spans.doc[idx]],
        }
        return Batch(tokens, tokens == PAD_ID, target, meta)

    def offsets(self, split: str, lengths: np.ndarray, width: int, seed: int) -> np.ndarray:
        """Where in its span each example starts. A language model's example is a `width`-byte
        slice of its window at an offset drawn uniformly from those that fit (its own stream of
        (seed, split)): were it the window's first bytes, every speech's formulaic opening ("To the
        Senate and House of Representatives:") would be one example in 12 at 64 bytes, not one in
        600, and a window drawn twice (a split of fewer windows than examples) the same example
        twice. A classifier's example is its span's first bytes (the LRA convention)."""
        if self.spec.kind != "lm":
            return np.zeros(len(lengths), dtype=np.int64)
        room = np.maximum(np.asarray(lengths, dtype=np.int64) - width, 0)
        rng = split_rng(seed, split, f"{self.name}/offset")
        return np.floor(rng.random(len(room)) * (room + 1)).astype(np.int64)

    # ---------------------------------------------------------------- for people
    def token_names(self) -> list[str]:
        return byte_token_names()

    def decode(self, ids: Sequence[int]) -> str:
        return decode_bytes(ids)

    def describe_target(self, batch: Batch, i: int) -> str:
        target = batch.target[i]
        if target.dim() == 0:
            return self.classes[int(target)] if getattr(self, "classes", ()) else str(int(target))
        return decode_bytes(target[target != IGNORE_INDEX].tolist())
