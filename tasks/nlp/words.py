"""A word-level multinomial Naive Bayes over a byte-token classification batch: the floor a
sequence model of a text-classification task should clear, since it scores what word presence
alone predicts, with no order and no attention.

Tokens are bytes b as b + 1, 0 padding (tasks.nlp.corpus). A word is a run of ASCII letters,
digits, apostrophes or non-ASCII bytes (so a UTF-8 letter stays inside its word), lowercased.
Class log-priors and add-one (Laplace) smoothed word log-likelihoods are fitted on the train batch
over its vocabulary; words unseen in training are skipped; ties go to the smallest class id.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from attnbench.tasks.base import accuracy_of

WORD = re.compile(rb"[a-z0-9'\x80-\xff]+")


def words(row: Tensor) -> list[bytes]:
    """The lowercased words of one row of byte tokens (padding, token 0, is byte 0: no word's)."""
    return WORD.findall((row - 1).clamp_(min=0).to(torch.uint8).numpy().tobytes().lower())


def naive_bayes_accuracy(train_tokens: Tensor, train_target: Tensor, test_tokens: Tensor, test_target: Tensor,
                         n_classes: int) -> float:
    """Test accuracy of a multinomial Naive Bayes over words fitted on the train rows."""
    return bag_naive_bayes_accuracy([words(row) for row in train_tokens.cpu()], train_target,
                                    [words(row) for row in test_tokens.cpu()], test_target, n_classes)


def bag_naive_bayes_accuracy(train_bags: Sequence[Sequence[Hashable]], train_target: Tensor,
                             test_bags: Sequence[Sequence[Hashable]], test_target: Tensor, n_classes: int) -> float:
    """Test accuracy of a multinomial Naive Bayes fitted on the train rows' bags of items (words; a
    generated task's token ids), each row's items in any order (see the module docstring)."""
    counts = [Counter() for _ in range(n_classes)]
    docs = torch.bincount(train_target.view(-1), minlength=n_classes).tolist()
    for bag, label in zip(train_bags, train_target.view(-1).tolist()):
        counts[label].update(bag)
    vocab = set().union(*counts)
    totals = [sum(c.values()) + len(vocab) for c in counts]  # add-one smoothing over the train vocabulary
    prior = [math.log(d / sum(docs)) if d else -math.inf for d in docs]
    guesses = []
    for bag in test_bags:
        seen = [w for w in bag if w in vocab]
        scores = [prior[c] + sum(math.log((counts[c][w] + 1) / totals[c]) for w in seen) for c in range(n_classes)]
        guesses.append(max(range(n_classes), key=lambda c: (scores[c], -c)))
    return accuracy_of(torch.tensor(guesses).view_as(test_target), test_target)
