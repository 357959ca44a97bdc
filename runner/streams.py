"""Output streams that outlive their reader: once the reader of a pipe is gone (`bench run | head`),
writes are dropped instead of raising BrokenPipeError, so a long run goes on without printing.
Used for `bench run`'s and `bench perf`'s stdout (attnbench/cli.py) and for a subprocess worker's
stderr, which is its parent's (runner/worker.py); both also start on /dev/null where a standard
descriptor was closed (`devnull_if_closed`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable


def devnull_if_closed(fd: int, name: str) -> None:
    """Started with descriptor `fd` closed (`bench … >&-`), Python gives sys.stdout (or stderr)
    None, on which rich and click fail (a traceback at import) and a worker's prints fail its
    cells: run instead, printing nowhere. The /dev/null goes onto `fd` itself, inheritable, so that
    native code writing to it, and a worker process, print nowhere too, not into whatever file took
    the lowest free descriptor (a worker's copy of its records pipe, a run's lock file)."""
    if getattr(sys, name) is not None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    if devnull == fd:
        os.set_inheritable(fd, True)
    else:
        os.dup2(devnull, fd)  # inheritable by default
        os.close(devnull)
    setattr(sys, name, open(fd, "w", buffering=1, closefd=False))  # noqa: SIM115 (for the life of the process)


class Outliving:
    """A text stream whose writes are dropped once its pipe's reader has gone. On the first
    BrokenPipeError it points the stream's file descriptor, and every other descriptor open on
    the same pipe (`2>&1 | head`: stderr too), at /dev/null, so that nothing written later (the
    interpreter's last flush, native code, a process started after) meets the closed pipe, and
    calls `on_drop` (with stderr already pointed away where it was the same pipe: then False)."""

    def __init__(self, stream, on_drop: Callable[[bool], None] | None = None) -> None:
        self._stream, self._on_drop, self._gone = stream, on_drop, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        stderr_open = True
        with contextlib.suppress(OSError, ValueError):  # no descriptor to point elsewhere: writes are dropped anyway
            fd = self._stream.fileno()
            gone = os.fstat(fd)
            targets = [fd]
            for other in (1, 2):
                with contextlib.suppress(OSError):
                    same = os.fstat(other)
                    if other != fd and (same.st_dev, same.st_ino) == (gone.st_dev, gone.st_ino):
                        targets.append(other)
            stderr_open = 2 not in targets
            devnull = os.open(os.devnull, os.O_WRONLY)
            for target in targets:
                os.dup2(devnull, target)
            os.close(devnull)
        if self._on_drop is not None:
            with contextlib.suppress(OSError):
                self._on_drop(stderr_open)

    def __getattr__(self, name):  # isatty, encoding, fileno, …: the stream's own
        if name.startswith("_"):  # not forwarded: an instance made without __init__ (copy) would recurse
            raise AttributeError(name)
        return getattr(self._stream, name)
