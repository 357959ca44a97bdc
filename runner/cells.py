"""A cell: one (variant+options, task, seq_len, seed, kind) of a sweep, with a stable key.

`accuracy` cells train the harness on a task and test it; `efficiency` cells time and measure the
attention layer alone (task is None). The key names everything that makes the cell's result
what it is, so a resumed run recognises the cells it already holds:

    accuracy/local(window=64)/mqar(num_kv_pairs=8)/n=128/seed=0
    efficiency/linear/-/n=4096/seed=0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("accuracy", "efficiency")
STATUSES = ("ok", "oom", "timeout", "unsupported", "error")


def label(name: str, options: dict[str, Any]) -> str:
    """`name(k=v, …)` with options sorted by name; `name` when there are none."""
    if not options:
        return name
    return f"{name}({', '.join(f'{k}={options[k]}' for k in sorted(options))})"


@dataclass(frozen=True)
class Cell:
    """One unit of work of a sweep; plain data (JSON round-trip with to_dict/from_dict)."""

    kind: str
    variant: str
    seq_len: int
    seed: int
    task: str | None = None
    variant_options: tuple[tuple[str, Any], ...] = ()
    task_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, kind: str, variant: str, variant_options: dict, task: str | None, task_options: dict,
             seq_len: int, seed: int) -> Cell:
        return cls(
            kind=kind,
            variant=variant,
            seq_len=seq_len,
            seed=seed,
            task=task,
            variant_options=tuple(sorted(variant_options.items())),
            task_options=tuple(sorted(task_options.items())),
        )

    @property
    def variant_label(self) -> str:
        return label(self.variant, dict(self.variant_options))

    @property
    def task_label(self) -> str:
        return label(self.task, dict(self.task_options)) if self.task else "-"

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.variant_label}/{self.task_label}/n={self.seq_len}/seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "variant": self.variant,
            "variant_label": self.variant_label,
            "variant_options": dict(self.variant_options),
            "task": self.task,
            "task_label": self.task_label,
            "task_options": dict(self.task_options),
            "seq_len": self.seq_len,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls.make(
            data["kind"],
            data["variant"],
            data.get("variant_options") or {},
            data.get("task"),
            data.get("task_options") or {},
            int(data["seq_len"]),
            int(data["seed"]),
        )
