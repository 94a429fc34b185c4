"""When a streamed event's features are final, and which of an entity's events a stream keeps.

Pure numpy/Arrow functions for ``transforms.entity_features_stream``; times are int64 epoch
microseconds.

**Final.** A streaming source judges an event late when its window's end plus the allowed
lateness is at or before the watermark (``ReadKafka``: ``window_end(ts) + lateness <= W``).
So once the watermark has reached ``X``, every event still to come has a time at or after
``closed_before(X)``; the features of an event earlier than that can no longer change (nothing
at or before its time will come), and the event is final. :func:`closing_us` is the watermark
at which an event becomes final.

**Kept.** Rows still to be computed are at or after that horizon ``H``. Their features read the
entity's events in ``(t - range, t]`` (so those later than ``H - max range``) and the session
they belong to: a session reaching back before ``H`` runs through the entity's last event
before ``H``, and only when that event is less than ``gap`` before ``H``. :func:`retained`
keeps exactly those events; ``feature_kernels.compute`` over them gives the same rows at or
after ``H`` as over the entity's whole history.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.feature_defs import FeatureSet, SessionFeature
from transforms.feature_kernels import as_array, session_starts

__all__ = ["closed_before", "closing_us", "latest_rows", "retained", "times_us"]

_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def times_us(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 epoch microseconds (nanoseconds rounded down)."""
    values = as_array(column)
    raw = values.cast(pa.int64()).to_numpy(zero_copy_only=False)
    unit = values.type.unit
    return raw // 1_000 if unit == "ns" else raw * _TO_US[unit]


def closing_us(t_us: np.ndarray | int, window_us: int, lateness_us: int):
    """The watermark at which an event at ``t_us`` is final: its window's end plus the lateness."""
    return (np.asarray(t_us) // window_us) * window_us + window_us + lateness_us


def closed_before(watermark_us: int, window_us: int, lateness_us: int) -> int:
    """The earliest time an event can still have once the watermark is ``watermark_us``: every
    event before it is final (``closing_us(t) <= watermark_us`` exactly when ``t`` is before it)."""
    return ((watermark_us - lateness_us) // window_us) * window_us


def _codes(entity: pa.Array) -> np.ndarray:
    return pc.dictionary_encode(entity).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def retained(events: pa.Table, fs: FeatureSet, horizon_us: int) -> np.ndarray:
    """Which events (prepared rows, any order) can still change a row at or after ``horizon_us``:
    a mask over the rows."""
    n = events.num_rows
    t = times_us(events.column(fs.time))
    keep = t > horizon_us - fs.max_range_seconds * 1_000_000
    keep |= t >= horizon_us
    gaps = sorted({f.gap_seconds * 1_000_000 for f in fs.features if isinstance(f, SessionFeature)})
    if not gaps or n == 0:
        return keep
    codes = _codes(as_array(events.column(fs.entity)))
    order = np.lexsort((t, codes))
    c, ts = codes[order], t[order]
    before = ts < horizon_us
    # The entity's last event before the horizon: before it, and the next row is another entity's or not before.
    last = before.copy()
    last[:-1] &= ~((c[1:] == c[:-1]) & before[1:])
    rows = np.flatnonzero(last)
    in_run = np.zeros(n, dtype=bool)
    for gap in gaps:
        live = rows[ts[rows] > horizon_us - gap]  # a later event can still join its session
        if len(live) == 0:
            continue
        starts = session_starts(c, ts, gap)[live]
        edges = np.zeros(n + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)
        np.add.at(edges, live + 1, -1)
        in_run |= np.cumsum(edges[:n]) > 0
    keep[order[in_run]] = True
    return keep


def latest_rows(rows: pa.Table, fs: FeatureSet) -> pa.Table:
    """The last row of each entity in ``compute``'s output (sorted by entity, time, kept
    columns): the entity's features as of its latest event (of events at that instant, the one
    with the greatest kept columns; their features are the same)."""
    if rows.num_rows == 0:
        return rows
    codes = _codes(as_array(rows.column(fs.entity)))
    last = np.ones(len(codes), dtype=bool)
    last[:-1] = codes[1:] != codes[:-1]
    return rows.filter(pa.array(last))
