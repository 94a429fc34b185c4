"""RepeatFilter: one log line per kind of client complaint per interval, not one per retry.

librdkafka logs every failed connection attempt of every consumer: a broker down for a minute
gives hundreds of identical lines per worker, which bury the rest of the log and, on a worker
whose stderr is a pipe nobody drains, block the worker once the pipe is full. The first line
of a kind is passed at once; repeats within ``every_s`` are counted, and the next line of that
kind after the interval says how many were held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

__all__ = ["RepeatFilter", "quiet_repeats"]

# Client names, ports, addresses and timings vary between repeats of one complaint.
_VARYING = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Passes the first record of a kind, then at most one per ``every_s`` seconds, counting the rest.

    Args:
        every_s: The interval in seconds within which repeats of a kind are held back.
        clock: Monotonic seconds (injected by tests).
    """

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s!r}")
        self._every = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[int, str], list] = {}  # kind -> [time passed, repeats held back]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = (record.levelno, _VARYING.sub("#", text))
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self._every:
                seen[1] += 1
                return False
            held = seen[1] if seen is not None else 0
            self._kinds[kind] = [now, 0]
            if len(self._kinds) > 1000:  # kinds are few; a flood of distinct ones is not kept
                self._kinds = {kind: self._kinds[kind]}
        if held:
            record.msg, record.args = f"{text} (and {held} like it since the last one shown)", ()
        return True


def quiet_repeats(logger: logging.Logger, every_s: float = 30.0) -> logging.Logger:
    """Adds one :class:`RepeatFilter` to ``logger`` (once, however often it is called)."""
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter(every_s))
    return logger
