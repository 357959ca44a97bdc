"""Records in the order their grid plans the cells, whatever order they were appended in.

Cells run with `--jobs` finish in any order, and a `--retry` appends its reruns last; a report's
rows must depend on neither. The grid (grid.json) plans accuracy cells by task, length, variant
and seed, then efficiency cells by length and variant.

A record names its variant and task with the options it ran with (`variant_options`,
`task_options`: the profile's task options included, sorted), while the grid holds the labels as
they were selected (options in the order given, quoted where they hold commas). So a record is
matched to the grid label of the same name whose options it holds, the one naming the most of
them where several do (`copy` and `copy(num_symbols=4)`). Records the grid does not name come
after the others, in their file order.
"""

from __future__ import annotations

import json
from typing import Any

from attnbench.selection import label_parts


def in_grid_order(records: list[dict], grid: dict) -> list[dict]:
    variants, tasks = _Slots(grid.get("variants")), _Slots(grid.get("tasks"))
    seeds, timed = _places(grid.get("seeds")), _places(grid.get("efficiency_lengths"))
    per_task = grid.get("lengths")
    task_labels = grid.get("tasks") if isinstance(grid.get("tasks"), list) else []
    lengths = [_places(per_task.get(t)) if isinstance(per_task, dict) and isinstance(t, str) else {}
               for t in task_labels]
    last = len(records)

    def place(record: dict) -> tuple[int, ...]:
        variant = variants.find(record.get("variant"), record.get("variant_options"))
        if record.get("kind") == "efficiency":
            return (1, 0, timed.get(_text(record.get("seq_len")), last), variant, 0)
        task = tasks.find(record.get("task"), record.get("task_options"))
        ns = lengths[task] if task < len(lengths) else {}
        return (0, task, ns.get(_text(record.get("seq_len")), last), variant, seeds.get(_text(record.get("seed")), last))

    return sorted(records, key=place)  # stable: equal places keep the file's order


class _Slots:
    """The grid's labels of one kind, parsed once: where a record's (name, options) goes."""

    def __init__(self, labels: Any) -> None:
        self.slots = [label_parts(x) if isinstance(x, str) else None for x in labels] if isinstance(labels, list) else []
        self.found: dict[str, int] = {}

    def find(self, name: Any, options: Any) -> int:
        """The index of the grid label that names `name` with the most of `options`; past the
        last label where none does."""
        options = {k: str(v) for k, v in options.items()} if isinstance(options, dict) else {}
        memo = _text([name, options])
        if memo not in self.found:
            best, most = len(self.slots), -1
            for i, slot in enumerate(self.slots):
                if slot and slot[0] == name and len(slot[1]) > most and all(options.get(k) == v for k, v in slot[1].items()):
                    best, most = i, len(slot[1])
            self.found[memo] = best
        return self.found[memo]


def planned_labels(records: list[dict], grid: dict, kind: str = "accuracy") -> list[str]:
    """The grid's variants in its order, each named as its first record of `kind` names it
    (`variant_label`, options sorted), or as the grid does where none has been recorded (a run
    killed before it reached them)."""
    variants = _Slots(grid.get("variants"))
    named: dict[int, str] = {}
    for r in records:
        if r.get("kind") == kind and isinstance(r.get("variant_label"), str):
            named.setdefault(variants.find(r.get("variant"), r.get("variant_options")), r["variant_label"])
    labels = grid.get("variants") if isinstance(grid.get("variants"), list) else []
    return [named.get(i, label) for i, label in enumerate(labels) if isinstance(label, str)]


def _places(values: Any) -> dict[str, int]:
    """A grid list's positions by value; a field of another shape (an edited grid.json) orders nothing."""
    return {_text(v): i for i, v in enumerate(values)} if isinstance(values, list) else {}


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
