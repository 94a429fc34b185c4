"""The launcher's two kinds of failure, each with its exit status."""

from __future__ import annotations

__all__ = ["RunError", "UsageError"]


class UsageError(ValueError):
    """Bad flags: exit status 2."""


class RunError(RuntimeError):
    """The run could not complete: exit status 1."""


def parse_flags(parser, argv: list[str], unknown=None):
    """``parser``'s namespace for ``argv`` (built with ``exit_on_error=False``); a bad or unknown
    flag is a UsageError (exit status 2), not argparse's exit. ``unknown`` words the message for
    the flags left over (default: all of them listed)."""
    import argparse

    try:
        ns, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from e
    if rest:
        raise UsageError(unknown(rest) if unknown else f"unknown flags: {' '.join(rest)}")
    return ns
