"""The events contract's checks as the Python peers apply them: one parsed JSON value in, the
fields the aggregates need out, or None for a record the contract rejects. No dependencies, so
every peer's interpreter (the project's, or a peer's own virtualenv) imports it."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "refund"})
PAID = frozenset({"purchase", "refund"})


class Event(NamedTuple):
    event_id: str
    event_type: str
    country: str
    user_id: str
    cents: int
    seconds: float  # event time, seconds since the epoch


def check(record) -> Event | None:
    if not isinstance(record, dict):
        return None
    event_type, user, event_id, ts = (record.get(k) for k in ("event_type", "user_id", "event_id", "ts"))
    if event_type not in TYPES or not isinstance(user, str) or not isinstance(event_id, str) or not isinstance(ts, str):
        return None
    amount = record.get("amount")
    if amount is None:
        if event_type in PAID:
            return None
        cents = 0
    elif isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount >= 0:
        cents = round(amount * 100)
    else:
        return None
    try:
        seconds = datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None
    return Event(event_id, event_type, record.get("country") or "", user, cents, seconds)
