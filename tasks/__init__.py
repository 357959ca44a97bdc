"""Tasks: importing this package registers the built-in synthetic and NLP tasks.

Public API: TASKS, register_task, build_task, list_tasks, get_task, get_task_spec, Task,
GeneratedTask, TaskSpec, Batch, Example, IGNORE_INDEX.
"""

from attnbench.tasks.base import (  # noqa: F401
    IGNORE_INDEX,
    KINDS,
    METRICS,
    NO_DISTANCE,
    SPLITS,
    TASKS,
    Batch,
    Example,
    GeneratedTask,
    Task,
    TaskError,
    TaskSpec,
    build_task,
    get_task,
    get_task_spec,
    list_tasks,
    register_task,
    shift_right,
)
from attnbench.tasks import synthetic  # noqa: F401,E402  (registers the built-ins)
from attnbench.tasks import nlp  # noqa
