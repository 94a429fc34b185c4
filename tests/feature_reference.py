"""Features as of every event, computed the slow and obvious way in plain Python, one event at a
time, straight from the definitions in ``transforms.feature_defs``: what the vectorised kernels,
the Beam composite and the spec pipeline are checked against."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from transforms.feature_defs import FeatureSet, SessionFeature, Trailing


def micros(ts: datetime) -> int:
    delta = ts - datetime.fromtimestamp(0, ts.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _sum(values: list, decimals: int | None):
    present = [v for v in values if v is not None]
    if decimals is not None:
        return sum(round(v * 10**decimals) for v in present) / 10**decimals
    if present and isinstance(present[0], Decimal):
        return sum(present, Decimal(0)).quantize(present[0])
    return int(sum(int(v) for v in present))


def reference(rows: list[dict], fs: FeatureSet, conditions: dict[str, Callable[[dict], bool]]) -> list[dict]:
    """One dict per row with an entity and a time: the entity, the time, the kept columns and
    each feature. ``conditions`` maps each ``where`` text to the same test in Python."""
    by_entity = defaultdict(list)
    for r in rows:
        if r[fs.entity] is not None and r[fs.time] is not None:
            by_entity[r[fs.entity]].append(r)
    out = []
    for r in rows:
        e, t = r[fs.entity], r[fs.time]
        if e is None or t is None:
            continue
        now = micros(t)
        seen = [x for x in by_entity[e] if micros(x[fs.time]) <= now]
        row = {fs.entity: e, fs.time: t, **{c: r[c] for c in fs.keep}}
        for f in fs.features:
            if isinstance(f, Trailing):
                start = now - f.range_seconds * 1_000_000
                inside = [x for x in seen if micros(x[fs.time]) > start]
                if f.where:
                    inside = [x for x in inside if conditions[f.where](x)]
                if f.fn == "count":
                    row[f.name] = len(inside)
                elif f.fn == "sum":
                    row[f.name] = _sum([x[f.column] for x in inside], f.decimals)
                elif f.fn == "count_distinct":
                    row[f.name] = len({x[f.column] for x in inside if x[f.column] is not None})
                else:
                    valued = [x for x in inside if x[f.column] is not None]
                    if not valued:
                        row[f.name] = None
                    else:
                        latest = max(micros(x[fs.time]) for x in valued)
                        row[f.name] = max(x[f.column] for x in valued if micros(x[fs.time]) == latest)
            elif isinstance(f, SessionFeature):
                times = sorted(micros(x[fs.time]) for x in seen)
                gap = f.gap_seconds * 1_000_000
                first = len(times) - 1
                while first > 0 and times[first] - times[first - 1] < gap:
                    first -= 1
                session = [x for x in seen if micros(x[fs.time]) >= times[first]]
                if f.fn == "session_length":
                    row[f.name] = (now - times[first]) / 1_000_000
                elif f.fn == "session_events":
                    row[f.name] = len(session)
                else:
                    row[f.name] = any(conditions[f.where](x) for x in session)
            else:
                num, den = row[f.numerator], row[f.denominator]
                row[f.name] = None if num is None or den is None or den == 0 else float(num) / float(den)
        out.append(row)
    return out


def condition(column: str, value) -> Callable[[dict], bool]:
    """``column == value`` in Python, null false (as a ``where`` is)."""
    return lambda x: x[column] is not None and x[column] == value
