"""attnbench: a pluggable benchmark suite for attention mechanisms.

Public API:
    variants: register_variant, build_variant, list_variants, get_variant_spec, VariantSpec,
              ProjectedAttention (base class with projections), AttentionLayer (base class)
    tasks:    register_task, build_task, list_tasks, get_task_spec, TaskSpec, Task, GeneratedTask
    results:  load_results(run_dir) → a pandas DataFrame, one row per cell
    Option (typed options of variants and tasks), errors
"""

from attnbench.errors import (
    AttnbenchError, NoBackwardError, OptionError, PluginError, UnknownNameError, UnsupportedError,
)
from attnbench.options import Option
from attnbench.variants.base import (
    VARIANTS,
    AttentionLayer,
    ProjectedAttention,
    VariantSpec,
    build_variant,
    get_variant_spec,
    list_variants,
    register_variant,
)
import attnbench.variants  # noqa: E402,F401  (registers the built-in variants)
from attnbench.tasks import (  # noqa: E402  (importing it registers the built-in tasks)
    GeneratedTask,
    Task,
    TaskSpec,
    build_task,
    get_task_spec,
    list_tasks,
    register_task,
)


def load_results(run_dir):
    """The cells of a run directory as a pandas DataFrame (one row per cell, nested fields
    flattened with '.'); see attnbench.runner.store."""
    from attnbench.runner.store import load_results as load

    return load(run_dir)


__version__ = "0.1.0"

__all__ = [
    "AttentionLayer",
    "AttnbenchError",
    "GeneratedTask",
    "Task",
    "TaskSpec",
    "build_task",
    "get_task_spec",
    "list_tasks",
    "load_results",
    "register_task",
    "NoBackwardError",
    "Option",
    "OptionError",
    "PluginError",
    "ProjectedAttention",
    "UnknownNameError",
    "UnsupportedError",
    "VARIANTS",
    "VariantSpec",
    "build_variant",
    "get_variant_spec",
    "list_variants",
    "register_variant",
]
