"""Synthetic tasks with a known answer: each isolates one capability of an attention mechanism."""

from attnbench.tasks.synthetic import copy, distance, induction, listops, mqar, selective_copy  # noqa: F401
