"""Errors that mean "the user asked for something wrong": the CLI prints them as one line, exit 2."""

import contextlib
import traceback
from collections.abc import Iterator


class AttnbenchError(ValueError):
    """Bad input (a name, an option, a file): shown to the user as one line, never a traceback."""


class UnknownNameError(AttnbenchError, KeyError):
    """A name that no registry holds."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class OptionError(AttnbenchError):
    """An option with the wrong name, type or value."""


class UnsupportedError(AttnbenchError):
    """A feature the component declares it does not support (cross-attention, causal, ...)."""


class NoBackwardError(UnsupportedError):
    """A kernel that runs forward but cannot take gradients on this device (FlexAttention on CPU):
    `bench check` then checks the variant forward only, and says so."""


class PluginError(AttnbenchError):
    """A plugin that does not import or is malformed."""


class StoppedWriting(AttnbenchError):
    """Results could not be written mid-run (disk full, I/O error): the run stops, exit 1; what was
    written before stays valid."""

    exit_code = 1


class Terminated(BaseException):
    """SIGTERM arrived (`attnbench.cli` raises it from its handler): unwinds like Ctrl-C (a
    BaseException, so no `except Exception` stops it), through the same clean-up: the cell in
    flight abandoned, its worker killed, the lock freed."""


class UserCodeError(AttnbenchError):
    """A variant's or a task's own code raised while a command ran outside a sweep (`show-task`,
    `attention`): one line naming the exception and where it was raised, exit 1 (the input was fine)."""

    exit_code = 1


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run a variant's or a task's own code outside a sweep: our errors pass as they are, any other
    exception (a `sys.exit()` too) becomes one UserCodeError line, `what failed: …`."""
    try:
        yield
    except AttnbenchError:
        raise
    except (Exception, SystemExit) as exc:
        raise UserCodeError(f"{what} failed: {raised_where(exc)}") from exc


def raised_where(exc: BaseException) -> str:
    """'ValueError: bad thing (at path/to/file.py:12)': the exception, its first line, its innermost frame."""
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    return message + (f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else "")
