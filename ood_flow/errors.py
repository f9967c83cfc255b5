"""Errors that reach the user as one line.

The core raises these (it never prints or exits); the CLI turns them into
``error: <message>`` on stderr and the error's ``exit_code``: 1 for a runtime
error, 2 for a usage error, 3 for a quality gate that was not met.
"""

from __future__ import annotations

from typing import Any


class OodflowError(Exception):
    """A failure the user can act on; the message is one line, naming the file or value at fault."""

    exit_code = 1

    def cli_message(self) -> str:
        """The message as the command line says it (where it names options, by their flags)."""
        return str(self)

    def relayed(self) -> tuple[str, tuple, dict]:
        """This error as another process of a distributed job rebuilds it: its class name and the arguments that
        make it again (plain data, so it travels between processes)."""
        return type(self).__name__, (str(self),), {}


class InputError(OodflowError):
    """Bad input data: unreadable, corrupt, wrong shape, NaN, unknown dataset."""


class ModelFileError(OodflowError):
    """A model file that is truncated, foreign, or of a newer format."""


class ScoreFileError(OodflowError):
    """A score file that is not ours, or a missing or duplicate group."""


class GateFailed(OodflowError):
    """A quality gate the user asked for was not met (exit 3).

    Attributes:
        result: what the call computed (and saved) before the gate failed, e.g. a
            :class:`~ood_flow.score.run.ScoreResult`, so a caller can still report it.
    """

    exit_code = 3

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


class UsageError(OodflowError, ValueError):
    """An option or argument out of its range, non-finite, or in a combination that makes no sense (exit 2)."""

    exit_code = 2


class NoBfloat16(UsageError):
    """``--precision bf16`` on a device that cannot run bfloat16 (exit 2): the one error of ``train``, ``score``,
    ``calibrate`` and ``embed`` for it (:func:`ood_flow.runtime.resolve`)."""

    @classmethod
    def on(cls, device_type: str) -> NoBfloat16:
        """The error for a device of type ``device_type`` (``cpu``, ``cuda``)."""
        where = "this GPU" if device_type == "cuda" else "this CPU (oneDNN has no bfloat16 kernels for it)"
        return cls(f"--precision bf16: {where} cannot run bfloat16; use --precision fp32, or auto (bf16 only where "
                   "it pays)")


class OutputError(OodflowError):
    """An output file that may not or cannot be written: it exists, is of another kind, or its folder is not
    writable."""


class AlreadyExists(OutputError, FileExistsError):
    """An output (a file, or a group of a score file) that exists and would be replaced. The message names the
    argument that allows it as Python spells it (``overwrite=True``, and ``resume=True`` where training can
    continue it); the command line's says ``--overwrite`` and ``--resume``.

    Attributes:
        what: the output, e.g. ``m.pt`` or ``scores.h5: group 'mnist-test'``.
        resume: training could continue it instead.
    """

    def __init__(self, what: str, *, resume: bool = False):
        self.what, self.resume = what, resume
        super().__init__(self._text("{}=True"))

    def __str__(self) -> str:
        return self._text("{}=True")

    def cli_message(self) -> str:
        return self._text("--{}")

    def relayed(self) -> tuple[str, tuple, dict]:
        return type(self).__name__, (self.what,), {"resume": self.resume}

    def _text(self, spelling: str) -> str:
        overwrite, resume = spelling.format("overwrite"), spelling.format("resume")
        if self.resume:
            return f"{self.what} exists; pass {resume} to continue training it or {overwrite} to replace it"
        return f"{self.what} exists; pass {overwrite} to replace it"
