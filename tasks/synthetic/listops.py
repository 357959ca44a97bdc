"""`listops`: ListOps (Nangia & Bowman 2018) as in the Long Range Arena (Tay et al. 2020), seeded.

Capability: hierarchical structure — evaluate nested MIN, MAX, MED (median) and SM (sum mod 10)
expressions over digits, answer 0–9; every bracket may span most of the sequence.

The generator follows LRA's `lra_benchmarks/data/listops.py`: a node is an operator with
probability 0.25 (below max depth), with 2..max_args arguments, else a digit; trees are kept when
their length (digits, operators and closing brackets) lies in [min_length, seq_len]. Unlike LRA's
script it draws from a seeded numpy Generator, so the data are reproducible. Tokenisation is LRA's
input pipeline's: parentheses removed, `[MIN` → `MIN`, `]` → `X` (`]`), whitespace split.

Option `path=` loads LRA's own TSV files instead (header `Source<TAB>Target`): a folder holding
`*_train.tsv`, `*_val.tsv`, `*_test.tsv` (LRA's `basic_*` layout), or one file whose lines are then
split 80/10/10 by a hash of the expression. Too-long expressions are cut at seq_len, as LRA does.
Every row is evaluated when the file is read: a Target that is not its Source's value is refused,
naming the row, rather than trained and scored against.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from attnbench.limits import MAX_TOKENS
from attnbench.options import Option
from attnbench.tasks.base import (
    MAX_ITEMS, SPLITS, Batch, Example, GeneratedTask, TaskError, TaskSpec, accuracy_of, most_frequent,
    register_task, split_of,
)
from attnbench.tasks.files import DataFileError, DataWarning, is_folder, read_table

OPERATORS = ("MIN", "MAX", "MED", "SM")
END = "X"
VALUE_P = 0.25  # LRA: a node is an operator with probability 0.25
MAX_TREE_TRIES = 10_000  # per example; a feasible length range needs a few hundred at worst
# the generator recurses once per level (Python's stack holds about 1000); LRA uses 10, and a depth
# of d takes at least 3d - 2 tokens
MAX_DEPTH = 100
TOKENS = ["<pad>", *(str(d) for d in range(10)), *OPERATORS, END]
TOKEN_ID = {t: i for i, t in enumerate(TOKENS)}
_LRA_SPLIT_FILE = {"train": "_train.tsv", "valid": "_val.tsv", "test": "_test.tsv"}


def lra_tokenize(source: str) -> list[str]:
    """LRA's ListOps tokenisation: drop parentheses, `[MIN` → `MIN`, `]` → `X`, split on spaces."""
    return source.replace("(", " ").replace(")", " ").replace("[", "").replace("]", END).split()


def _median(args: list[int]) -> int:
    """LRA's `int(np.median(args))` for digits: the mean of the middle two, rounded down."""
    ordered = sorted(args)
    k = len(ordered)
    return (ordered[(k - 1) // 2] + ordered[k // 2]) // 2


_APPLY = {"MIN": min, "MAX": max, "MED": _median, "SM": lambda args: sum(args) % 10}
_DIGIT = {str(d): d for d in range(10)}


def evaluate(tokens: list[str]) -> int:
    """The value of a tokenised ListOps expression (prefix operators closed by X).

    The loader checks every row of a data file with it, so it is one pass over flat stacks with a
    dict look-up per token (about 0.1 µs a token, a fifth of what a dict of lambdas rebuilt per
    operator and np.median cost). A ValueError says what is malformed.
    """
    values: list[int] = []  # digits and the values of closed operators, in order
    open_ops: list[tuple[str, int]] = []  # (operator, where its arguments start in `values`)
    for tok in tokens:
        digit = _DIGIT.get(tok)
        if digit is not None:
            values.append(digit)
        elif tok == END:
            if not open_ops:
                raise ValueError("a closing bracket with no operator open")
            op, start = open_ops.pop()
            if start == len(values):
                raise ValueError(f"{op} has no arguments")
            value = _APPLY[op](values[start:])
            del values[start:]
            values.append(value)
        elif tok in _APPLY:
            open_ops.append((tok, len(values)))
        else:
            raise ValueError(f"unknown token {tok!r}")
    if open_ops or len(values) != 1:
        raise ValueError("not one complete expression" if values else "no expression")
    return values[0]


@register_task("listops")
class ListOpsTask(GeneratedTask):
    """Evaluate a nested ListOps expression; 10 classes."""

    spec = TaskSpec(
        kind="classify",
        metric="accuracy",
        description="evaluate nested MIN/MAX/MED/SUM_MOD lists over digits (LRA ListOps)",
        source="Nangia & Bowman 2018; Tay et al. 2020 (LRA generator, seeded); or LRA TSV via path=",
        licence="generated (LRA generator: Apache-2.0)",
        options=(
            Option("max_depth", int, 10, "deepest nesting (LRA: 10); depth d takes >= 3d - 2 tokens",
                   minimum=1, maximum=MAX_DEPTH),
            Option("max_args", int, 10, "most arguments of an operator (LRA: 10); k arguments take k + 2 tokens",
                   minimum=2, maximum=MAX_ITEMS),
            Option("min_length", int, None, "shortest kept expression (tokens); None = seq_len // 4; "
                   "cut to seq_len", minimum=1, maximum=MAX_TOKENS, nullable=True),
            Option("path", str, "", "LRA TSV folder or file (Source<TAB>Target); '' = generate", path=True),
        ),
    )
    n_classes = 10
    chance = 0.1
    vocab_size = len(TOKENS)

    def min_seq_len(self) -> int:
        return 1 if self.options["path"] else 4  # the shortest expression: [OP d d ]

    # ------------------------------------------------------------ generator
    def tree(self, draw, depth: int, budget: int) -> list[str] | None:
        """LRA's generate_tree, tokenised; None once longer than `budget` (it would be rejected).

        `draw()` is a uniform float in [0, 1) (Python's Mersenne Twister `random()`, whose output
        is fixed across Python versions and machines; 10x faster than numpy scalars here).
        """
        r = draw() if depth < self.options["max_depth"] else 1.0
        if r > VALUE_P:
            return [str(int(draw() * 10))]
        n_args = 2 + int(draw() * (self.options["max_args"] - 1))
        op = OPERATORS[int(draw() * len(OPERATORS))]
        out = [op]
        for _ in range(n_args):
            sub = self.tree(draw, depth + 1, budget - len(out) - 1)
            if sub is None:
                return None
            out += sub
            if len(out) + 1 > budget:
                return None
        return out + [END]

    def length_range(self, seq_len: int) -> tuple[int, int]:
        """The lengths of kept expressions at `seq_len`: [min_length (or seq_len // 4), seq_len]."""
        low = self.options["min_length"] or max(4, seq_len // 4)
        return min(low, seq_len), seq_len

    def longest(self) -> int:
        """The longest expression that max_depth and max_args allow."""
        length = 1
        for _ in range(self.options["max_depth"] - 1):
            length = 2 + self.options["max_args"] * length
        return length

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        low, high = self.length_range(seq_len)
        draw = random.Random(int(rng.integers(2**63))).random
        for _ in range(MAX_TREE_TRIES):
            toks = self.tree(draw, 1, high)
            if toks is not None and low <= len(toks) <= high:
                ids = [TOKEN_ID[t] for t in toks]
                return Example(ids, evaluate(toks), {"length": len(ids), "depth": _depth(toks)})
        o = self.options
        advice = ("lower max_args (an operator of k arguments takes k + 2 tokens) or min_length"
                  if o["max_args"] + 2 > high else "lower min_length or raise max_depth/max_args")
        raise TaskError(
            f"{self.name}: no expression of {low}..{high} tokens in {MAX_TREE_TRIES} draws with "
            f"max_depth={o['max_depth']}, max_args={o['max_args']}; {advice}"
        )

    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Also "root operator": for each test expression, the answer that train expressions
        opening with the same token (the root operator; a lone digit is its own answer) most often
        have, or the majority where none does; and "root operator over every digit": the root
        operator applied to all the expression's digits, its nesting ignored."""
        counts = torch.zeros(self.vocab_size, self.n_classes, dtype=torch.long)  # first token × answer, in train
        counts.index_put_((train.tokens[:, 0], train.target), torch.ones_like(train.target), accumulate=True)
        seen = counts[test.tokens[:, 0]]  # argmax: the most frequent answer, the smallest among ties
        answers = torch.where(seen.sum(-1) > 0, seen.argmax(-1), most_frequent(train.target))
        return {**super().trivial_baselines(train, test),
                "root operator": accuracy_of(answers, test.target),
                "root operator over every digit": accuracy_of(torch.tensor(_flattened(test.tokens)), test.target)}

    # ------------------------------------------------------------ LRA files
    def _rows(self, split: str) -> list[tuple[str, int]]:
        path = Path(self.options["path"]).expanduser()
        if is_folder(path, self.name):
            found = sorted(path.glob(f"*{_LRA_SPLIT_FILE[split]}"))
            if not found:
                raise DataFileError(
                    f"{self.name}: no *{_LRA_SPLIT_FILE[split]} in {path} (LRA layout: basic_train.tsv, "
                    "basic_val.tsv, basic_test.tsv)"
                )
            rows = self._read(found[0])
            if split != "train":
                self._say_repeats(split, found[0], rows)
        else:
            rows = [r for r in self._read(path) if split_of(_encode(lra_tokenize(r[0]))) == split]
        return rows

    def _say_repeats(self, split: str, path: Path, rows: list[tuple[str, int]]) -> None:
        """One DataWarning, once, where the folder's `split` file repeats expressions of its train file
        (a model may have learnt their answers by heart); the rows stay, as the files give them."""
        said = self.__dict__.setdefault("_said", set())
        if split in said:
            return
        said.add(split)
        train = {tuple(lra_tokenize(src)) for src, _ in self._rows("train")}
        repeated = sum(tuple(lra_tokenize(src)) in train for src, _ in rows)
        if repeated:
            warnings.warn(f"{self.name}: {path}: {repeated} of {len(rows)} {split} expressions also appear in "
                          "the train file", DataWarning, stacklevel=2)

    def data_files(self) -> list[Path]:
        """The TSV files read: the folder's three split files, or the one file."""
        path = Path(self.options["path"]).expanduser()
        if not self.options["path"] or not is_folder(path, self.name):
            return super().data_files()
        return [found[0].resolve() for suffix in _LRA_SPLIT_FILE.values() if (found := sorted(path.glob(f"*{suffix}")))]

    def _read(self, path: Path) -> list[tuple[str, int]]:
        cache = self.__dict__.setdefault("_cache", {})
        if path not in cache:
            table = read_table(path, columns=("Source", "Target"), owner=self.name, fmt="tsv")
            cache[path] = [
                self._checked_row(path, i + 2, str(src), tgt)  # line 1 is the header
                for i, (src, tgt) in enumerate(zip(table["Source"], table["Target"]))
            ]
        return cache[path]

    def _checked_row(self, path: Path, row: int, src: str, tgt: object) -> tuple[str, int]:
        """(Source, Target) of one data row, or a DataFileError naming the row: a Target that is
        not a digit, a Source that is not one ListOps expression, or a Target that is not the
        Source's value (a wrong label would train and score against wrong answers, silently)."""
        try:
            label = int(str(tgt).strip())
        except ValueError:
            label = -1
        if not 0 <= label <= 9:
            raise DataFileError(f"{self.name}: {path} row {row}: Target must be a digit 0-9, got {tgt!r}")
        try:
            value = evaluate(lra_tokenize(src))
        except ValueError as exc:
            raise DataFileError(
                f"{self.name}: {path} row {row}: Source is not a complete ListOps expression ({exc}): "
                f"{src[:60]!r}"
            ) from None
        if value != label:
            raise DataFileError(
                f"{self.name}: {path} row {row}: Target is {label} but the expression's value is {value}: "
                f"{src[:60]!r}; correct the Target or remove the row"
            )
        return src, label

    def size(self, split: str) -> int | None:
        self.check_split(split)
        return len(self._rows(split)) if self.options["path"] else None

    def make(self, split: str, n: int, seq_len: int, seed: int) -> Batch:
        if not self.options["path"]:
            low, _ = self.length_range(seq_len)
            if low > self.longest():
                o = self.options
                raise TaskError(
                    f"{self.name}: max_depth={o['max_depth']}, max_args={o['max_args']} allow expressions "
                    f"of at most {self.longest()} tokens, but seq_len={seq_len} keeps only those of >= {low} "
                    "(min_length, default seq_len // 4); lower min_length or raise max_depth/max_args"
                )
            return super().make(split, n, seq_len, seed)
        rows = self._rows(split)
        if n > len(rows):
            raise TaskError(f"{self.name}: {split} has {len(rows)} expressions in {self.options['path']}; ask for n <= {len(rows)}")
        order = np.random.default_rng(seed).permutation(len(rows))[:n]
        examples = []
        for i in order:
            src, label = rows[int(i)]
            ids = _encode(lra_tokenize(src))
            examples.append(Example(ids[:seq_len], label, {"length": len(ids)}))
        return self.assemble(examples, seq_len)

    def spec_as_built(self) -> TaskSpec:
        """The spec, naming the LRA file or folder read (with its expressions per split) in place of
        the seeded generator when `path` is given."""
        if not self.options["path"]:
            return self.spec
        path = Path(self.options["path"]).expanduser().resolve()
        counts = "/".join(str(self.size(split)) for split in SPLITS)
        layout = "LRA folder (*_train/_val/_test.tsv)" if is_folder(path, self.name) else "one file, split 80/10/10 by expression"
        return replace(
            self.spec,
            description=f"{self.spec.description}; expressions read from {path.name}, train/valid/test {counts}",
            source=f"{path} (Source<TAB>Target; {layout})",
            licence="the file's own (not checked by attnbench)",
        )

    def token_names(self) -> list[str]:
        return list(TOKENS)


def _flattened(rows: torch.Tensor) -> list[int]:
    """Each row's root operator applied to all its digits, as if nothing were nested (a lone digit,
    or an expression without one, answers 0 where it has no digit)."""
    answers = []
    for row in rows.tolist():
        names = [TOKENS[i] for i in row if i]
        digits = [_DIGIT[t] for t in names if t in _DIGIT]
        op = names[0] if names else ""
        answers.append(_APPLY[op](digits) if op in _APPLY and digits else (digits[0] if digits else 0))
    return answers


def _encode(tokens: list[str]) -> list[int]:
    try:
        return [TOKEN_ID[t] for t in tokens]
    except KeyError as exc:
        raise DataFileError(f"listops: unknown token {exc.args[0]!r} in an expression") from None


def _depth(tokens: list[str]) -> int:
    depth = best = 0
    for t in tokens:
        depth += t in OPERATORS
        depth -= t == END
        best = max(best, depth)
    return best


__all__ = ["ListOpsTask", "evaluate", "lra_tokenize"]
