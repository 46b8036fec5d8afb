"""Errors that mimetic shows to a writer: one line of what went wrong, one of what to do."""

from __future__ import annotations


class MimeticError(Exception):
    """A problem the user can fix. ``message`` says what happened, ``hint`` what to do next.

    The CLI prints both without a traceback and exits with status 1.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class TrainingInterrupted(MimeticError):
    """Training stopped early (Ctrl-C); a checkpoint was saved and the run can resume."""
