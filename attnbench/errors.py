"""Errors that mean "the user asked for something wrong": the CLI prints them as one line, exit 2."""


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
