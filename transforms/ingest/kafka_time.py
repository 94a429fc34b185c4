"""Event time and lateness of Kafka messages: pure, vectorised functions used by ``ReadKafka``.

Times are int64 epoch microseconds (UTC) in numpy arrays; :data:`NO_TIME` marks a message
whose event time cannot be read, and a partition that has no watermark yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa

from transforms.ingest import flatjson
from transforms.ingest.slots import KIND_FLOAT, KIND_INT, KIND_NULL, KIND_OTHER, KIND_STR, Slots
from transforms.ingest.validate import TimestampField

__all__ = [
    "NO_TIME",
    "batch_timestamp_us",
    "event_times_us",
    "late_mask",
    "watermarks_before",
    "window_end_us",
]

NO_TIME = np.iinfo(np.int64).min
_KINDS = {type(None): KIND_NULL, str: KIND_STR, int: KIND_INT, float: KIND_FLOAT}


def _field_value(value: bytes | None, field: str):
    """The JSON field of one message, or None when the message is not a JSON object."""
    if not value:
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return record.get(field) if type(record) is dict else None


def event_times_us(values: Sequence[bytes | None] | pa.Array, field: str = "ts") -> np.ndarray:
    """Event time of each message, read exactly as the pipeline's ``TimestampField`` reads it.

    ISO-8601 with an offset or ``Z`` (none means UTC), epoch seconds (int or float), epoch
    milliseconds (integers >= 10**11), within [2000-01-01, 2100-01-01). Anything else (not
    JSON, not an object, field absent or null, out of range) is :data:`NO_TIME`.

    Args:
        values: Message values (JSON object text), as bytes or a binary array; None (null) for
            a null value.
        field: The field holding the event time.
    """
    raw = values if isinstance(values, pa.Array) else None
    if raw is None and values and None not in values:
        raw = pa.array(values, pa.binary())
    scanned = flatjson.field_slots(raw, field) if raw is not None and len(raw) and not raw.null_count else None
    order = None
    if scanned is None:
        slots = _parsed_slots(values.to_pylist() if isinstance(values, pa.Array) else values, field)
    else:
        slots, taken = scanned
        if len(taken) < len(raw):  # lines the scanner leaves (escapes, nesting, not JSON ...): parsed
            left = np.ones(len(raw), dtype=bool)
            left[taken] = False
            rest = np.flatnonzero(left)
            parsed = _parsed_slots(raw.take(pa.array(rest)).to_pylist(), field)
            slots = [pa.concat_arrays([a, b.cast(a.type)]) for a, b in zip(slots, parsed)]
            order = np.argsort(np.concatenate([taken, rest]), kind="stable")
    names = [f"{field}.k", f"{field}.s", f"{field}.i", f"{field}.f"]
    table = pa.Table.from_arrays(slots, names=names)
    if order is not None:
        table = table.take(pa.array(order))
    micros = TimestampField(field).apply(Slots(table, field), {}).value.cast(pa.int64())
    return micros.fill_null(NO_TIME).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _parsed_slots(values: Sequence[bytes | None], field: str) -> list[pa.Array]:
    """The field's slots of each message, parsed one by one."""
    found = [_field_value(v, field) for v in values]
    n = len(found)
    kinds = np.fromiter((_KINDS.get(type(v), KIND_OTHER) for v in found), dtype=np.int8, count=n)
    strs = pa.array([v if type(v) is str else None for v in found], pa.string())
    ints = pa.array([v if type(v) is int and -(2**63) <= v < 2**63 else None for v in found], pa.int64())
    floats = pa.array([v if type(v) is float else None for v in found], pa.float64())
    return [pa.array(kinds), strs, ints, floats]


def window_end_us(event_times_us: np.ndarray, window_seconds: int) -> np.ndarray:
    """End (exclusive) of each time's fixed window, aligned to the epoch like ``FixedWindows``."""
    size = np.int64(window_seconds) * 1_000_000
    return (event_times_us // size) * size + size


def watermarks_before(event_times_us: np.ndarray, start_us: int) -> tuple[np.ndarray, int]:
    """The partition watermark before each message, and after the last one.

    The watermark is the largest event time read so far (messages in offset order), starting
    from ``start_us``; a message without event time does not move it.

    Args:
        event_times_us: Event times in offset order (:data:`NO_TIME` for unreadable ones).
        start_us: The watermark before the first message (:data:`NO_TIME` for none yet).
    """
    if len(event_times_us) == 0:
        return np.zeros(0, np.int64), int(start_us)
    running = np.maximum.accumulate(np.maximum(event_times_us, np.int64(start_us)))
    before = np.concatenate([[np.int64(start_us)], running[:-1]]).astype(np.int64)
    return before, int(running[-1])


def late_mask(
    event_times_us: np.ndarray, watermark_before_us: np.ndarray, window_seconds: int, lateness_seconds: int
) -> np.ndarray:
    """Which messages are late: ``window_end(ts) + allowed_lateness <= watermark before them``.

    A message without event time, or judged before any watermark, is never late.

    Args:
        event_times_us: Event times (:data:`NO_TIME` for unreadable ones).
        watermark_before_us: The partition watermark before each message (:data:`NO_TIME` for none).
        window_seconds: Fixed event-time window size.
        lateness_seconds: Allowed lateness after a window's end.
    """
    readable = (event_times_us != NO_TIME) & (watermark_before_us != NO_TIME)
    safe = np.where(readable, event_times_us, 0)
    closes = window_end_us(safe, window_seconds) + np.int64(lateness_seconds) * 1_000_000
    return readable & (closes <= watermark_before_us)


def batch_timestamp_us(watermark_start_us: int, event_times_us: np.ndarray, late: np.ndarray) -> int:
    """The timestamp of an emitted batch: min(watermark at batch start, min on-time event time).

    It is never later than any on-time record of the batch, so while the batch is in flight
    no downstream watermark can pass the end of any of its records' windows. With no
    watermark yet, the on-time event times alone decide; with neither, :data:`NO_TIME`.

    Args:
        watermark_start_us: The partition watermark before the batch's first message.
        event_times_us: The batch's event times (:data:`NO_TIME` for unreadable ones).
        late: The batch's late mask (see :func:`late_mask`).
    """
    on_time = event_times_us[(~late) & (event_times_us != NO_TIME)]
    candidates = [int(on_time.min())] if len(on_time) else []
    if watermark_start_us != NO_TIME:
        candidates.append(int(watermark_start_us))
    return min(candidates) if candidates else int(NO_TIME)
