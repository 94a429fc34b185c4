"""Decoding PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1) into
Arrow tables of changes.

A replication slot's messages come as rows of ``pg_logical_slot_peek_binary_changes``: per
transaction a Begin, the Relation of each table before its first change, the Insert, Update and
Delete messages in commit order, and a Commit. A :class:`ChangeDecoder` keeps the relations it
has seen and turns whole transactions into one table per batch: the row's columns as the
server sent them (text, typed by their type OID), plus the change columns (``CHANGE_COLUMNS``):

- ``_op``: ``insert``, ``update`` or ``delete``;
- ``_lsn``: the end of the transaction's commit record, the position a consumer confirms;
- ``_seq``: the change's place in its transaction;
- ``_commit_time``: when the transaction committed (UTC);
- ``_before``: the old image the table's replica identity gives, as a JSON object (the key
  columns by default, every column with ``REPLICA IDENTITY FULL``), or null.

A delete's row holds the old image's columns (so its key) and nulls. A change the decoder cannot
represent (an unchanged TOASTed value without a full old image, a TRUNCATE) is returned as a
*problem*: the source makes it a dead letter and goes on.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from transforms.records import CHANGE_COLUMNS

__all__ = ["CHANGE_COLUMNS", "ChangeDecoder", "Decoded", "format_lsn", "parse_lsn"]

_PG_EPOCH_US = int((datetime(2000, 1, 1, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc))
                   / timedelta(microseconds=1))  # fmt: skip
_I16, _I32, _I64, _U32 = struct.Struct("!h"), struct.Struct("!i"), struct.Struct("!q"), struct.Struct("!I")
_OPS = {ord("I"): "insert", ord("U"): "update", ord("D"): "delete"}
# Type OIDs and how their text becomes Arrow: integers and floats by cast, booleans from t/f,
# timestamps as ISO-8601 text (the contract parses and checks them), the rest as text.
_INTS = {20, 21, 23, 26}
_FLOATS = {700, 701, 1700}
_BOOL = 16
_TIMESTAMPS = {1114, 1184}


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> the LSN as an integer."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    """The integer LSN as PostgreSQL writes it (``'16/B374D848'``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class _Relation:
    schema: str
    name: str
    columns: list[str]
    types: list[int]
    keys: list[bool]


@dataclass
class Decoded:
    """What one batch of messages held.

    Attributes:
        changes: One table per relation version met (a column added mid-batch starts another),
            in commit order.
        problems: ``(lsn, seq, table, error, raw JSON)`` per change that cannot be represented.
        last_lsn: The commit end LSN of the last whole transaction decoded (0: none).
        transactions: Transactions decoded.
    """

    changes: list[pa.Table] = field(default_factory=list)
    problems: list[tuple[int, int, str, str, str]] = field(default_factory=list)
    last_lsn: int = 0
    transactions: int = 0


class _Rows:
    """Column-wise buffers for one relation version's changes."""

    def __init__(self, rel: _Relation):
        self.rel = rel
        self.values: list[list] = [[] for _ in rel.columns]
        self.ops: list[str] = []
        self.lsns: list[int] = []
        self.seqs: list[int] = []
        self.times: list[int] = []
        self.before: list[str | None] = []

    def table(self) -> pa.Table:
        arrays, names = [], []
        for name, oid, vals in zip(self.rel.columns, self.rel.types, self.values):
            names.append(name)
            arrays.append(_typed(pa.array(vals, pa.binary()), oid))
        names += CHANGE_COLUMNS
        arrays += [
            pa.array(self.ops, pa.string()),
            pa.array(self.lsns, pa.int64()),
            pa.array(self.seqs, pa.int32()),
            pa.array(self.times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array(self.before, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, names=names)


def _typed(raw: pa.Array, oid: int) -> pa.Array:
    text = raw.cast(pa.string())
    if oid in _INTS:
        return text.cast(pa.int64())
    if oid in _FLOATS:
        return text.cast(pa.float64())
    if oid == _BOOL:
        return pc.equal(text, "t")
    if oid in _TIMESTAMPS:
        iso = pc.replace_substring_regex(text, r"^(\d{4,}-\d\d-\d\d) ", r"\1T")
        return pc.replace_substring_regex(iso, r"([+-]\d\d)$", r"\1:00")
    return text


def _string(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(0, at)
    return data[at:end].decode(), end + 1


def _tuple(data: bytes, at: int) -> tuple[list, int]:
    """TupleData -> per column: bytes (text), None (null) or ``...`` (an unchanged TOASTed value)."""
    (n,) = _I16.unpack_from(data, at)
    at += 2
    out: list = []
    for _ in range(n):
        kind = data[at]
        at += 1
        if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
            (size,) = _I32.unpack_from(data, at)
            out.append(data[at + 4 : at + 4 + size])
            at += 4 + size
        elif kind == 0x6E:  # 'n'
            out.append(None)
        else:  # 'u': unchanged TOASTed value, not sent
            out.append(...)
    return out, at


class ChangeDecoder:
    """Decodes pgoutput messages into change tables, keeping relations between batches.

    Args:
        after: Transactions whose commit end LSN is at or before this were already handed on;
            they are skipped (their Relation messages still read).
    """

    def __init__(self, after: int = 0):
        self.after = after
        self._relations: dict[int, _Relation] = {}

    def decode(self, messages) -> Decoded:
        """``messages``: ``(data, ...)`` rows (bytes first) in the order the slot gave them.
        Only whole transactions are decoded; a batch ending inside one leaves it for the next."""
        out = Decoded()
        pending: list[tuple] = []  # the current transaction's (rel, op, after, before, seq)
        skip = False
        commit_time = 0
        rows: dict[int, _Rows] = {}
        order: list[_Rows] = []
        for row in messages:
            data = bytes(row[0])
            tag = data[0]
            if tag == 0x42:  # 'B'
                (final_lsn,) = _I64.unpack_from(data, 1)
                (ts,) = _I64.unpack_from(data, 9)
                commit_time = ts + _PG_EPOCH_US
                skip = final_lsn < self.after
                pending = []
            elif tag == 0x52:  # 'R'
                self._relation(data)
            elif tag in _OPS:
                if not skip:
                    pending.append((data, _OPS[tag]))
            elif tag == 0x54:  # 'T'
                if not skip:
                    pending.append((data, "truncate"))
            elif tag == 0x43:  # 'C'
                (end_lsn,) = _I64.unpack_from(data, 10)
                if end_lsn > self.after and not skip:
                    self._commit(pending, end_lsn, commit_time, rows, order, out)
                    out.transactions += 1
                    out.last_lsn = end_lsn
                    self.after = end_lsn
                pending, skip = [], False
            # 'Y' (type), 'O' (origin) and 'M' (message) say nothing a row needs.
        out.changes = [r.table() for r in order]
        return out

    def _relation(self, data: bytes) -> None:
        (oid,) = _U32.unpack_from(data, 1)
        schema, at = _string(data, 5)
        name, at = _string(data, at)
        at += 1  # replica identity setting
        (n,) = _I16.unpack_from(data, at)
        at += 2
        columns, types, keys = [], [], []
        for _ in range(n):
            flags = data[at]
            col, at = _string(data, at + 1)
            (type_oid,) = _U32.unpack_from(data, at)
            at += 8  # type OID, type modifier
            columns.append(col)
            types.append(type_oid)
            keys.append(bool(flags & 1))
        self._relations[oid] = _Relation(schema or "pg_catalog", name, columns, types, keys)

    def _commit(self, pending, end_lsn, commit_time, rows, order, out: Decoded) -> None:
        for seq, (data, op) in enumerate(pending):
            if op == "truncate":
                (n,) = _I32.unpack_from(data, 1)
                names = [f"{r.schema}.{r.name}" for i in range(n)
                         if (r := self._relations.get(_U32.unpack_from(data, 6 + 4 * i)[0])) is not None]  # fmt: skip
                out.problems.append((end_lsn, seq, ",".join(names), "TRUNCATE is not mirrored: truncate the "
                                     "sink's table too", json.dumps({"op": "truncate", "tables": names})))  # fmt: skip
                continue
            (oid,) = _U32.unpack_from(data, 1)
            rel = self._relations[oid]
            at = 5
            before, key_only = None, False
            if data[at] in (0x4B, 0x4F):  # 'K' key image or 'O' full old image
                key_only = data[at] == 0x4B
                before, at = _tuple(data, at + 1)
            if op == "delete":
                after = before
            else:
                after, at = _tuple(data, at + 1)  # 'N'
            if any(v is ... for v in after):
                filled = [b if a is ... and before is not None and b is not ... else a
                          for a, b in zip(after, before or after)]  # fmt: skip
                if any(v is ... for v in filled):
                    missing = [c for c, v in zip(rel.columns, filled) if v is ...]
                    out.problems.append((end_lsn, seq, f"{rel.schema}.{rel.name}",
                                         f"{op} of {rel.name} left {', '.join(missing)} unchanged and unsent (TOAST): "
                                         "set REPLICA IDENTITY FULL on the table to mirror it",
                                         _image(rel, after)))  # fmt: skip
                    continue
                after = filled
            buf = rows.get(id(rel))
            if buf is None or buf.rel is not rel:
                buf = rows[id(rel)] = _Rows(rel)
                order.append(buf)
            for i, v in enumerate(after):
                buf.values[i].append(v)
            for i in range(len(after), len(rel.columns)):
                buf.values[i].append(None)
            buf.ops.append(op)
            buf.lsns.append(end_lsn)
            buf.seqs.append(seq)
            buf.times.append(commit_time)
            buf.before.append(None if before is None else _image(rel, before, key_only))


def _image(rel: _Relation, values: list, key_only: bool = False) -> str:
    """A tuple as a JSON object of its sent columns' text (null for nulls); of the key columns
    only for a key image."""
    obj = {}
    for name, v, key in zip(rel.columns, values, rel.keys):
        if v is ... or (key_only and not key):
            continue
        obj[name] = None if v is None else v.decode("utf-8", errors="backslashreplace")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
