"""Deterministic sample data for the example pipelines, clean and dirty, in every format.

    python -m beam_pipelines.datagen --rows 100000 --format jsonl --dirty-fraction 0.05 \\
        --out data/in --seed 7
    python -m beam_pipelines.datagen --dataset orders --contract-version 2 --rows 100000 --out data/orders

``--dataset events`` (the default) is written here; ``orders`` and ``sessions`` by their own
modules (``datagen_orders``, ``datagen_sessions``) with the writers and helpers below.

Rows are generated with numpy and rendered with Arrow compute (no per-row Python for clean
rows), so tens of millions of rows take seconds. A fraction of rows is made dirty: every
dead-letter reason of SPEC-events.md, duplicates, and values cleansing has to null. The same
arguments always write the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import NamedTuple

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
    # fastavro draws a random sync marker unless given one: derived from the file name, the same
    # arguments write the same bytes.
    marker = hashlib.sha256(os.path.basename(path).encode()).digest()[:16]
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), table.to_pylist(), codec="deflate", sync_marker=marker)


def write_file(fmt: str, table: pa.Table, dirty: dict, rng, path: str) -> None:
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=128 * 1024)
    elif fmt == "avro":
        write_avro(table, path)
    else:
        lines = render_jsonl(table, dirty, rng) if fmt == "jsonl" else render_csv(table, dirty, rng)
        with open(path, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")


# Shared by the datasets generated in their own modules (datagen_orders, datagen_sessions).

DATASETS = ("events", "orders", "sessions")
BEFORE_2000 = datetime(1999, 6, 1, tzinfo=timezone.utc)  # a timestamp out of the contracts' range
AVRO_BLOCK_ROWS = 4096
TEXT_CHUNK_ROWS = 262_144


class Sample(NamedTuple):
    """One file's rows: the typed table (what parquet and avro hold; text is rendered from it),
    the dirty row indices by kind, the row each duplicate copies (by duplicate kind, aligned with
    ``dirty[kind]``), and each row's ground-truth group (its order or session) for tests."""

    table: pa.Table
    dirty: dict[str, np.ndarray]
    sources: dict[str, np.ndarray]
    group: np.ndarray


def pick_dirty(rng, rows: int, kinds: tuple[str, ...], fraction: float) -> dict[str, np.ndarray]:
    """``fraction`` of the rows (never row 0) made dirty, each with one kind drawn at random."""
    n_dirty = min(int(round(rows * fraction)), max(rows - 1, 0))
    dirty_idx = np.sort(rng.choice(np.arange(1, rows), size=n_dirty, replace=False)) if n_dirty else np.array([], int)
    assigned = np.array(kinds)[rng.integers(0, len(kinds), n_dirty)]
    return {k: dirty_idx[assigned == k] for k in kinds}


def clean_sources(rng, rows: np.ndarray, dirty: dict[str, np.ndarray], n: int) -> np.ndarray:
    """For each row in ``rows``, an earlier row that is not dirty (row 0 never is): what a
    duplicate copies."""
    is_dirty = np.zeros(n, dtype=bool)
    for idx in dirty.values():
        is_dirty[idx] = True
    clean = np.flatnonzero(~is_dirty)
    before = np.searchsorted(clean, rows)  # clean rows earlier than each row (>= 1)
    return clean[(rng.random(len(rows)) * before).astype(np.int64)]


def take_rows(table: pa.Table, rows: np.ndarray, sources: np.ndarray) -> pa.Table:
    """The table with ``rows`` replaced by copies of ``sources``."""
    if len(rows) == 0:
        return table
    copies = table.take(pa.array(sources))
    for name in table.column_names:
        table = _scatter(table, name, rows, copies.column(name))
    return table


def replace_rows(values: pa.Array, rows: np.ndarray, new: pa.Array) -> pa.Array:
    """``values`` with the entries at ``rows`` (sorted) replaced by ``new``."""
    if len(rows) == 0:
        return values
    positions = np.arange(len(values))
    positions[rows] = len(values) + np.arange(len(rows))
    return pa.concat_arrays([values, new.cast(values.type)]).take(pa.array(positions))


def split_sizes(total: int, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``total`` items cut into consecutive groups of the given ``sizes`` (as many groups as
    needed, the last cut short). Returns per item its group and its position in the group, and
    the sizes used."""
    ends = np.cumsum(sizes)
    n_groups = int(np.searchsorted(ends, total)) + 1 if total else 0
    sizes = sizes[:n_groups].astype(np.int64)
    if n_groups:
        sizes[-1] -= ends[n_groups - 1] - total
    first = np.cumsum(sizes) - sizes
    return np.repeat(np.arange(n_groups), sizes), np.arange(total) - np.repeat(first, sizes), sizes


def running_sum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting at each group (consecutive groups of ``sizes``)."""
    total = np.cumsum(values)
    first = np.cumsum(sizes) - sizes
    return total - np.repeat(total[first] - values[first], sizes) if len(values) else total


def take_strings(values: tuple[str, ...], idx: np.ndarray, null: int | None = None) -> pa.Array:
    """``values[idx[i]]`` as a string array; null where ``idx`` equals ``null``."""
    if null is None:
        return pa.array(values, pa.string()).take(pa.array(idx))
    taken = pa.array(values, pa.string()).take(pa.array(np.where(idx == null, 0, idx)))
    return pc.if_else(pa.array(idx == null), pa.scalar(None, pa.string()), taken)


def column_micros(table: pa.Table, name: str) -> np.ndarray:
    """A timestamp[us] column as epoch microseconds (0 where null)."""
    return pc.fill_null(table.column(name).combine_chunks().cast(pa.int64()), 0).to_numpy()


def json_set(key: str, *values: bytes):
    """A line fix (for ``dirty_text``) setting ``key`` of a JSON object line to a literal,
    ``values`` taken in turn (the key is appended when absent)."""
    name = key.encode()
    pattern = re.compile(rb'"' + re.escape(name) + rb'":("(?:[^"\\]|\\.)*"|[^,}]*)')

    def fix(k: int, line: bytes) -> bytes:
        field = b'"' + name + b'":' + values[k % len(values)]
        new, count = pattern.subn(lambda m: field, line, count=1)
        return new if count else line[:-1] + b"," + field + b"}"

    return fix


def csv_set(column: int, *values: bytes):
    """A line fix (for ``dirty_text``) setting one column of an unquoted CSV line, ``values``
    taken in turn."""

    def fix(k: int, line: bytes) -> bytes:
        parts = line.split(b",")
        parts[column] = values[k % len(values)]
        return b",".join(parts)

    return fix


def _cut_in_half(k: int, line: bytes) -> bytes:
    return line[: len(line) // 2]


def timestamp_text(
    rng, micros: np.ndarray, zones: tuple[str, ...], weights: list[float]
) -> tuple[pa.Array, np.ndarray]:
    """Timestamps as text, each row in one of ``zones`` drawn with ``weights``: a UTC offset
    (``Z``, ``+02:00``, ``-05:30``: ISO-8601 of that local time, to the millisecond) or ``ms``
    (epoch milliseconds). Returns the text and which rows are numbers (unquoted in JSON)."""
    zone = rng.choice(len(zones), size=len(micros), p=weights)
    offsets_min = np.array([0 if z in ("Z", "ms") else _offset_minutes(z) for z in zones], dtype=np.int64)
    local_ms = micros // 1000 + offsets_min[zone] * 60_000
    naive = pa.array(local_ms, pa.int64()).cast(pa.timestamp("ms")).cast(pa.string())
    suffix = pa.array(zones, pa.string()).take(pa.array(zone))
    iso = pc.binary_join_element_wise(pc.replace_substring(naive, " ", "T"), suffix, "")
    is_number = np.array([z == "ms" for z in zones])[zone]
    text = pc.if_else(pa.array(is_number), pa.array(micros // 1000, pa.int64()).cast(pa.string()), iso)
    return text, is_number


def _offset_minutes(zone: str) -> int:
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = zone[1:].split(":")
    return sign * (int(hours) * 60 + int(minutes))


class TextFormat(NamedTuple):
    """How a dataset writes a text format: ``render(table, rng)`` gives the clean lines of a
    table's rows (a string or binary array); ``fixes`` maps each text-only dirty kind to its line
    fix, ``fix(k, line) -> bytes`` for the k-th row of that kind; ``header``, a first line."""

    render: Callable
    fixes: dict
    header: bytes | None = None


def write_sample(fmt: str, sample: Sample, rng, path: str, record_name: str, text: dict[str, TextFormat]) -> None:
    """Writes one file of ``sample``: parquet and avro from its table, the formats in ``text``
    (jsonl, csv) rendered by them."""
    if fmt == "parquet":
        pq.write_table(sample.table, path, row_group_size=128 * 1024)
    elif fmt == "avro":
        write_avro_table(sample.table, path, record_name, rng.bytes(16))
    elif fmt in text:
        write_text(path, sample, rng, text[fmt])
    else:
        raise ValueError(f"unknown format {fmt!r}")


def write_text(path: str, sample: Sample, rng, text: TextFormat, chunk_rows: int | None = None) -> None:
    """Writes the sample's rows as lines, rendered and written a chunk of rows at a time (memory
    follows the chunk, not the file), then made dirty: each ``duplicate`` row the same bytes as
    its source's line, ``malformed`` rows cut in half, and each kind of ``text.fixes`` rewritten
    by its fix (per-row Python for dirty rows only)."""
    chunk_rows = chunk_rows or TEXT_CHUNK_ROWS
    n = sample.table.num_rows
    dup_rows, dup_sources = sample.dirty["duplicate"], sample.sources["duplicate"]
    fixes = {"malformed": _cut_in_half, **text.fixes}
    copied: dict[int, bytes] = {}  # a duplicate's source line (sources come first)
    with open(path, "wb") as fh:
        if text.header is not None:
            fh.write(text.header + b"\n")
        for first in range(0, n, chunk_rows):
            last = min(n, first + chunk_rows)
            lines = text.render(sample.table.slice(first, last - first), rng).cast(pa.binary())
            here = np.unique(dup_sources[(dup_sources >= first) & (dup_sources < last)])
            copied.update(zip(here.tolist(), lines.take(pa.array(here - first)).to_pylist()))
            a, b = np.searchsorted(dup_rows, [first, last])
            rows, new = [dup_rows[a:b]], [copied[src] for src in dup_sources[a:b].tolist()]
            for kind, fix in fixes.items():
                idx = sample.dirty[kind]
                a, b = np.searchsorted(idx, [first, last])
                rows.append(idx[a:b])
                new += [fix(k, line) for k, line in enumerate(lines.take(pa.array(idx[a:b] - first)).to_pylist(), a)]
            rows = np.concatenate(rows) - first
            order = np.argsort(rows, kind="stable")
            lines = replace_rows(lines, rows[order], pa.array(new, pa.binary()).take(pa.array(order)))
            fh.write(
                _joined_bytes(pc.binary_join_element_wise(lines, _bytes(b"\n", pa.binary()), _bytes(b"", pa.binary())))
            )


def _joined_bytes(arr: pa.Array) -> memoryview:
    """The bytes of every entry of a (large_)binary array, back to back (nulls are empty)."""
    if len(arr) == 0:
        return memoryview(b"")
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def write_avro_table(table: pa.Table, path: str, record_name: str, sync_marker: bytes) -> None:
    """Writes an Avro object container file (deflate blocks) of the table, every field a
    ``["null", T]`` union, encoded column by column with numpy: no per-row Python.

    Types: string, int32 (int), int64 (long), float64 (double), bool (boolean),
    timestamp[us, UTC] (long timestamp-micros) and decimal128 (bytes decimal, precision <= 18).
    """
    fields = [{"name": f.name, "type": ["null", _avro_type(f)]} for f in table.schema]
    schema = {"type": "record", "name": record_name, "fields": fields}
    header = _avro_map({"avro.schema": json.dumps(schema).encode(), "avro.codec": b"deflate"})
    with open(path, "wb") as fh:
        fh.write(b"Obj\x01" + header + sync_marker)
        for part in range(0, table.num_rows, AVRO_BLOCK_ROWS * 64):  # encoded 64 blocks at a time
            rows = table.slice(part, AVRO_BLOCK_ROWS * 64)
            columns = [_avro_column(rows.column(f.name).combine_chunks()) for f in table.schema]
            records = pc.binary_join_element_wise(*columns, _bytes(b""))
            for first in range(0, len(records), AVRO_BLOCK_ROWS):
                block = records.slice(first, AVRO_BLOCK_ROWS)
                deflate = zlib.compressobj(1, zlib.DEFLATED, -15)  # level 1: 2.8x faster than 6, 16% larger
                data = deflate.compress(_joined_bytes(block)) + deflate.flush()
                fh.write(_zigzag_bytes(len(block)) + _zigzag_bytes(len(data)) + data + sync_marker)


def _avro_type(field: pa.Field):
    t = field.type
    if pa.types.is_decimal(t):
        if t.precision > 18:
            raise ValueError(f"avro: decimal precision {t.precision} > 18 in {field.name!r}")
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}
    if pa.types.is_timestamp(t) and t.unit == "us":
        return {"type": "long", "logicalType": "timestamp-micros"}
    simple = {
        pa.string(): "string",
        pa.int32(): "int",
        pa.int64(): "long",
        pa.float64(): "double",
        pa.bool_(): "boolean",
    }
    if t not in simple:
        raise ValueError(f"avro: no encoding for {t} ({field.name!r})")
    return simple[t]


def _avro_column(col: pa.Array) -> pa.Array:
    """Each row's union-encoded bytes: 0x00 for null, 0x02 then the value."""
    t, n = col.type, len(col)
    if pa.types.is_string(t):
        text = pc.fill_null(col, "").cast(pa.large_binary())
        value = pc.binary_join_element_wise(_varints(pc.binary_length(text).to_numpy()), text, _bytes(b""))
    elif pa.types.is_decimal(t):
        unscaled = np.frombuffer(col.buffers()[1], dtype=np.int64).reshape(-1, 2)[col.offset : col.offset + n, 0]
        value = _fixed(
            np.concatenate([np.full((n, 1), 16, np.uint8), unscaled.astype(">i8").view(np.uint8).reshape(n, 8)], 1)
        )
    elif pa.types.is_floating(t):
        value = _fixed(pc.fill_null(col, 0.0).to_numpy().astype("<f8").view(np.uint8).reshape(n, 8))
    elif pa.types.is_boolean(t):
        value = _fixed(pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(np.uint8).reshape(n, 1))
    else:  # int32, int64, timestamp[us]
        value = _varints(pc.fill_null(col.cast(pa.int64()), 0).to_numpy())
    tagged = pc.binary_join_element_wise(_bytes(b"\x02"), value, _bytes(b""))
    return pc.if_else(pc.is_null(col), _bytes(b"\x00"), tagged)


def _bytes(value: bytes, type_: pa.DataType = pa.large_binary()) -> pa.Scalar:
    return pa.scalar(value, type_)


def _fixed(matrix: np.ndarray) -> pa.Array:
    """A large_binary array whose row ``i`` is the bytes of ``matrix[i]``."""
    n, width = matrix.shape
    offsets = np.arange(n + 1, dtype=np.int64) * width
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))]
    )


def _varints(values: np.ndarray) -> pa.Array:
    """Avro longs (zigzag, base-128 varint), one large_binary entry per value."""
    values = values.astype(np.int64)
    zz = ((values << 1) ^ (values >> 63)).view(np.uint64)
    length = np.ones(len(zz), dtype=np.int64)
    for k in range(1, 10):
        length += zz >= np.uint64(1 << (7 * k))
    offsets = np.zeros(len(zz) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k in range(int(length.max(initial=0))):
        rows = np.flatnonzero(length > k)
        group = (zz[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = np.where(length[rows] > k + 1, 0x80, 0).astype(np.uint64)
        data[offsets[rows] + k] = (group | more).astype(np.uint8)
    return pa.Array.from_buffers(pa.large_binary(), len(zz), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _zigzag_bytes(value: int) -> bytes:
    return _varints(np.array([value])).to_pylist()[0]


def _avro_map(entries: dict[str, bytes]) -> bytes:
    out = _zigzag_bytes(len(entries))
    for key, value in entries.items():
        out += _zigzag_bytes(len(key)) + key.encode() + _zigzag_bytes(len(value)) + value
    return out + b"\x00"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.datagen",
        description="Writes deterministic sample records (with a fraction of dirty ones) for the events, orders or "
        "sessions pipeline.",
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
    parser.add_argument("--dataset", choices=DATASETS, default="events",
                        help="Which pipeline's records: events, orders or sessions. Default: events.")  # fmt: skip
    parser.add_argument("--contract-version", type=int, choices=(1, 2), default=1,
                        help="orders only: the contract version the records follow (2 adds channel, renames "
                        "coupon to promo_code, numbers its orders apart from 1's). Default: 1.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    if not 0.0 <= args.dirty_fraction <= 1.0:
        parser.error("--dirty-fraction must be between 0 and 1")
    files = args.files or max(1, math.ceil(args.rows / ROWS_PER_FILE))
    if files < 1:
        parser.error("--files must be >= 1")
    if args.dataset != "events":
        return _write_dataset(parser, args, files)
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


def _write_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace, files: int) -> int:
    """Writes the orders or sessions files (their modules generate and render the rows)."""
    if args.days < 1:
        parser.error(f"--days must be >= 1 for --dataset {args.dataset}")
    if args.contract_version != 1 and args.dataset != "orders":
        parser.error("--contract-version applies to --dataset orders only")
    if args.dataset == "orders":
        from beam_pipelines import datagen_orders as module

        options, prefix = {"version": args.contract_version}, f"orders-v{args.contract_version}"
    else:
        from beam_pipelines import datagen_sessions as module

        options, prefix = {}, "sessions"
    os.makedirs(args.out, exist_ok=True)
    per_file = math.ceil(args.rows / files) if args.rows else 0
    start = 0
    for f in range(files):
        n = max(0, min(per_file, args.rows - start))
        sample = module.generate(n, start, args.seed, args.dirty_fraction, args.days, **options)
        path = os.path.join(args.out, f"{prefix}-{f:05d}.{args.format}")
        module.write_file(args.format, sample, np.random.default_rng([args.seed, start, 1]), path)
        start += n
    print(f"wrote {args.rows:,} {args.dataset} {args.format} records in {files} file(s) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
