"""Deterministic sample data for the ``events`` pipeline, clean and dirty, in every format.

    python -m beam_pipelines.datagen --rows 100000 --format jsonl --dirty-fraction 0.05 \\
        --out data/in --seed 7

Rows are generated with numpy and rendered with Arrow compute (no per-row Python for clean
rows), so tens of millions of rows take seconds. A fraction of rows is made dirty: every
dead-letter reason of SPEC-events.md, duplicates, and values cleansing has to null. The same
arguments always write the same bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.records import json_quote

FORMATS = ("jsonl", "csv", "avro", "parquet")
EVENT_TYPES = np.array(["view", "click", "add_to_cart", "purchase", "refund"])
EVENT_WEIGHTS = [0.5, 0.25, 0.12, 0.1, 0.03]
CURRENCIES = np.array(["USD", "EUR", "GBP", "usd", " eur "])
CURRENCY_WEIGHTS = [0.6, 0.2, 0.1, 0.05, 0.05]
COUNTRIES = np.array(["US", "DE", "GB", "FR", "IN", "BR", "JP", "us", " de "])
COUNTRY_WEIGHTS = [0.3, 0.15, 0.12, 0.1, 0.1, 0.08, 0.05, 0.05, 0.05]
BASE_TS_US = int(datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)

# Row-level problems every format can carry (typed columns can hold them).
TYPED_DIRTY = (
    "missing_event_id", "null_user_id", "bad_event_type", "negative_amount", "purchase_no_amount",
    "bad_currency", "ts_out_of_range", "duplicate", "duplicate_later", "bad_email", "bad_country",
)  # fmt: skip
# Problems only text can carry.
TEXT_DIRTY = ("malformed", "not_object", "undecodable", "bad_ts", "non_numeric_amount", "wrong_columns")
ROWS_PER_FILE = 1_000_000


def _choice(rng, values, weights, n):
    return values[rng.choice(len(values), size=n, p=weights)]


def _strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0"), "")


def generate(rows: int, start: int, seed: int, dirty_fraction: float, days: int = 7) -> tuple[pa.Table, dict]:
    """A typed table of ``rows`` events numbered from ``start``, and the dirty row indices by
    kind (text-only kinds are applied when rendering text)."""
    rng = np.random.default_rng([seed, start])
    idx = np.arange(start, start + rows)
    users = max(1000, rows // 20)
    etype = _choice(rng, EVENT_TYPES, EVENT_WEIGHTS, rows)
    paid = np.isin(etype, ["purchase", "refund"])
    cart = (etype == "add_to_cart") & (rng.random(rows) < 0.5)
    amount = np.round(rng.uniform(1, 500, rows), 2)
    amount_valid = paid | cart
    span = days * 86400 * 1_000_000
    ts = BASE_TS_US + (idx - start) * (span // max(rows, 1)) + rng.integers(0, 3_600_000_000, rows)
    email_n = rng.integers(0, users, rows)
    email_kind = rng.random(rows)
    emails = pc.binary_join_element_wise(
        _strings("user", email_n, 1), pa.array(np.where(email_kind < 0.1, "@Example.COM", "@example.com")), ""
    )
    emails = pc.if_else(pa.array(email_kind > 0.8), pa.scalar(None, pa.string()), emails)
    country = pa.array(_choice(rng, COUNTRIES, COUNTRY_WEIGHTS, rows))
    country = pc.if_else(pa.array(rng.random(rows) < 0.1), pa.scalar(None, pa.string()), country)
    session = pc.if_else(pa.array(rng.random(rows) < 0.2), _strings("s", rng.integers(0, 10**6, rows), 6),
                         pa.scalar(None, pa.string()))  # fmt: skip
    table = pa.table(
        {
            "event_id": _strings("ev-", idx, 10),
            "user_id": _strings("u", rng.integers(0, users, rows), 6),
            "event_type": pa.array(etype),
            "amount": pa.array(np.where(amount_valid, amount, np.nan), from_pandas=True),
            "currency": pc.if_else(
                pa.array(rng.random(rows) < 0.05),
                pa.scalar(None, pa.string()),
                pa.array(_choice(rng, CURRENCIES, CURRENCY_WEIGHTS, rows)),
            ),  # fmt: skip
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "email": emails,
            "country": country,
            "session_id": session,
        }
    )
    n_dirty = int(round(rows * dirty_fraction))
    dirty_idx = np.sort(rng.choice(np.arange(1, rows), size=min(n_dirty, rows - 1), replace=False)) if rows > 1 else []
    kinds = np.array(TYPED_DIRTY + TEXT_DIRTY)
    assigned = kinds[rng.integers(0, len(kinds), len(dirty_idx))] if len(dirty_idx) else np.array([])
    dirty = {k: np.asarray(dirty_idx)[assigned == k] for k in kinds}
    return _apply_typed_dirt(table, dirty, rng), dirty


def _set(table: pa.Table, name: str, rows: np.ndarray, value) -> pa.Table:
    if len(rows) == 0:
        return table
    col = table.column(name).combine_chunks()
    mask = np.zeros(len(col), dtype=bool)
    mask[rows] = True
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        new = pc.if_else(pa.array(mask), value, col)
    else:
        new = pc.if_else(pa.array(mask), pa.scalar(value, col.type), col)
    return table.set_column(table.schema.get_field_index(name), name, new)


def _apply_typed_dirt(table: pa.Table, dirty: dict, rng) -> pa.Table:
    t = table
    t = _set(t, "event_id", dirty["missing_event_id"], None)
    t = _set(t, "user_id", dirty["null_user_id"], None)
    t = _set(t, "event_type", dirty["bad_event_type"], "purchased!")
    t = _set(t, "amount", dirty["negative_amount"], -5.0)
    t = _set(t, "event_type", dirty["purchase_no_amount"], "purchase")
    t = _set(t, "amount", dirty["purchase_no_amount"], None)
    t = _set(t, "currency", dirty["bad_currency"], "US$")
    old = int(datetime(1999, 6, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
    t = _set(t, "ts", dirty["ts_out_of_range"], pa.scalar(old, pa.int64()).cast(t.schema.field("ts").type).as_py())
    t = _set(t, "email", dirty["bad_email"], "not-an-email")
    t = _set(t, "country", dirty["bad_country"], "USA")
    # A duplicate repeats an earlier row's event_id: the same record, or a later copy.
    for kind, delay in (("duplicate", 0), ("duplicate_later", 60_000_000)):
        rows = dirty[kind]
        if len(rows) == 0:
            continue
        src = (rows * rng.random(len(rows))).astype(np.int64)
        orig = t.take(pa.array(src))
        for name in t.column_names:
            col = orig.column(name)
            if name == "ts" and delay:
                col = pa.array(pc.cast(col, pa.int64()).to_numpy() + delay).cast(t.schema.field("ts").type)
            t = _scatter(t, name, rows, col)
    return t


def _scatter(table: pa.Table, name: str, rows: np.ndarray, values) -> pa.Table:
    col = table.column(name).combine_chunks()
    positions = np.arange(len(col))
    positions[rows] = len(col) + np.arange(len(rows))
    merged = pa.concat_arrays([col, values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values])
    return table.set_column(table.schema.get_field_index(name), name, merged.take(pa.array(positions)))


def _field(key: str, frag: pa.Array) -> pa.Array:
    """``"key":fragment``, null where the fragment is null (the key is then left out)."""
    return pc.binary_join_element_wise(f'"{key}":', frag, "")


def _ts_text(ts: pa.Array, variant: np.ndarray) -> pa.Array:
    """ts written four ways: ISO with Z, ISO with +02:00, epoch seconds, epoch millis."""
    micros = pc.cast(ts, pa.int64())
    iso_z = pc.binary_join_element_wise(pc.strftime(ts, format="%Y-%m-%dT%H:%M:%S"), "Z", "")
    local = pc.add(ts, pa.scalar(7200 * 1_000_000, pa.duration("us")))
    iso_off = pc.binary_join_element_wise(pc.strftime(local, format="%Y-%m-%dT%H:%M:%S"), "+02:00", "")
    secs = pc.divide(micros, 1_000_000).cast(pa.string())
    millis = pc.divide(micros, 1_000).cast(pa.string())
    v = pa.array(variant)
    out = pc.if_else(pc.equal(v, 0), json_quote(iso_z), json_quote(iso_off))
    out = pc.if_else(pc.equal(v, 2), secs, out)
    return pc.if_else(pc.equal(v, 3), millis, out)


def render_jsonl(table: pa.Table, dirty: dict, rng) -> list[bytes]:
    n = table.num_rows
    variant = rng.choice(4, size=n, p=[0.7, 0.1, 0.1, 0.1])
    amount = table.column("amount").combine_chunks()
    amount_txt = amount.cast(pa.string())
    as_string = pa.array(rng.random(n) < 0.05)
    amount_frag = pc.if_else(as_string, json_quote(amount_txt), amount_txt)
    amount_frag = pc.if_else(pc.is_null(amount), pa.scalar(None, pa.string()), amount_frag)
    amount_frag = pc.if_else(pa.array(np.isin(np.arange(n), dirty["purchase_no_amount"])), "null", amount_frag)
    parts = [
        _field("event_id", json_quote(table.column("event_id").combine_chunks())),
        _field("user_id", json_quote(table.column("user_id").combine_chunks())),
        _field("event_type", json_quote(table.column("event_type").combine_chunks())),
        _field("amount", amount_frag),
        _field("currency", json_quote(table.column("currency").combine_chunks())),
        _field("ts", _ts_text(table.column("ts").combine_chunks(), variant)),
        _field("email", json_quote(table.column("email").combine_chunks())),
        _field("country", json_quote(table.column("country").combine_chunks())),
        _field("session_id", json_quote(table.column("session_id").combine_chunks())),
    ]
    body = pc.binary_join_element_wise(*parts, ",", null_handling="skip")
    lines = pc.binary_join_element_wise("{", body, "}", "").to_pylist()
    lines = [s.encode() for s in lines]
    for i in dirty["malformed"]:
        lines[i] = lines[i][: len(lines[i]) // 2]
    for i in dirty["not_object"]:
        lines[i] = b'["not", "an", "object"]'
    for i in dirty["undecodable"]:
        lines[i] = lines[i][:-1] + b', "note": "caf\xe9 \xff"}'
    for i in dirty["bad_ts"]:
        lines[i] = lines[i].replace(b'"ts":', b'"ts":"yesterday","ts_was":', 1)
    for i in dirty["non_numeric_amount"]:
        line = re.sub(rb',?"amount":[^,}]*', b"", lines[i], count=1)
        line = re.sub(rb'"event_type":"[^"]*"', b'"event_type":"purchase"', line, count=1)
        lines[i] = b'{"amount":"twelve",' + line[1:]
    for i in dirty["wrong_columns"]:
        lines[i] = b"just some text"
    return lines


def render_csv(table: pa.Table, dirty: dict, rng) -> list[bytes]:
    n = table.num_rows
    variant = rng.choice(4, size=n, p=[0.7, 0.1, 0.1, 0.1])
    ts = pc.replace_substring(_ts_text(table.column("ts").combine_chunks(), variant), '"', "")
    cols = [
        table.column("event_id").combine_chunks(),
        table.column("user_id").combine_chunks(),
        table.column("event_type").combine_chunks(),
        table.column("amount").combine_chunks().cast(pa.string()),
        table.column("currency").combine_chunks(),
        ts,
        table.column("email").combine_chunks(),
        table.column("country").combine_chunks(),
        table.column("session_id").combine_chunks(),
    ]
    cols = [pc.fill_null(c, "") for c in cols]
    lines = [s.encode() for s in pc.binary_join_element_wise(*cols, ",").to_pylist()]
    for i in dirty["malformed"]:
        lines[i] = b'"' + lines[i].replace(b",", b'"x,', 1)
    for i in dirty["not_object"]:
        lines[i] = b"only,three,columns"
    for i in dirty["undecodable"]:
        lines[i] = lines[i].replace(b",", b",\xff", 1)
    for i in dirty["bad_ts"]:
        parts = lines[i].split(b",")
        parts[5] = b"yesterday"
        lines[i] = b",".join(parts)
    for i in dirty["non_numeric_amount"]:
        parts = lines[i].split(b",")
        parts[2], parts[3] = b"purchase", b"twelve"
        lines[i] = b",".join(parts)
    for i in dirty["wrong_columns"]:
        lines[i] = lines[i] + b",extra,columns"
    return [b"event_id,user_id,event_type,amount,currency,ts,email,country,session_id"] + lines


def write_avro(table: pa.Table, path: str) -> None:
    import fastavro

    schema = {
        "type": "record",
        "name": "Event",
        "fields": [
            {"name": "event_id", "type": ["null", "string"]},
            {"name": "user_id", "type": ["null", "string"]},
            {"name": "event_type", "type": ["null", "string"]},
            {"name": "amount", "type": ["null", "double"]},
            {"name": "currency", "type": ["null", "string"]},
            {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
            {"name": "email", "type": ["null", "string"]},
            {"name": "country", "type": ["null", "string"]},
            {"name": "session_id", "type": ["null", "string"]},
        ],
    }
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), table.to_pylist(), codec="deflate")


def write_file(fmt: str, table: pa.Table, dirty: dict, rng, path: str) -> None:
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=128 * 1024)
    elif fmt == "avro":
        write_avro(table, path)
    else:
        lines = render_jsonl(table, dirty, rng) if fmt == "jsonl" else render_csv(table, dirty, rng)
        with open(path, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.datagen",
        description="Writes deterministic sample events (with a fraction of dirty records) for the events pipeline.",
    )
    parser.add_argument("--rows", type=int, required=True, help="Number of records in all.")
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="File format. Default: jsonl.")
    parser.add_argument("--dirty-fraction", type=float, default=0.05,
                        help="Fraction of records made dirty (0..1). Default: 0.05.")  # fmt: skip
    parser.add_argument("--out", required=True, help="Output directory (created if absent).")
    parser.add_argument("--seed", type=int, default=7, help="Random seed: same seed, same bytes. Default: 7.")
    parser.add_argument("--files", type=int, default=None,
                        help=f"Number of files. Default: one per {ROWS_PER_FILE:,} rows.")  # fmt: skip
    parser.add_argument("--days", type=int, default=7, help="Days of event time the data spans. Default: 7.")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    if not 0.0 <= args.dirty_fraction <= 1.0:
        parser.error("--dirty-fraction must be between 0 and 1")
    files = args.files or max(1, math.ceil(args.rows / ROWS_PER_FILE))
    if files < 1:
        parser.error("--files must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    per_file = math.ceil(args.rows / files) if args.rows else 0
    start = 0
    ext = args.format
    for f in range(files):
        n = max(0, min(per_file, args.rows - start))
        table, dirty = generate(n, start, args.seed, args.dirty_fraction, args.days)
        rng = np.random.default_rng([args.seed, start, 1])
        path = os.path.join(args.out, f"events-{f:05d}.{ext}")
        write_file(args.format, table, dirty, rng, path)
        start += n
    print(f"wrote {args.rows:,} {args.format} records in {files} file(s) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
