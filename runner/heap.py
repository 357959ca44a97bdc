"""glibc malloc tuning (Linux): whether a big CPU tensor is reused from the heap or mapped fresh.

glibc serves a block at or above its mmap threshold with a fresh mmap that goes back to the OS
when freed, so a call that allocates such a block page-faults all of it in again; smaller blocks
are reused from the heap. By default the threshold starts at 128 KiB and rises with each larger
mmap'd block freed, up to 32 MiB. Once `mallopt` sets it, glibc's dynamic adjustment is off for
the rest of the process: the value stays where the last call put it.

mallopt(3) documents 32 MiB as the threshold's upper limit on 64-bit systems; newer glibc (2.36
here) accept 1 GiB, older ones refuse it, and `pin_mmap_threshold` then reports False. The pin
serves the main thread's heap: a thread with its own arena (heaps of at most 64 MiB) still maps
bigger blocks fresh. Timings run on the main thread.
"""

from __future__ import annotations

import ctypes
from typing import Callable

import torch

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
C_INT_MAX = 2**31 - 1  # mallopt takes an int
STEADY_BYTES = 4 << 20  # efficiency cells and memory probes: big blocks go back to the OS when freed
CACHED_BYTES = 1 << 30  # `bench perf --heap cached`: blocks up to 1 GiB are reused from the heap

# the heap condition a `bench perf` row was timed under (its `heap` column)
CACHED, GLIBC = "cached", "glibc"  # CPU: threshold pinned at CACHED_BYTES; glibc's defaults
HEAPS = (CACHED, GLIBC)
CUDA_HEAP = "cuda"  # CUDA: tensors come from CUDA's caching allocator, which --heap leaves alone


def pin_mmap_threshold(nbytes: int) -> bool:
    """Serve blocks under `nbytes` from the heap, trimming its top only past twice that; whether
    glibc accepted it (False where there is no glibc, or it refused the mmap threshold and nothing
    changed).

    Twice is glibc's own pairing when it raises the threshold itself. Not cached: a later call
    moves both thresholds again.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        # the mmap threshold first: were it refused, setting the trim threshold alone would still
        # switch glibc's dynamic adjustment off
        if not libc.mallopt(M_MMAP_THRESHOLD, min(nbytes, C_INT_MAX)):
            return False
        return bool(libc.mallopt(M_TRIM_THRESHOLD, min(2 * nbytes, C_INT_MAX)))
    except (OSError, AttributeError):
        return False  # not glibc: nothing to pin


def set_heap(device: str, heap: str, log: Callable[[str], None]) -> str:
    """Put the CPU heap in the run's condition; the condition the rows record (`heap` column).

    glibc maps each block of 32 MiB or more fresh and page-faults it in on every call, so on CPU an
    implementation whose output crosses 32 MiB at long n (linear, n = 16384: 45–48 ms against
    30.5 ms from the heap) pays a cost that none pays at short n and that bends its scaling ratio.
    "cached" removes it, as CUDA's caching allocator (or jemalloc/tcmalloc) would. The pin lasts
    for the rest of the process: glibc's dynamic threshold cannot be switched back on.
    """
    if torch.device(device).type == "cuda":
        return CUDA_HEAP
    if heap == CACHED:
        if pin_mmap_threshold(CACHED_BYTES):
            return CACHED
        log("heap: glibc refused the 1 GiB mmap threshold, or the allocator is not glibc; "
            "timing under the allocator's defaults")
    return GLIBC
