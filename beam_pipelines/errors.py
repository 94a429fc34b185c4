"""The launcher's two kinds of failure, each with its exit status."""

from __future__ import annotations

__all__ = ["RunError", "UsageError"]


class UsageError(ValueError):
    """Bad flags: exit status 2."""


class RunError(RuntimeError):
    """The run could not complete: exit status 1."""
