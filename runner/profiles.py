"""Profiles: named grids (lengths, seeds, model size, training budget, efficiency lengths).

`bench run` takes a profile (default `quick`) and CLI overrides; `bench ls profiles` lists them.

- smoke: seconds, for tests — tiny model, a few dozen steps.
- quick: the default — every variant on every task at small lengths plus efficiency cells up to
  n = 4096; a few minutes on a 2-core CPU for the five core variants.
- standard: longer lengths, more steps, two seeds — hours on a 2-core CPU. Single cells measured
  there: 45–60 s per n = 256 cell for multi-head, dot-product, local and linear (so about 3 h for
  their ~165 cells, the n = 512 and 1024 ones longer), 195 s per n = 128 cell for additive, whose
  n ≥ 256 cells would reach the 900 s budget (about 7 h more). Run it without additive, on a
  quiet machine, or on a GPU.
- lra: LRA-like lengths (1K–4K, efficiency to 16K) for a GPU.

A task may get its own lengths or options in a profile (`task_lengths`, `task_options`): some
need longer inputs to be meaningful (listops, text-cls), and a task not named there uses
`lengths`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from attnbench.registry import Registry
from attnbench.runner.model import ModelSize
from attnbench.runner.train import TrainSettings


@dataclass(frozen=True)
class EfficiencySettings:
    """Shape and timing budget of efficiency cells (the attention layer alone)."""

    lengths: tuple[int, ...] = (256, 1024, 4096)
    batch: int = 1
    d_model: int = 256
    n_heads: int = 4
    min_run_time: float = 0.1
    max_seconds: float | None = None  # budget of one efficiency cell (default: the profile's)
    model_step: bool = True  # also time one whole training step of the harness around the layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Profile:
    """A named grid and its budgets."""

    name: str
    description: str
    lengths: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    task_lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # options for a variant selected without any (`all`, `local`): e.g. a window that is short
    # next to the profile's lengths, so that locality shows; the label names them
    variant_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    size: ModelSize = ModelSize()
    train: TrainSettings = TrainSettings()
    efficiency: EfficiencySettings = EfficiencySettings()
    max_cell_seconds: float | None = None

    def lengths_for(self, task: str) -> tuple[int, ...]:
        return self.task_lengths.get(task, self.lengths)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["task_lengths"] = {k: list(v) for k, v in self.task_lengths.items()}
        return data


PROFILES: Registry[Profile] = Registry("profile")


def register_profile(profile: Profile) -> Profile:
    return PROFILES.register(profile.name, profile)


register_profile(
    Profile(
        name="smoke",
        description="seconds: a tiny model, a few dozen steps; for tests and CI",
        lengths=(32,),
        task_lengths={"listops": (64,), "translation": (32,)},
        variant_options={"local": {"window": 4}},
        size=ModelSize(d_model=32, n_layers=1, n_heads=2),
        train=TrainSettings(steps=30, batch_size=16, eval_every=15, n_train=256, n_valid=64, n_test=64),
        efficiency=EfficiencySettings(lengths=(64, 256), d_model=64, n_heads=2, min_run_time=0.01),
    )
)

register_profile(
    Profile(
        name="quick",
        description="the default: every variant x task at small lengths, efficiency to n=4096; "
        "about 3 minutes on a 2-core CPU",
        lengths=(32,),
        task_lengths={"listops": (64,), "text-cls": (64,), "sentiment": (64,)},
        variant_options={"local": {"window": 4}},  # |i - j| < 4: 2 layers reach 6 tokens back
        size=ModelSize(d_model=64, n_layers=2, n_heads=4),
        train=TrainSettings(steps=160, batch_size=32, eval_every=40, n_train=2048, n_valid=256, n_test=384),
        efficiency=EfficiencySettings(
            lengths=(256, 1024, 4096), d_model=128, n_heads=4, min_run_time=0.05, max_seconds=10
        ),
        max_cell_seconds=120,
    )
)

register_profile(
    Profile(
        name="standard",
        description="hours on a 2-core CPU (about 3 h without additive): longer inputs, more steps, two seeds",
        lengths=(128, 256),
        seeds=(0, 1),
        task_lengths={"listops": (256, 512), "text-cls": (512, 1024), "sentiment": (256,)},
        variant_options={"local": {"window": 16}},
        size=ModelSize(d_model=64, n_layers=2, n_heads=4),
        train=TrainSettings(steps=800, batch_size=32, eval_every=100, n_train=8192, n_valid=512, n_test=1024),
        efficiency=EfficiencySettings(lengths=(256, 1024, 4096, 8192), d_model=256, n_heads=4, min_run_time=0.2),
        max_cell_seconds=900,
    )
)

register_profile(
    Profile(
        name="lra",
        description="LRA-like lengths (1K-4K, efficiency to 16K); meant for a GPU",
        lengths=(1024, 2048),
        seeds=(0, 1, 2),
        task_lengths={"listops": (2000,), "text-cls": (4000,), "sentiment": (1024,), "char-lm": (1024,)},
        variant_options={"local": {"window": 128}},
        size=ModelSize(d_model=256, n_layers=4, n_heads=4),
        train=TrainSettings(steps=5000, batch_size=32, lr=1e-3, eval_every=500, n_train=96000, n_valid=2000, n_test=2000),
        efficiency=EfficiencySettings(lengths=(1024, 2048, 4096, 8192, 16384), d_model=512, n_heads=8, min_run_time=0.5),
        max_cell_seconds=3600,
    )
)
