"""Errors that mean "the user asked for something wrong": the CLI prints them as one line, exit 2."""

import traceback


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


class UserCodeError(AttnbenchError):
    """A variant's or a task's own code raised while a command ran outside a sweep (`show-task`,
    `attention`): one line naming the exception and where it was raised, exit 1 (the input was fine)."""

    exit_code = 1


def raised_where(exc: BaseException) -> str:
    """'ValueError: bad thing (at path/to/file.py:12)': the exception, its first line, its innermost frame."""
    text = str(exc).strip().splitlines()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ") + where
