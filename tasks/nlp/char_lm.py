"""`char-lm`: byte-level language modelling of State of the Union addresses.

Capability: using context to predict text — spelling, words, and beyond a few hundred bytes the
topic and phrasing of the speech; the metric is bits per byte, as for enwik8/text8 character
models. The text is every address of the `sotu` package (1790–2026; MIT package, public-domain
speeches from the UCSB American Presidency Project), split BY PRESIDENT, dealt in order of first
year 3/1/1 to train/valid/test (`sources.sotu_corpus`: a president's addresses reuse whole passages
across years), and tiled into `window`-byte windows every `stride`
bytes (default: back to back). An example is seq_len bytes of a window from an offset drawn for it
(seeded: `CorpusTask.offsets`), not always the window's first, which would make every speech's
formulaic opening one example in 12 at 64 bytes; its target is the next byte at every position,
IGNORE_INDEX past the window's end. Byte b is token b + 1, 0 is padding.

`unigram_bits_per_byte()` (also `self.baseline`) is the entropy of the training split's byte
distribution: what a model that ignores context scores, the number a useful model must beat.
`chance` is in accuracy units like every task's: the test frequency of the training split's most
frequent byte (the space), i.e. the next-byte accuracy of a constant guess.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from attnbench.limits import MAX_TOKENS
from attnbench.options import Option
from attnbench.tasks.base import IGNORE_INDEX, Batch, TaskError, TaskSpec, register_task
from attnbench.tasks.nlp.corpus import Corpus, CorpusTask, Spans, tiled_spans
from attnbench.tasks.nlp.sources import sotu_corpus


@register_task("char-lm")
class CharLMTask(CorpusTask):
    """Predict the next byte of a State of the Union address."""

    spec = TaskSpec(
        kind="lm",
        metric="bits_per_byte",
        description="byte-level language modelling of State of the Union addresses (bits per byte)",
        source="US State of the Union addresses, `sotu` package (UCSB American Presidency Project)",
        licence="sotu package MIT; speeches public domain (17 U.S.C. § 105)",
        # held to MAX_TOKENS + 1 (an example's seq_len + 1 bytes at the longest seq_len) as every byte
        # window is: an example is a slice of its window from a seeded offset, so any window is read
        # whole over the examples; a longer one would only hold more of a speech
        options=(
            Option("window", int, 4096, "bytes per window (an example is seq_len of them and the byte after each, "
                   "from a seeded offset; at least seq_len)",
                   minimum=2,
                   maximum=MAX_TOKENS + 1),
            Option("stride", int, 0, "bytes between window starts; 0 = window (no overlap)", minimum=0,
                   maximum=MAX_TOKENS + 1),
        ),
    )

    baseline: float

    def load(self) -> Corpus:
        return sotu_corpus(self.name)

    def setup(self) -> None:
        super().setup()
        train, test = self.byte_counts("train"), self.byte_counts("test")
        self.chance = float(test[train.argmax()] / max(1, test.sum()))
        self.baseline = self.unigram_bits_per_byte()

    def spans(self, corpus: Corpus, docs: np.ndarray) -> Spans:
        o = self.options
        return tiled_spans(corpus, docs, o["window"], o["stride"] or o["window"], 2)

    def check_length(self, seq_len: int, *, flag: str, label: str | None = None) -> None:
        """Also: an example is seq_len bytes of one window and the byte after each, so a window
        shorter than seq_len would leave every example padded, in a cell labelled with a length none
        of its examples has (at seq_len = window, only the last target falls past it, ignored)."""
        super().check_length(seq_len, flag=flag, label=label)
        window = self.options["window"]
        if seq_len > window:
            raise TaskError(f"{flag}: {seq_len} is too long for {label or self.name}: an example is seq_len bytes "
                            f"of one window, and its window is {window} (give window={seq_len} or more)")

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Bits per byte, on the cell's own test data, of byte models fitted to its own train data:
        "unigram" (each byte's frequency, add-one smoothed) and "bigram" (given the byte before,
        interpolated with the unigram by Witten-Bell, so that a byte seldom seen before falls back
        on it): what a model scores that uses no more context than one byte."""
        vocab = self.vocab_size

        def pairs(batch: Batch) -> tuple[Tensor, Tensor]:
            scored = batch.target != IGNORE_INDEX
            return batch.tokens[scored], batch.target[scored]  # the byte before, the byte to predict

        before, after = pairs(train)
        unigram = torch.bincount(after, minlength=vocab).double() + 1
        unigram /= unigram.sum()
        counts = torch.zeros(vocab, vocab, dtype=torch.float64).index_put_(
            (before, after), torch.ones(len(after), dtype=torch.float64), accumulate=True)
        seen, kinds = counts.sum(-1), (counts > 0).sum(-1).double()  # per byte before: followers, distinct ones
        before, after = pairs(test)
        if not len(after):
            return {}
        weight = kinds[before] * unigram[after]
        bigram = (counts[before, after] + weight) / (seen[before] + kinds[before]).clamp(min=1)
        bigram = torch.where(seen[before] > 0, bigram, unigram[after])
        return {"unigram": float(-torch.log2(unigram[after]).mean()), "bigram": float(-torch.log2(bigram).mean())}

    def unigram_bits_per_byte(self) -> float:
        """Entropy (bits) of the byte distribution of the training split: the context-free baseline."""
        if getattr(self, "baseline", None) is not None:
            return self.baseline
        counts = self.byte_counts("train")
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())

    def byte_counts(self, split: str) -> np.ndarray:
        """(256,) occurrences of each byte value in the documents of `split`."""
        c = self.corpus
        counts = np.zeros(256, dtype=np.int64)
        for d in c.docs_in(split):
            counts += np.bincount(c.data[c.offsets[d] : c.offsets[d + 1]], minlength=256)
        return counts
