"""Errors of the SWE-bench scenario (one line each; the CLI prints them without a traceback)."""
from loopcoder.runtime.errors import RuntimeFailure


class SwebenchError(RuntimeFailure):
    """Base of every SWE-bench scenario error."""


class DatasetError(SwebenchError):
    """A dataset, instance or predictions file is missing, unreadable or malformed."""


class ImageUnavailableError(SwebenchError):
    """An instance's environment image could not be built or pulled."""
