"""Wall-clock times of a streaming job's stages, for the streaming benchmark's per-stage breakdown.

Off unless the environment names a file: ``BP_STAGE_TIMES=/path/times.jsonl``. Then each stage
that calls :func:`record` appends one JSON line ``{"stage": ..., "at": <epoch seconds>, ...}``
(the Kafka source once per emitted table, the PostgreSQL sink once per committed firing), and a
harness lines them up with its own produce and arrival times. Off, :func:`record` costs one
dictionary lookup.
"""

from __future__ import annotations

import json
import os
import threading
import time

__all__ = ["ENV", "record"]

ENV = "BP_STAGE_TIMES"
_lock = threading.Lock()


def record(stage: str, **fields) -> None:
    """Appends ``stage``'s line with the current time, when ``BP_STAGE_TIMES`` is set."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"stage": stage, "at": time.time(), **fields}) + "\n"
    with _lock, open(path, "a") as fh:  # one short append per table or firing: never interleaved
        fh.write(line)
