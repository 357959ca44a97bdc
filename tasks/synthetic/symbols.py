"""The base of the generated tasks whose classes are `num_symbols` data symbols (copy,
selective-copy, induction): token ids below `first_symbol` are the task's special tokens."""

from __future__ import annotations

from attnbench.tasks.base import Batch, GeneratedTask, accuracy_of, row_counts


class SymbolTask(GeneratedTask):
    """Classes = the `num_symbols` data symbols, token ids first_symbol … first_symbol + num_symbols − 1."""

    first_symbol: int = 0  # set by each task: how many special tokens come before the symbols

    def setup(self) -> None:
        self.n_classes = self.options["num_symbols"]
        self.vocab_size = self.first_symbol + self.n_classes
        self.chance = 1.0 / self.n_classes

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Also "most frequent symbol": each sequence's most frequent data symbol in its input (the
        smallest among ties), given as every answer of that sequence."""
        symbols = test.tokens - self.first_symbol
        mode = row_counts(symbols, (symbols >= 0) & (symbols < self.n_classes), self.n_classes).argmax(-1)
        answer = mode if test.target.dim() == 1 else mode[:, None]
        return {**super().trivial_baselines(train, test), "most frequent symbol": accuracy_of(answer, test.target)}

    def class_names(self) -> list[str]:
        """A class is a data symbol: named as the input names it."""
        return self.token_names()[self.first_symbol:self.first_symbol + self.n_classes]
