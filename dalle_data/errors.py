"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class DalleDataError(Exception):
    """Base class for errors caused by input, environment or configuration.

    The message is written for the person at the terminal: it says what went
    wrong and what to do about it, in one line.
    """

    exit_code = 2


class SpecError(DalleDataError):
    """The run spec (flags, config file or prompts file) is invalid."""


class ModelLoadError(DalleDataError):
    """A generator or scorer model could not be loaded."""


class OutputDirError(DalleDataError):
    """The output directory cannot be used for this run."""


class PluginError(DalleDataError):
    """An installed backend plug-in (entry point group ``dalle_data.backends``) is broken or clashes with
    another; the message names its distribution."""

    def __init__(self, message: str, distribution: str = "") -> None:
        super().__init__(message)
        self.distribution = distribution
