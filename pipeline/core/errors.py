"""One error hierarchy: every error a user can cause is one line and carries its exit code.

- :class:`ConfigError` (exit 2): a bad argument or configuration; names the key and the file.
- :class:`StageError` (exit 1): a stage could not finish; names the file and the record.
- :class:`InputError` (exit 1): an input file stops the stage (a subclass of StageError).
- :class:`TaskError` (exit 1): a Ray task raised or its worker died; names the task's input.

The CLI turns any :class:`SiftmixError` into ``error: <message>`` and ``exit_code``.
"""

from __future__ import annotations


class SiftmixError(Exception):
    """Base: a message that is one line for the user, and the exit code of the command."""

    exit_code = 1


class ConfigError(SiftmixError, ValueError):
    """A configuration or usage problem, already formatted as one line naming key and file."""

    exit_code = 2


class StageError(SiftmixError, RuntimeError):
    """A stage could not finish; the message is one line for the user."""


class InputError(StageError):
    """A problem with an input file that stops the stage: one line naming file and record."""


class TaskError(StageError):
    """A Ray task raised: the message is one line naming the task's input and the cause;
    ``cause`` is the exception the task raised."""

    def __init__(self, msg: str, cause: BaseException | None = None):
        super().__init__(msg)
        self.cause = cause
