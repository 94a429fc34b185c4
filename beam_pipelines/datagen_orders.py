"""Sample ``orders`` records: orders that change over time, clean and dirty, in every format.

    python -m beam_pipelines.datagen --dataset orders --rows 100000 --format jsonl --out data/orders
    python -m beam_pipelines.datagen --dataset orders --contract-version 2 --rows 100000 --out data/orders

Each record is one version of an order (contract ``pipelines/schemas/orders/v<N>.yaml``); an
order's versions follow one lifecycle (placed, paid, shipped, delivered, returned; or cancelled
after placed or paid) with ``updated_at`` rising by 1 minute to 4 hours a step, and arrive
roughly in ``updated_at`` order (a version can overtake one less than 20 minutes older). All
of an order's versions are in one file. Contract version 2 writes ``promo_code`` where 1 writes
``coupon``, adds ``channel``, types ``quantity`` as long, and numbers its orders from
1,000,000,000 so that v1 and v2 files of the same arguments can be read in one run.

Dirty rows (``dirty_fraction`` of all): a missing ``order_id``, an unknown status, a negative
amount, an ``updated_at`` before 2000, exact duplicates of earlier clean versions (redelivered),
and, in text formats only, malformed lines, non-numeric amounts, a quantity of 2.5 or
99999999999, ``is_gift`` "maybe" and unparseable timestamps.
"""

from __future__ import annotations

from decimal import Decimal

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
    running_sum,
    split_sizes,
    take_rows,
    take_strings,
    timestamp_text,
    write_sample,
)
from transforms.records import json_quote

STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
# An order's versions are a prefix of one lifecycle: the order as seen so far.
LIFECYCLES = (
    ("placed", "paid", "shipped", "delivered"),
    ("placed", "paid", "shipped", "delivered", "returned"),
    ("placed", "cancelled"),
    ("placed", "paid", "cancelled"),
)
LIFECYCLE_WEIGHTS = [0.75, 0.07, 0.1, 0.08]
REGIONS = ("north", "south", "east", "west", "central")
COUPONS = ("SPRING10", "FREESHIP", "WELCOME5", "VIP20", "spring10")
CHANNELS = ("web", "app", "store", "phone")
CHANNEL_WEIGHTS = [0.55, 0.3, 0.1, 0.05]
TYPED_DIRTY = ("missing_order_id", "unknown_status", "negative_amount", "ts_out_of_range", "duplicate")
TEXT_DIRTY = ("malformed", "non_numeric_amount", "fractional_quantity", "huge_quantity", "bad_is_gift", "bad_ts")
V2_ORDER_BASE = 1_000_000_000
STEP_MS = (60_000, 4 * 3600 * 1000)  # time between two versions of an order
ARRIVAL_JITTER_MS = 20 * 60 * 1000
# Timestamp text forms (datagen.timestamp_text): JSON also has epoch milliseconds, CSV only ISO.
JSON_ZONES, JSON_ZONE_WEIGHTS = ("Z", "+02:00", "-05:00", "+05:30", "ms"), [0.55, 0.15, 0.1, 0.05, 0.15]
CSV_ZONES, CSV_ZONE_WEIGHTS = ("Z", "+02:00", "-05:00", "+05:30"), [0.65, 0.15, 0.15, 0.05]
CSV_TRUE, CSV_FALSE = ("true", "1", "yes", "TRUE", "Yes"), ("false", "0", "no", "FALSE", "No")
_TS = pa.timestamp("us", tz="UTC")
JSON_FIXES = {
    "non_numeric_amount": json_set("amount", b'"twelve"', b'"$19.99"', b'"19,99"'),
    "fractional_quantity": json_set("quantity", b"2.5"),
    "huge_quantity": json_set("quantity", b"99999999999"),
    "bad_is_gift": json_set("is_gift", b'"maybe"'),
    "bad_ts": json_set("updated_at", b'"yesterday"', b'"2024-13-45T25:61:00Z"', b'"03/01/2024 10:00"'),
}


def schema(version: int) -> pa.Schema:
    """The typed columns of a contract version, in its field order (as parquet holds them)."""
    fields = [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("region", pa.string()),
        ("status", pa.string()),
        ("amount", pa.decimal128(18, 2)),
        ("quantity", pa.int32() if version == 1 else pa.int64()),
        ("is_gift", pa.bool_()),
        ("coupon" if version == 1 else "promo_code", pa.string()),
        ("created_at", _TS),
        ("updated_at", _TS),
    ]
    return pa.schema(fields + ([("channel", pa.string())] if version == 2 else []))


def generate(rows: int, start: int, seed: int, dirty_fraction: float, days: int = 7, version: int = 1) -> Sample:
    """``rows`` order versions for the file whose rows are numbered from ``start``.

    Args:
        rows: Records in the file (versions, duplicates and dirty rows included).
        start: Number of records in the earlier files (orders are numbered from it).
        seed: Random seed.
        dirty_fraction: Fraction of records made dirty (0..1).
        days: Days the ``updated_at`` values span (>= 1).
        version: Contract version, 1 or 2.
    """
    if version not in (1, 2):
        raise ValueError(f"orders contract version must be 1 or 2, got {version}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    rng = np.random.default_rng([seed, start, version])
    path = rng.choice(len(LIFECYCLES), size=max(rows, 1), p=LIFECYCLE_WEIGHTS)
    seen = rng.integers(1, np.array([len(c) for c in LIFECYCLES])[path] + 1)  # versions so far
    order, step, seen = split_sizes(rows, seen)
    n_orders = len(seen)
    since_created = running_sum(np.where(step > 0, rng.integers(*STEP_MS, rows), 0), seen)
    lifetime = since_created[np.cumsum(seen) - 1] if rows else np.zeros(0, np.int64)
    created_ms = (rng.random(n_orders) * (days * 86_400_000 - lifetime)).astype(np.int64)
    updated_ms = created_ms[order] + since_created
    # Arrival order: by updated_at, a version overtaking one a little older.
    perm = np.lexsort((step, order, updated_ms + rng.integers(0, ARRIVAL_JITTER_MS, rows)))
    order, step, updated_ms = order[perm], step[perm], updated_ms[perm]

    customers = max(1000, rows // 10)
    customer = rng.integers(0, customers, n_orders)
    region_case = rng.choice(3, size=rows, p=[0.6, 0.25, 0.15])
    regions = [r for case in (str.lower, str.capitalize, str.upper) for r in map(case, REGIONS)]
    cents = np.clip(np.round(np.exp(rng.normal(3.6, 0.9, n_orders)) * 100), 99, 10**7).astype(np.int64)
    quantity = np.minimum(rng.geometric(0.55, n_orders), 20)
    gift = rng.random(n_orders) < 0.12
    coupon = np.where(rng.random(n_orders) < 0.25, rng.integers(0, len(COUPONS), n_orders), -1)
    lifecycle_status = np.array([[STATUSES.index(s) for s in c] + [0] * (5 - len(c)) for c in LIFECYCLES])
    columns = {
        "order_id": _strings("o-", order + start + (V2_ORDER_BASE if version == 2 else 0), 7),
        "customer_id": _strings("c-", customer[order], 6),
        "region": take_strings(regions, (customer[order] % len(REGIONS)) + len(REGIONS) * region_case),
        "status": take_strings(STATUSES, lifecycle_status[path[order], step]),
        "amount": _decimal(cents[order]),
        "quantity": pa.array(quantity[order]),
        "is_gift": pa.array(gift[order], mask=rng.random(rows) < 0.05),
        "coupon" if version == 1 else "promo_code": take_strings(COUPONS, coupon[order], null=-1),
        "created_at": _timestamps(created_ms[order]),
        "updated_at": _timestamps(updated_ms),
    }
    if version == 2:
        channel = rng.choice(len(CHANNELS), size=n_orders, p=CHANNEL_WEIGHTS)
        columns["channel"] = take_strings(CHANNELS, np.where(rng.random(rows) < 0.1, -1, channel[order]), null=-1)
    table = pa.table(columns).cast(schema(version))

    dirty = pick_dirty(rng, rows, TYPED_DIRTY + TEXT_DIRTY, dirty_fraction)
    sources = {"duplicate": clean_sources(rng, dirty["duplicate"], dirty, rows)}
    table = _set(table, "order_id", dirty["missing_order_id"], None)
    table = _set(table, "status", dirty["unknown_status"], "on_hold")
    table = _set(table, "amount", dirty["negative_amount"], Decimal("-5.00"))
    table = _set(table, "updated_at", dirty["ts_out_of_range"], BEFORE_2000)
    table = take_rows(table, dirty["duplicate"], sources["duplicate"])
    order[dirty["duplicate"]] = order[sources["duplicate"]]
    return Sample(table, dirty, sources, order + start)


def _decimal(cents: np.ndarray) -> pa.Array:
    """decimal128(18, 2) from integer cents, exactly."""
    words = np.stack([cents.astype(np.int64), cents.astype(np.int64) >> 63], axis=1)
    return pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(np.ascontiguousarray(words))])


def _timestamps(ms: np.ndarray) -> pa.Array:
    return pa.array(BASE_TS_US + ms * 1000, pa.int64()).cast(_TS)


def render_jsonl(table: pa.Table, rng) -> pa.Array:
    """One JSON object per row, keys in contract order, nulls left out: amount a numeric
    string or (a fifth) a number; timestamps ISO-8601 (Z or an offset) or epoch milliseconds."""
    n = table.num_rows
    parts = []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == "amount":
            text = col.cast(pa.string())
            frag = pc.if_else(pa.array(rng.random(n) < 0.2), text, json_quote(text))
        elif name in ("quantity", "is_gift"):
            frag = col.cast(pa.string())  # true / false
        elif name in ("created_at", "updated_at"):
            text, is_number = timestamp_text(rng, column_micros(table, name), JSON_ZONES, JSON_ZONE_WEIGHTS)
            frag = pc.if_else(pa.array(is_number), text, json_quote(text))
            frag = pc.if_else(pc.is_null(col), pa.scalar(None, pa.string()), frag)
        else:
            frag = json_quote(col)
        parts.append(_field(name, frag))
    body = pc.binary_join_element_wise(*parts, ",", null_handling="skip")
    return pc.binary_join_element_wise("{", body, "}", "")


def render_csv(table: pa.Table, rng) -> pa.Array:
    """One CSV line per row, columns in contract order, null as empty: amount as Arrow writes
    it, is_gift as true/false/1/0/yes/no in several cases, timestamps ISO-8601."""
    cols = []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == "is_gift":
            word = rng.integers(0, len(CSV_TRUE), table.num_rows)
            col = pc.if_else(col, take_strings(CSV_TRUE, word), take_strings(CSV_FALSE, word))
        elif name in ("created_at", "updated_at"):
            text, _ = timestamp_text(rng, column_micros(table, name), CSV_ZONES, CSV_ZONE_WEIGHTS)
            col = pc.if_else(pc.is_null(col), pa.scalar(None, pa.string()), text)
        cols.append(pc.fill_null(col.cast(pa.string()), ""))
    return pc.binary_join_element_wise(*cols, ",")


def _csv_fixes(names: list[str]) -> dict:
    at = names.index
    return {
        "non_numeric_amount": csv_set(at("amount"), b"twelve", b"$19.99", b"n/a"),
        "fractional_quantity": csv_set(at("quantity"), b"2.5"),
        "huge_quantity": csv_set(at("quantity"), b"99999999999"),
        "bad_is_gift": csv_set(at("is_gift"), b"maybe"),
        "bad_ts": csv_set(at("updated_at"), b"yesterday", b"2024-13-45T25:61:00Z", b"03/01/2024 10:00"),
    }


def write_file(fmt: str, sample: Sample, rng, path: str) -> None:
    """Writes one file of ``sample`` in ``fmt`` (jsonl, csv, avro or parquet)."""
    names = sample.table.column_names
    text = {
        "jsonl": TextFormat(render_jsonl, JSON_FIXES),
        "csv": TextFormat(render_csv, _csv_fixes(names), ",".join(names).encode()),
    }
    write_sample(fmt, sample, rng, path, "Order", text)
