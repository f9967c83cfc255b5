"""Errors that reach the user as one line.

The core raises these (it never prints or exits); the CLI turns them into
``error: <message>`` on stderr and an exit code.
"""


class OodflowError(Exception):
    """A failure the user can act on; the message is one line, naming the file or value at fault."""

    exit_code = 1


class InputError(OodflowError):
    """Bad input data: unreadable, corrupt, wrong shape, NaN, unknown dataset."""


class ModelFileError(OodflowError):
    """A model file that is truncated, foreign, or of a newer format."""


class ScoreFileError(OodflowError):
    """A score file that is not ours, or a missing or duplicate group."""


class GateFailed(OodflowError):
    """A quality gate the user asked for was not met (exit 3)."""

    exit_code = 3


class UsageError(OodflowError, ValueError):
    """An option or argument out of its range, non-finite, or in a combination that makes no sense (exit 2)."""

    exit_code = 2


class OutputError(OodflowError):
    """An output file that may not or cannot be written: it exists, is of another kind, or its folder is not writable."""
