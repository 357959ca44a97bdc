"""The task contract: `TaskSpec`, the `Batch` a task builds, the `Task` base classes and the registry.

A task is registered by name and built with options, then asked for data:

    task = build_task("mqar", num_kv_pairs=8)
    batch = task.build("train", n=256, seq_len=128, seed=0)

batch.tokens        (n, seq_len) int64, padded with `task.pad_id`
batch.padding_mask  (n, seq_len) bool, True = pad
batch.target        classify: (n,) class in [0, n_classes)
                    tag:      (n, seq_len) class in [0, n_classes) or IGNORE_INDEX (-100)
                    lm:       (n, seq_len) next token in [0, vocab_size) or IGNORE_INDEX
                    seq2seq:  (n, target_len) token in [0, target_vocab_size) or IGNORE_INDEX;
                              ends with `eos_id`; the decoder input is `shift_right(target, ...)`
batch.meta          name → per-example values; `distance` wherever the task has a dependency
                    distance: (n,) for classify, (n, seq_len) for tag with -1 where unlabelled.

Same (split, n, seq_len, seed) ⇒ identical tensors (numpy `Generator` streams derived from
(seed, split, task name), never global RNG state). Generated tasks keep splits disjoint by
construction: an example belongs to the split that the hash of its input tokens selects (80/10/10),
so no test input ever appears in training. Corpus tasks split by document.
"""

from __future__ import annotations

import hashlib
import numbers
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from attnbench.errors import AttnbenchError, OptionError, PluginError
from attnbench.options import Option, data_path, names_a_path, resolve_options
from attnbench.registry import Registry, check_spec_class, class_or_module

KINDS = ("classify", "tag", "lm", "seq2seq")
METRICS = ("accuracy", "exact_match", "bits_per_byte")  # accuracy: over labelled targets
SPLITS = ("train", "valid", "test")
IGNORE_INDEX = -100
NO_DISTANCE = -1  # meta value where a position has no dependency (unlabelled, padding)
# Bounds on the built-in tasks' int options (each option's `maximum`), so that a value past them is
# one line and not a MemoryError, a hang or minutes of generation. MAX_VOCAB: the ids a vocabulary
# option may give a task (its embedding is then at most 128 MiB in fp32 at d_model 512; the tasks
# here use tens to a few thousand). MAX_ITEMS: the things a count option puts into every sequence
# (pairs to recall, tokens to copy, clauses, modifiers), so that the shortest sequence that holds
# them stays within tens of thousands of tokens.
MAX_VOCAB = 2**16
MAX_ITEMS = 2**12

# hash buckets (of 10) that each split owns in generated tasks
_SPLIT_BUCKETS = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}


class TaskError(AttnbenchError):
    """A task asked for something it cannot give (a bad split, too short a sequence, ...)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task is, frozen: its kind, metric, options, source and licence."""

    kind: str
    metric: str
    description: str = ""
    source: str = ""
    licence: str = ""
    options: tuple[Option, ...] = ()
    max_seq_len: int | None = None
    has_distance: bool = False

    def resolve(self, owner: str, given: Mapping[str, Any], *, from_text: bool = False) -> dict:
        """All options of this task, `given` validated, the rest at their defaults."""
        return resolve_options(owner, self.options, given, from_text=from_text)


@dataclass(frozen=True, eq=False)
class Batch:
    """A built split: tokens with padding mask, targets and per-example meta."""

    tokens: Tensor
    padding_mask: Tensor
    target: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def select(self, index: Tensor | slice | Sequence[int]) -> Batch:
        """The examples at `index` (a slice, indices or a bool mask), meta included."""
        if isinstance(index, slice):
            pick = list(range(len(self)))[index]
        elif isinstance(index, Tensor) and index.dtype == torch.bool:
            pick = index.nonzero().flatten().tolist()
        else:
            pick = [int(i) for i in index]
        idx = torch.tensor(pick, dtype=torch.long)
        meta = {
            k: v[idx] if isinstance(v, Tensor) else [v[i] for i in pick] for k, v in self.meta.items()
        }
        return Batch(self.tokens[idx], self.padding_mask[idx], self.target[idx], meta)


@dataclass(frozen=True)
class Example:
    """One generated example before padding: input ids, target and meta values."""

    tokens: Sequence[int]
    target: int | Sequence[int]
    meta: dict[str, Any] = field(default_factory=dict)


def shift_right(target: Tensor, bos_id: int, pad_id: int) -> Tensor:
    """Decoder input for teacher forcing: BOS then target[:, :-1], ignored positions as pad."""
    body = target[:, :-1].masked_fill(target[:, :-1] == IGNORE_INDEX, pad_id)
    return torch.cat([torch.full_like(target[:, :1], bos_id), body], dim=1)


def split_rng(seed: int, split: str, task: str) -> np.random.Generator:
    """The numpy stream of one (seed, split, task): independent of every other triple."""
    key = (SPLITS.index(split), zlib.crc32(task.encode()))
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def split_of(tokens: Sequence[int]) -> str:
    """The split that owns an input (by a stable hash of its tokens)."""
    raw = np.asarray(tokens, dtype=np.int64).tobytes()
    bucket = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") % 10
    return next(s for s, owned in _SPLIT_BUCKETS.items() if bucket in owned)


class Task:
    """Base class of every task. Subclasses set `spec` and implement `make` (or `sample`)."""

    spec: ClassVar[TaskSpec]
    task_name: str = ""
    pad_id: int = 0
    vocab_size: int = 0
    n_classes: int | None = None
    chance: float = 0.0
    pooling: str = "mean"  # classify: pool states by "mean" over tokens or from the "last" token

    def __init__(self, **options: Any) -> None:
        self.options = self.spec.resolve(self.name, options)
        self.setup()

    @property
    def name(self) -> str:
        return self.task_name or type(self).__name__

    def setup(self) -> None:
        """Derive vocabulary sizes and chance from `self.options` (called once by __init__)."""

    # ---------------------------------------------------------------- contract
    def min_seq_len(self) -> int:
        """The shortest seq_len this task can be built at with its options."""
        return 2

    def size(self, split: str) -> int | None:
        """Examples available in `split` for corpus-backed tasks; None for generated ones."""
        self.check_split(split)
        return None

    def build(self, split: str, n: int, seq_len: int, seed: int) -> Batch:
        """`n` examples of `split` at `seq_len`, a pure function of its arguments and the options."""
        self.check_split(split)
        for label, value, low in (("n", n, 1), ("seq_len", seq_len, 1), ("seed", seed, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a positive int" if low == 1 else "a non-negative int"
                raise TaskError(f"{self.name}: {label} must be {kind}, got {value!r}")
        self.check_length(seq_len, flag="seq_len")
        if self.vocab_size < 1:  # before make: a sample() drawing from range(1, vocab_size) fails obscurely
            raise TaskError(f"{self.name}: vocab_size is {self.vocab_size}; set it in setup()")
        chance = self.chance
        if isinstance(chance, (bool, np.bool_)) or not isinstance(chance, numbers.Real) or not 0 <= chance <= 1:
            raise TaskError(f"{self.name}: chance is {chance!r}; set it in setup() to the score of answering at "
                            "random, from 0 to 1")
        self.chance = float(chance)  # recorded in each cell's JSON: a numpy float32 is not serialisable
        batch = self.make(split, n, seq_len, seed)
        self.check_batch(batch, n, seq_len)
        return batch

    def check_length(self, seq_len: int, *, flag: str, label: str | None = None) -> None:
        """One line naming `flag` (`--lengths`, `--seq-len`) when the task cannot be built at
        `seq_len`: shorter than its options allow, or past its maximum. `label`: the task as the
        user wrote it (with its options), else its name."""
        label = label or self.name
        low, high = self.min_seq_len(), self.spec.max_seq_len
        if seq_len < low:
            raise TaskError(f"{flag}: {seq_len} is too short for {label} (its minimum is {low})")
        if high is not None and seq_len > high:
            raise TaskError(f"{flag}: {seq_len} exceeds {label}'s maximum of {high}")

    def make(self, split: str, n: int, seq_len: int, seed: int) -> Batch:
        raise NotImplementedError(f"{self.name}: a Task implements make(split, n, seq_len, seed) -> Batch "
                                  "(a GeneratedTask implements sample(rng, seq_len) -> Example instead)")

    def check_batch(self, batch: Batch, n: int, seq_len: int) -> None:
        """A TaskError naming what a built batch gets wrong against the contract (the module
        docstring): shapes, token ids within `vocab_size`, targets within the classes. A plugin
        task's mistake is then one line, not an IndexError deep in the model's embedding or loss."""
        tokens, target, kind = batch.tokens, batch.target, self.spec.kind
        if tokens.dtype != torch.long or tuple(tokens.shape) != (n, seq_len):
            raise TaskError(f"{self.name}: built tokens of shape {tuple(tokens.shape)} and dtype {tokens.dtype}, "
                            f"expected ({n}, {seq_len}) int64")
        if tuple(batch.padding_mask.shape) != (n, seq_len) or batch.padding_mask.dtype != torch.bool:
            raise TaskError(f"{self.name}: the padding mask must be ({n}, {seq_len}) bool, "
                            f"got {tuple(batch.padding_mask.shape)} {batch.padding_mask.dtype}")
        _check_ids(self.name, "token id", tokens, "vocab_size", self.vocab_size, ignore=None)
        if kind == "classify":
            shape, bound, top = (n,), "n_classes", self.n_classes
        elif kind == "tag":
            shape, bound, top = (n, seq_len), "n_classes", self.n_classes
        elif kind == "lm":
            shape, bound, top = (n, seq_len), "vocab_size", self.vocab_size
        else:  # seq2seq: the target's width is the task's own
            shape, bound, top = (n, target.shape[-1]), "target_vocab_size", getattr(self, "target_vocab_size", None)
        if target.dtype != torch.long or tuple(target.shape) != shape:
            raise TaskError(f"{self.name}: built targets of shape {tuple(target.shape)} and dtype {target.dtype}; "
                            f"a {kind} task's are {shape} int64")
        if top is None or top < 1:
            raise TaskError(f"{self.name}: {bound} is {top}; set it in setup()")
        _check_ids(self.name, "target", target, bound, top, ignore=None if kind == "classify" else IGNORE_INDEX)
        self._check_distance(batch, tuple(target.shape))
        if kind != "classify" and n and not (target != IGNORE_INDEX).any():  # the loss would be 0/0: NaN
            raise TaskError(f"{self.name}: built {n} examples whose every target is IGNORE_INDEX ({IGNORE_INDEX}): "
                            "nothing to learn or score; label at least one position")

    def _check_distance(self, batch: Batch, shape: tuple[int, ...]) -> None:
        """meta['distance'], which the runner scores accuracy by, is there exactly where the spec
        declares `has_distance`, as int64 of the targets' shape (runner.train.distance_buckets)."""
        distance = batch.meta.get("distance")
        if not self.spec.has_distance:
            if "distance" in batch.meta:
                raise TaskError(f"{self.name}: records meta['distance'] but does not declare has_distance=True "
                                "in its TaskSpec")
            return
        if distance is None:
            raise TaskError(f"{self.name}: declares has_distance=True but records no meta['distance'] (an int per "
                            "example for a classify task, else one per target position)")
        if not isinstance(distance, Tensor) or distance.dtype != torch.long or tuple(distance.shape) != shape:
            got = (f"{tuple(distance.shape)} {distance.dtype}" if isinstance(distance, Tensor)
                   else f"{type(distance).__name__} (not ints)")
            raise TaskError(f"{self.name}: meta['distance'] must be int64 of the targets' shape {shape} (an int per "
                            f"example for a classify task, else one per target position), got {got}")

    # ---------------------------------------------------------------- trivial baselines
    def trivial_baselines(self, train: Batch, test: Batch) -> dict[str, float]:
        """Test scores of answering without what the task isolates, by name: the floor to read a
        model's score against beside `chance` (a cell records them, the report shows the best). The
        base gives an accuracy task "majority", always the train split's most frequent target; a
        task adds what its structure allows (listops: the answer its root operator most often has),
        each in the task's own metric (char-lm: bits per byte of a unigram and a bigram). A task
        scored otherwise (exact match, bits per byte) has none from the base."""
        if self.spec.metric != "accuracy":
            return {}
        return {"majority": accuracy_of(torch.tensor(most_frequent(train.target)), test.target)}

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise TaskError(f"{self.name}: unknown split {split!r}; use one of {', '.join(SPLITS)}")

    def data_files(self) -> list[Path]:
        """The local files these options make the task read: each `path` option (`Option.path`) that
        names a file. A run records their checksums, so that `--resume` refuses a file edited since
        (its remaining cells would train on other data than the recorded ones). A task reading a
        folder overrides this with the files it reads there."""
        files = []
        for option in self.spec.options:
            value = self.options.get(option.name)
            if names_a_path(option, value) and (path := data_path(value)).is_file():  # not a keyword (sotu)
                files.append(path)
        return files

    # ---------------------------------------------------------------- for people
    def spec_as_built(self) -> TaskSpec:
        """The spec with description, source and licence of the data these options read.

        `spec` is the class's and describes the built-in data; an option that swaps it for a
        user's file or dataset (text-cls `source=`, listops `path=`) overrides this, so that
        show-task names what is read rather than the corpus that is not.
        """
        return self.spec

    def token_names(self) -> list[str]:
        """Printable name of every token id (for show-task); bytes override `decode`."""
        return [str(i) for i in range(self.vocab_size)]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids as text, padding dropped."""
        names = self.token_names()
        return " ".join(names[i] for i in ids if i != self.pad_id)

    def class_names(self) -> list[str]:
        """Printable name of every class (for show-task): its number, unless a task names them as
        its input does (a copied symbol, a recalled value)."""
        return [str(c) for c in range(self.n_classes or 0)]

    def describe_target(self, batch: Batch, i: int) -> str:
        """The target of example `i` in words: the names of its classes."""
        target, names = batch.target[i], self.class_names()

        def name(t: int) -> str:
            return names[t] if 0 <= t < len(names) else str(t)

        if target.dim() == 0:
            return name(int(target))
        labelled = target != IGNORE_INDEX
        return " ".join(name(int(t)) for t in target[labelled])


class GeneratedTask(Task):
    """A task drawn from a seeded generator: subclasses implement `sample(rng, seq_len)`."""

    max_tries_per_example: ClassVar[int] = 200

    def sample(self, rng: np.random.Generator, seq_len: int) -> Example:
        raise NotImplementedError(f"{self.name}: a GeneratedTask implements sample(rng, seq_len) -> Example")

    def target_len(self, seq_len: int) -> int:
        """Width of the target for seq2seq tasks."""
        return seq_len

    def make(self, split: str, n: int, seq_len: int, seed: int) -> Batch:
        rng = split_rng(seed, split, self.name)
        examples: list[Example] = []
        tries = 0
        while len(examples) < n:
            tries += 1
            if tries > self.max_tries_per_example * n + 1000:
                raise TaskError(
                    f"{self.name}: could not generate {n} distinct-split examples at "
                    f"seq_len={seq_len}; try a longer seq_len or other options"
                )
            ex = self.sample(rng, seq_len)
            if split_of(ex.tokens) == split:
                examples.append(ex)
        return self.assemble(examples, seq_len)

    def assemble(self, examples: Sequence[Example], seq_len: int) -> Batch:
        """Pad examples into a Batch."""
        n = len(examples)
        kind = self.spec.kind
        width = self.target_len(seq_len) if kind == "seq2seq" else seq_len
        for ex in examples:
            self._check_example(ex, seq_len, width)
        tokens = torch.full((n, seq_len), self.pad_id, dtype=torch.long)
        for i, ex in enumerate(examples):
            tokens[i, : len(ex.tokens)] = torch.as_tensor(np.asarray(ex.tokens, dtype=np.int64))
        if kind == "classify":
            target = torch.tensor([int(ex.target) for ex in examples], dtype=torch.long)
        else:
            target = _pad_rows([ex.target for ex in examples], width, IGNORE_INDEX)
        meta: dict[str, Any] = {}
        for key in examples[0].meta if examples else ():
            values = [ex.meta[key] for ex in examples]
            if all(isinstance(v, (int, np.integer)) for v in values):
                meta[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
            elif all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
                width = self.meta_width(key, seq_len)
                meta[key] = _pad_rows(values, width, NO_DISTANCE)
            else:
                meta[key] = values
        return Batch(tokens, tokens == self.pad_id, target, meta)

    def _check_example(self, ex: Example, seq_len: int, width: int) -> None:
        """One line for an Example that cannot be padded into the batch (not a TypeError in numpy)."""
        if len(ex.tokens) > seq_len:
            raise TaskError(f"{self.name}: sample() gave {len(ex.tokens)} tokens for seq_len={seq_len}")
        if (at := np.flatnonzero(np.asarray(ex.tokens) == self.pad_id)).size:  # masked: the model never sees it
            raise TaskError(f"{self.name}: sample() gave the pad id {self.pad_id} at position {at[0]} of an example's "
                            "tokens; padding is masked from attention, so give content ids other than the pad id")
        one = isinstance(ex.target, (int, np.integer))
        if self.spec.kind == "classify" and not one:
            raise TaskError(f"{self.name}: a classify task's Example.target is one int, got {type(ex.target).__name__}")
        if self.spec.kind != "classify" and (one or len(ex.target) > width):
            got = "one int" if one else f"{len(ex.target)} targets"
            raise TaskError(f"{self.name}: a {self.spec.kind} task's Example.target is a sequence of at most "
                            f"{width} (one per position), got {got}")

    def meta_width(self, key: str, seq_len: int) -> int:
        """Width of a per-position meta row (seq_len unless it follows the target)."""
        return seq_len


def most_frequent(target: Tensor) -> int:
    """The most frequent labelled value of `target` (the smallest among ties); 0 when none is."""
    labelled = target[target != IGNORE_INDEX]
    return int(torch.bincount(labelled).argmax()) if labelled.numel() else 0


def row_counts(ids: Tensor, counted: Tensor, classes: int) -> Tensor:
    """(rows, classes): how often each id in [0, classes) occurs in each row of `ids`, where
    `counted` is true (ids elsewhere may lie outside the range). `.argmax(-1)` is each row's most
    frequent id, the smallest among ties."""
    counts = torch.zeros(ids.shape[0], classes, dtype=torch.long, device=ids.device)
    return counts.scatter_add_(1, ids.clamp(0, classes - 1), counted.long())


def accuracy_of(prediction: Tensor, target: Tensor) -> float:
    """The accuracy of `prediction` over the labelled places of `target`, as a cell scores a model:
    `prediction` broadcasts against `target` ((), (n,) or (n, 1) for one answer per example)."""
    labelled = target != IGNORE_INDEX
    hits = (prediction == target) & labelled
    return float(hits.sum()) / max(1, int(labelled.sum()))


def _check_ids(task: str, what: str, ids: Tensor, bound: str, top: int, *, ignore: int | None) -> None:
    """Every id in [0, top), except `ignore` (unlabelled) where the kind allows it."""
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())  # no copy of a large target: IGNORE_INDEX is negative
    if low < 0 and ignore is not None and low == ignore:  # only then look past the unlabelled
        below = ids[(ids < 0) & (ids != ignore)]
        low = int(below.min()) if below.numel() else 0
    if low < 0:
        raise TaskError(f"{task}: built a {what} of {low}; ids are in [0, {bound})")
    if high >= top:
        raise TaskError(f"{task}: built a {what} of {high}, not below {bound} = {top} (set in setup())")


def _pad_rows(rows: Sequence[Sequence[int]], width: int, fill: int) -> Tensor:
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
    return out


# ---------------------------------------------------------------------------- the registry
def check_task_class(name: str, obj: object) -> type[Task]:
    """`obj` if it is a valid task class (a `Task` subclass with `spec: TaskSpec`)."""
    return check_spec_class(
        "task", name, obj, base=Task, base_text="a subclass of attnbench.tasks.base.Task",
        spec_type=TaskSpec, choices={"kind": KINDS, "metric": METRICS},
    )


TASKS: Registry[type[Task]] = Registry(
    "task", entry_point_group="attnbench.tasks", adapt=class_or_module(check_task_class)
)


def register_task(name: str, cls: type[Task] | None = None, *, aliases: tuple[str, ...] = ()):
    """Register a task class: `@register_task("mine")` or `register_task("mine", Cls)`."""

    def wrap(task_cls: type[Task]) -> type[Task]:
        TASKS.register(name, check_task_class(name, task_cls), aliases=aliases)
        if "task_name" not in vars(task_cls):
            task_cls.task_name = name  # so that the task's own messages use its name
        return task_cls

    return wrap if cls is None else wrap(cls)


def get_task(name: str) -> type[Task]:
    """The task class registered under `name` (or an alias)."""
    return TASKS[name]


def get_task_spec(name: str) -> TaskSpec:
    """The `TaskSpec` of a registered task (name or alias)."""
    return TASKS[name].spec


def list_tasks(pattern: str | None = None) -> list[str]:
    """Registered task names, optionally filtered by a glob such as 'sel*'."""
    return TASKS.names(pattern)


def build_task(name: str, **options: Any) -> Task:
    """A task instance of `name` with validated options."""
    entry = TASKS.get(name)
    resolved = entry.obj.spec.resolve(entry.name, options)
    try:
        task = entry.obj(**resolved)
    except AttnbenchError:
        raise
    except (Exception, SystemExit) as exc:
        raise PluginError(f"{entry.name}: building the task failed: {type(exc).__name__}: {exc}") from exc
    task.task_name = entry.name
    return task


def parse_distances(text: str, owner: str) -> tuple[int, ...] | None:
    """'8,32,128' → (8, 32, 128); '' → None; anything else is an OptionError."""
    if not text.strip():
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise OptionError(
            f"{owner}: distances must be comma-separated positive ints such as '8,32,128', got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise OptionError(f"{owner}: distances must be positive, got {text!r}")
    return tuple(sorted(set(values)))
