"""User-facing errors.

Every expected failure (bad params, missing dataset, corrupt file, ...) raises :class:`QsennError`
with a one-line message that names the file or the parameter at fault. Stage scripts catch it,
print the line to stderr and exit non-zero, without a traceback.
"""

from __future__ import annotations


class QsennError(Exception):
    """An expected, user-facing error; its message is a single line."""


class ParamsError(QsennError):
    """A value in params.yaml is missing, of the wrong type or out of range."""


class DataError(QsennError):
    """A dataset, image or index file is missing or malformed."""
