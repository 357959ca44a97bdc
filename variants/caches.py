"""What kernels keep between calls, and one call that drops it all.

A kernel may keep what it builds once per shape: a FlexAttention block mask, a band's additive
bias on CUDA, a CUDA graph of a compiled call (variants/graphs.py). Each registers its `clear`
here. `forget_caches()` drops them all: `bench run` before each cell (through
`compiled.forget_compiled`), so a cell's record never depends on the cells before it, and `bench
perf` and the efficiency cells before the call whose memory they count, so that peak includes
what the call builds and keeps, whichever call came first.
"""

from __future__ import annotations

from typing import Callable

_clears: list[Callable[[], None]] = []


def register_cache(clear: Callable[[], None]) -> Callable[[], None]:
    """Register `clear` (it drops one cache); returns it, so it can decorate the function."""
    _clears.append(clear)
    return clear


def forget_caches() -> None:
    """Drop every registered cache."""
    for clear in _clears:
        clear()
