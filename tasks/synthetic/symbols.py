"""The base of the generated tasks whose classes are `num_symbols` data symbols (copy,
selective-copy, induction): token ids below `first_symbol` are the task's special tokens."""

from __future__ import annotations

from attnbench.tasks.base import GeneratedTask


class SymbolTask(GeneratedTask):
    """Classes = the `num_symbols` data symbols, token ids first_symbol … first_symbol + num_symbols − 1."""

    first_symbol: int = 0  # set by each task: how many special tokens come before the symbols

    def setup(self) -> None:
        self.n_classes = self.options["num_symbols"]
        self.vocab_size = self.first_symbol + self.n_classes
        self.chance = 1.0 / self.n_classes

    def class_names(self) -> list[str]:
        """A class is a data symbol: named as the input names it."""
        return self.token_names()[self.first_symbol:self.first_symbol + self.n_classes]
