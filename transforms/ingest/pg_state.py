"""The incremental cursor of a PostgreSQL source: one small JSON file per source step.

A run reads the published state (``<output>/_state/<step>.json``) and writes the next one into
its staging directory; publishing moves it into place with the outputs, so the cursor advances
only with a published run, and a failed run leaves it where it was. Writes go to a temporary
name first and are renamed over the target, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import uuid

from apache_beam.io.filesystems import FileSystems

__all__ = ["check_state", "read_state", "write_state"]

VERSION = 1


def _local(path: str) -> str | None:
    if "://" not in path:
        return path
    return path[len("file://") :] if path.startswith("file://") else None


def read_state(path: str) -> dict | None:
    """The state at ``path``, or None when there is none yet (the first run reads everything)."""
    local = _local(path)
    if local is not None:
        if not os.path.exists(local):
            return None
        with open(local, encoding="utf-8") as fh:
            return json.load(fh)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read())


def write_state(path: str, state: dict) -> None:
    """Writes ``state`` to ``path`` whole (a temporary file renamed over it)."""
    data = json.dumps(state, indent=2, sort_keys=True).encode() + b"\n"
    local = _local(path)
    if local is not None:
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, local)
        return
    # Object stores make a created object visible only once it is complete.
    with FileSystems.create(path, mime_type="application/json") as fh:
        fh.write(data)


def check_state(state: dict | None, identity: dict) -> dict | None:
    """``state`` if it belongs to this source (same table, key and cursor), else ValueError: a
    cursor of another table would skip or repeat rows."""
    if state is None:
        return None
    if state.get("version") != VERSION:
        raise ValueError(f"state version {state.get('version')!r} is not {VERSION}")
    theirs = {k: state.get(k) for k in identity}
    if theirs != identity:
        raise ValueError(
            f"the saved cursor belongs to {theirs}, not {identity}: remove the state file to read from the start"
        )
    return state
