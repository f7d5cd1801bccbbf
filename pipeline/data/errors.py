"""The one error type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """A data set that cannot be built or read as asked: the message names the file, field or value at
    fault and says what to do. The CLI prints it as one line and exits with status 2."""
