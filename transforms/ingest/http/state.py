"""The durable state of an incremental API read: the highest ``updated`` value seen.

A run reads from the state published with the previous run's outputs
(``<output>/_state/<step>.json``) and writes its own into its staging directory, so the new
state is published with the outputs it describes, and a failed run leaves the old one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from apache_beam.io.filesystems import FileSystems

from transforms.sinks.files import join_path

__all__ = ["STATE_DIR", "latest", "order_key", "read_state", "state_path", "write_state"]

STATE_DIR = "_state"


def state_path(root: str, step: str) -> str:
    return join_path(root, STATE_DIR, f"{step}.json")


def read_state(path: str) -> dict | None:
    """The state at ``path``, or None when there is none yet (ValueError if unreadable)."""
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as fh:
            state = json.loads(fh.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the state file {path}: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"cannot read the state file {path}: not a JSON object")
    return state


def write_state(path: str, state: dict) -> None:
    with FileSystems.create(path, mime_type="application/json") as fh:
        fh.write(json.dumps(state, indent=2, sort_keys=True).encode() + b"\n")


def order_key(value) -> tuple | None:
    """How ``updated`` values compare: numbers by value, ISO-8601 times as instants (a time
    without an offset is UTC), other text as text; None for a value that is none of these."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return (0, value)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return (2, value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (1, when)


def latest(a, b):
    """The later of two ``updated`` values (either may be None or unusable)."""
    ka, kb = order_key(a), order_key(b)
    if kb is None:
        return a if ka is not None else None
    if ka is None or (ka[0] == kb[0] and kb > ka) or (ka[0] != kb[0] and kb[0] < ka[0]):
        return b
    return a
