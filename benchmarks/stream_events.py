"""The streaming benchmark's events and the aggregates every system must end with.

Events follow the ``events`` contract: ISO timestamps, known event types, amounts on paid
events. A small share are exact repeats of an earlier event (counted once) and a smaller share
are lines that are not events at all (dropped, or dead-lettered by this project); so every
system does the same parsing, checking and dedup work.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import orjson

TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "purchase", "refund")
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA")
REPEAT_SHARE = 0.02
BAD_SHARE = 0.005


def event(rng: random.Random, n: int, ts_us: int, prefix: str = "ev") -> bytes:
    event_type = rng.choice(TYPES)
    record = {
        "event_id": f"{prefix}-{n:010d}",
        "user_id": f"u{rng.randrange(5000):05d}",
        "event_type": event_type,
        "ts": datetime.fromtimestamp(ts_us / 1e6, timezone.utc).isoformat().replace("+00:00", "Z"),
        "country": rng.choice(COUNTRIES),
        "currency": "USD",
    }
    if event_type in ("purchase", "refund"):
        record["amount"] = rng.randrange(100, 50_000) / 100
    return orjson.dumps(record)


def backlog(n: int, start_us: int, span_s: float, seed: int = 21) -> list[bytes]:
    """``n`` messages in event-time order over ``span_s`` seconds from ``start_us``: events, repeats
    of recent events and a few lines that are not events."""
    rng = random.Random(seed)
    out: list[bytes] = []
    step = span_s * 1e6 / max(n, 1)
    for i in range(n):
        roll = rng.random()
        if roll < BAD_SHARE:
            out.append(b'{"event_id": "broken' if rng.random() < 0.5 else b"not json at all")
        elif roll < BAD_SHARE + REPEAT_SHARE and out:
            out.append(out[rng.randrange(max(0, len(out) - 50), len(out))])
        else:
            out.append(event(rng, i, int(start_us + i * step)))
    return out


def expected_rows(messages: list[bytes], window_s: int = 3600) -> list[tuple]:
    """(window_start, event_type, country, events, users, amount_sum) per window and group, as
    every system must leave them in PostgreSQL."""
    seen: set[str] = set()
    events: dict[tuple, int] = defaultdict(int)
    users: dict[tuple, set] = defaultdict(set)
    cents: dict[tuple, int] = defaultdict(int)
    for m in messages:
        try:
            r = orjson.loads(m)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(r, dict) or r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        seconds = datetime.fromisoformat(r["ts"]).timestamp()
        start = datetime.fromtimestamp(int(seconds // window_s * window_s), timezone.utc)
        key = (start, r["event_type"], r["country"])
        events[key] += 1
        users[key].add(r["user_id"])
        cents[key] += round(r.get("amount", 0) * 100)
    return sorted((*k, events[k], len(users[k]), Decimal(cents[k]).scaleb(-2)) for k in events)
