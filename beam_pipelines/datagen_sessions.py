"""Sample ``sessions`` records: a clickstream for session windows, clean and dirty, in every format.

    python -m beam_pipelines.datagen --dataset sessions --rows 100000 --format jsonl --out data/sessions

Users act in bursts (contract ``pipelines/schemas/sessions/v1.yaml``): a session is 1 to 12
events 1 second to 10 minutes apart, and a user's sessions are more than 30 minutes apart
(at least 31 minutes from one's last event to the next one's first), so a 30-minute session
gap finds them exactly. A session starts with a view; about a quarter of the sessions of four
events or more convert (add_to_cart, checkout, purchase at the end, the purchase with an
amount) and a few others end at checkout. A user uses one device for most sessions. Each file
has its own users; rows are in ``ts`` order.

Dirty rows (``dirty_fraction`` of all): a missing ``user_id``, an unknown action, a ``ts``
before 2000, duplicates of an earlier clean event (the same record, or the same ``event_id``
sent again a few seconds later) and, in text formats only, malformed lines and unparseable
timestamps.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.datagen import (
    BASE_TS_US,
    BEFORE_2000,
    Sample,
    TextFormat,
    _field,
    _set,
    _strings,
    clean_sources,
    column_micros,
    csv_set,
    json_set,
    pick_dirty,
    replace_rows,
    running_sum,
    split_sizes,
    take_rows,
    take_strings,
    timestamp_text,
    write_sample,
)
from transforms.records import json_quote

ACTIONS = ("view", "click", "add_to_cart", "checkout", "purchase")
BROWSE_WEIGHTS = [0.6, 0.3, 0.1]  # view, click, add_to_cart: what a non-final event does
DEVICE_TEXT = (
    "web",
    "web",
    "Web",
    "ios",
    "iOS",
    "IOS",
    "android",
    "Android",
    "android",
)  # web, ios, android: 3 spellings each
MAX_EVENTS = 12
EVENT_GAP_MS = (1_000, 10 * 60_000)  # inside a session
SESSION_GAP_MS = 31 * 60_000  # the least time between two sessions of a user
MAX_SESSIONS_PER_USER = 8
TYPED_DIRTY = ("missing_user_id", "bad_action", "ts_out_of_range", "duplicate", "duplicate_later")
TEXT_DIRTY = ("malformed", "bad_ts")
JSON_ZONES, JSON_ZONE_WEIGHTS = ("Z", "+02:00", "-05:00", "ms"), [0.6, 0.1, 0.1, 0.2]
CSV_ZONES, CSV_ZONE_WEIGHTS = ("Z", "+02:00", "-05:00"), [0.7, 0.15, 0.15]
BAD_TS = (b'"yesterday"', b'"2024-13-45T25:61:00Z"', b'"03/01/2024 10:00"')
_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("ts", _TS),
        ("page", pa.string()),
        ("action", pa.string()),
        ("amount", pa.float64()),
        ("device", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


def generate(rows: int, start: int, seed: int, dirty_fraction: float, days: int = 7) -> Sample:
    """``rows`` click events for the file whose rows are numbered from ``start``; ``group`` is
    each row's session number.

    Args:
        rows: Records in the file (duplicates and dirty rows included).
        start: Number of records in the earlier files (events and users are numbered from it).
        seed: Random seed.
        dirty_fraction: Fraction of records made dirty (0..1).
        days: Days the events span (>= 1).
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    rng = np.random.default_rng([seed, start])
    session, step, length = split_sizes(rows, np.minimum(rng.geometric(0.2, max(rows, 1)), MAX_EVENTS))
    n_sessions = len(length)
    user, _, per_user = split_sizes(n_sessions, rng.integers(1, MAX_SESSIONS_PER_USER + 1, max(n_sessions, 1)))
    offset = running_sum(np.where(step > 0, rng.integers(*EVENT_GAP_MS, rows), 0), length)
    duration = offset[np.cumsum(length) - 1] if rows else np.zeros(0, np.int64)
    ts_ms = _session_starts(rng, user, per_user, duration, days * 86_400_000)[session] + offset
    order = np.lexsort((step, session, ts_ms))
    session, step, ts_ms = session[order], step[order], ts_ms[order]

    left = length[session] - 1 - step  # events after this one in its session
    converts = ((length >= 4) & (rng.random(n_sessions) < 0.25))[session]
    abandons = ((length >= 2) & (rng.random(n_sessions) < 0.08))[session] & ~converts
    action = rng.choice(3, size=rows, p=BROWSE_WEIGHTS)  # view, click or add_to_cart
    action = np.where(converts & (left == 2), ACTIONS.index("add_to_cart"), action)
    action = np.where(converts & (left == 1), ACTIONS.index("checkout"), action)
    action = np.where(converts & (left == 0), ACTIONS.index("purchase"), action)
    action = np.where(abandons & (left == 0), ACTIONS.index("checkout"), action)
    action = np.where(step == 0, ACTIONS.index("view"), action)
    device = np.where(rng.random(n_sessions) < 0.85, (user * 7 + 1) % 3, rng.integers(0, 3, n_sessions))
    spelling = rng.integers(0, 3, rows)
    cents = np.round(np.exp(rng.normal(4.0, 0.8, rows)) * 100)
    table = pa.table(
        {
            "event_id": _strings("e-", start + np.arange(rows), 10),
            "user_id": _strings("u-", start + user[session], 7),
            "ts": pa.array(BASE_TS_US + ts_ms * 1000, pa.int64()).cast(_TS),
            "page": _pages(rng, action, step),
            "action": take_strings(ACTIONS, action),
            "amount": pa.array(cents / 100, mask=action != ACTIONS.index("purchase")),
            "device": take_strings(DEVICE_TEXT, device[session] * 3 + spelling),
        }
    ).cast(SCHEMA)

    dirty = pick_dirty(rng, rows, TYPED_DIRTY + TEXT_DIRTY, dirty_fraction)
    sources = {kind: clean_sources(rng, dirty[kind], dirty, rows) for kind in ("duplicate", "duplicate_later")}
    table = _set(table, "user_id", dirty["missing_user_id"], None)
    table = _set(table, "action", dirty["bad_action"], "buy_now!")
    table = _set(table, "ts", dirty["ts_out_of_range"], BEFORE_2000)
    group = start + session
    for kind in ("duplicate", "duplicate_later"):
        table = take_rows(table, dirty[kind], sources[kind])
        group[dirty[kind]] = group[sources[kind]]
    # The same event sent again a few seconds later.
    later = dirty["duplicate_later"]
    resent = column_micros(table, "ts")[later] + rng.integers(1_000, 5_000, len(later)) * 1000
    ts = replace_rows(table.column("ts").combine_chunks(), later, pa.array(resent, pa.int64()).cast(_TS))
    return Sample(table.set_column(table.schema.get_field_index("ts"), "ts", ts), dirty, sources, group)


def _session_starts(rng, user: np.ndarray, per_user: np.ndarray, duration: np.ndarray, span_ms: int) -> np.ndarray:
    """Start of each session (ms from the base): a user's sessions in order, at least
    ``SESSION_GAP_MS`` from the end of one to the start of the next, all within ``span_ms``."""
    busy = np.bincount(user, weights=duration, minlength=len(per_user)).astype(np.int64)
    free = span_ms - busy - (per_user - 1) * SESSION_GAP_MS
    if (free < 0).any():
        raise ValueError(f"{MAX_SESSIONS_PER_USER} sessions of a user do not fit in {span_ms // 86_400_000} day(s)")
    spread = rng.random(len(user))
    spread = spread[np.lexsort((spread, user))]  # sorted within each user (a user's sessions are consecutive)
    taken = duration + SESSION_GAP_MS
    return (spread * free[user]).astype(np.int64) + running_sum(taken, per_user) - taken


def _pages(rng, action: np.ndarray, step: np.ndarray) -> pa.Array:
    product = _strings("/product/", rng.integers(1, 5000, len(action)), 1)
    category = _strings("/category/", rng.integers(1, 40, len(action)), 1)
    search = _strings("/search?q=item", rng.integers(1, 300, len(action)), 1)
    browse = rng.random(len(action))
    view = pc.if_else(pa.array(browse < 0.6), product, search)
    view = pc.if_else(pa.array((step == 0) & (browse < 0.3)), pa.scalar("/"), view)
    page = pc.if_else(pa.array(action == 1), pc.if_else(pa.array(browse < 0.7), product, category), view)
    page = pc.if_else(pa.array(action == 2), product, page)
    page = pc.if_else(pa.array(action == 3), pa.scalar("/checkout"), page)
    return pc.if_else(pa.array(action == 4), pa.scalar("/checkout/complete"), page)


def render_jsonl(table: pa.Table, rng) -> pa.Array:
    """One JSON object per row, keys in contract order, nulls left out; ts ISO-8601 (Z or an
    offset) or epoch milliseconds; amount a number."""
    parts = []
    for name in COLUMNS:
        col = table.column(name).combine_chunks()
        if name == "ts":
            text, is_number = timestamp_text(rng, column_micros(table, name), JSON_ZONES, JSON_ZONE_WEIGHTS)
            frag = pc.if_else(pa.array(is_number), text, json_quote(text))
        elif name == "amount":
            frag = col.cast(pa.string())
        else:
            frag = json_quote(col)
        parts.append(_field(name, frag))
    body = pc.binary_join_element_wise(*parts, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "}", "")


def render_csv(table: pa.Table, rng) -> pa.Array:
    """One CSV line per row, columns in contract order, null as empty; ts ISO-8601."""
    cols = []
    for name in COLUMNS:
        col = table.column(name).combine_chunks()
        if name == "ts":
            col, _ = timestamp_text(rng, column_micros(table, name), CSV_ZONES, CSV_ZONE_WEIGHTS)
        cols.append(pc.fill_null(col.cast(pa.string()), ""))
    return pc.binary_join_element_wise(*cols, ",")


def write_file(fmt: str, sample: Sample, rng, path: str) -> None:
    """Writes one file of ``sample`` in ``fmt`` (jsonl, csv, avro or parquet)."""
    text = {
        "jsonl": TextFormat(render_jsonl, {"bad_ts": json_set("ts", *BAD_TS)}),
        "csv": TextFormat(
            render_csv,
            {"bad_ts": csv_set(COLUMNS.index("ts"), *(t.strip(b'"') for t in BAD_TS))},
            ",".join(COLUMNS).encode(),
        ),
    }
    write_sample(fmt, sample, rng, path, "Click", text)
