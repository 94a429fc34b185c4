"""The batch type shared by every stage: Arrow tables, and the one DeadLetter schema.

Every core transform takes and returns ``pa.Table`` elements. Error outputs are tables
with :data:`DEAD_LETTER_SCHEMA`, whatever stage produced them.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from transforms import colscan
from transforms.colscan import string_buffers

__all__ = [
    "CHANGE_COLUMNS",
    "DEAD_LETTER_SCHEMA",
    "ArrowTableCoder",
    "as_array",
    "concat_records",
    "dead_letters",
    "empty_dead_letters",
    "hash_partition",
    "iso_text",
    "json_quote",
    "json_lines",
    "json_text",
    "joined_lines",
    "raw_text",
    "record_struct",
    "slices_by",
    "string_buffers",
    "typed",
]

# A change stream's own columns (see ``transforms.ingest.pgoutput``): parsing and validation
# carry them past the contract's fields, so sinks can apply each change as what it is.
CHANGE_COLUMNS = ("_op", "_lsn", "_seq", "_commit_time", "_before")

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("error", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("source", pa.string()),
    ]
)


def empty_dead_letters() -> pa.Table:
    return DEAD_LETTER_SCHEMA.empty_table()


def dead_letters(
    stage: str,
    reason: str | pa.Array,
    field: str | None | pa.Array,
    error: str | pa.Array,
    raw: pa.Array,
    source: pa.Array,
) -> pa.Table:
    """Builds a dead-letter table; scalar arguments are broadcast to ``len(raw)`` rows."""
    raw = raw_text(raw)
    n = len(raw)

    def col(v):
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            return v.cast(pa.string())
        return pa.array([v] * n, pa.string())

    return pa.table(
        [col(stage), col(reason), col(field), col(error), col(raw), col(source)],
        schema=DEAD_LETTER_SCHEMA,
    )


def typed(pcoll, hint=pa.Table):
    """Declares a PCollection's element type so the runner encodes it with its coder.

    Tagged outputs of a multi-output ParDo are otherwise typed Any and pickled, and a pickled
    table slice carries its parent's whole buffers.
    """
    pcoll.element_type = hint
    return pcoll


class ArrowTableCoder(beam.coders.Coder):
    """Encodes a table as one LZ4-compressed Arrow IPC stream: no pickling, cheap across processes."""

    # LZ4 keeps shuffled and buffered tables small (record text compresses several-fold) at a
    # cost far below parsing them.
    _OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")

    def encode(self, value: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema, options=self._OPTIONS) as writer:
            writer.write_table(value)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def estimate_size(self, value: pa.Table) -> int:
        # Beam samples element sizes for its metrics; the default would encode the table again.
        return value.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)

# Per-position weights for the string hash: fixed so every worker agrees on partitions.
_HASH_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**63, size=256, dtype=np.uint64) | 1


def hash_partition(values: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """Stable partition number in ``[0, partitions)`` for each string; nulls go to 0.

    Vectorised over the UTF-8 bytes, identical on every machine and process (unlike
    Python's salted ``hash``), so a shuffle keyed by it puts equal keys together.
    """
    arr = as_array(values)
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    offsets, data = string_buffers(arr)
    offsets = offsets.astype(np.int64)
    if colscan.native is not None:
        parts = np.empty(n, np.int64)
        colscan.native.hash_partitions(offsets, data, _HASH_WEIGHTS, partitions, parts)
        return parts
    start, end = offsets[0], offsets[-1]
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if 0 < width and (lengths == width).all():
        # Same-length keys (ids usually are): a row-wise weighted sum, no per-byte positions.
        # sum((byte + 1) * weight) = bytes . weights + sum(weights), all modulo 2**64.
        weights = _HASH_WEIGHTS[np.arange(width) % 256]
        with np.errstate(over="ignore"):
            sums = data[start:end].reshape(n, width).dot(weights) + weights.sum(dtype=np.uint64)
        return _finish_hash(sums, partitions)
    data = data[start:end].astype(np.uint64)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
    with np.errstate(over="ignore"):
        terms = (data + np.uint64(1)) * _HASH_WEIGHTS[pos % 256]
        sums = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        if len(data):
            reduced = np.add.reduceat(terms, (offsets[:-1] - start)[nonempty])
            sums[nonempty] = reduced
    return _finish_hash(sums, partitions)


def slices_by(table: pa.Table, ids: np.ndarray):
    """Yields ``(id, rows with that id)`` for each distinct id, in id order: one stable sort and
    one take, then zero-copy slices."""
    if table.num_rows == 0:
        return
    low, high = ids.min(), ids.max()
    if low == high:  # one id (a table already split by the same key): no sort, no copy
        yield low.item(), table
        return
    # Few distinct ids (partitions): as int16, numpy's stable sort is a radix sort.
    small = 0 <= low and high < 2**15
    order = np.argsort(ids.astype(np.int16) if small else ids, kind="stable")
    ids = ids[order]
    table = table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(ids)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(ids)]])):
        yield ids[a].item(), table.slice(int(a), int(b - a))


def _finish_hash(sums: np.ndarray, partitions: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = sums ^ (sums >> np.uint64(31))
        h = h * np.uint64(0x9E3779B97F4A7C15)
        h = h ^ (h >> np.uint64(29))
    return (h % np.uint64(partitions)).astype(np.int64)


# The short forms JSON writers (orjson, json.dumps) use; other control characters as \u00XX.
_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def json_quote(strings: pa.Array) -> pa.Array:
    """JSON string literals for a string array (null stays null)."""
    quoted = colscan.json_quote(strings)
    if quoted is not None:
        return quoted if pa.types.is_string(quoted.type) else quoted.cast(pa.string())
    if pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.string())
    # One scan finds which bytes need escaping (clean text is the common case): each Arrow
    # replace pass costs ~0.4 ns a byte even where nothing matches.
    escaped = strings
    for byte in _escaped_bytes(strings):
        escaped = pc.replace_substring(escaped, chr(byte), _escape(byte))
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _escape(byte: int) -> str:
    if byte in (0x22, 0x5C):
        return "\\" + chr(byte)
    return _SHORT_ESCAPES.get(byte, f"\\u{byte:04x}")


def iso_text(ts: pa.Array) -> pa.Array:
    """ISO-8601 text of timestamps (``...Z`` when zone-aware: Arrow stores UTC instants).

    Formatting the naive UTC value is ~25x faster than Arrow's zone-aware cast.
    """
    naive = ts.cast(pa.int64()).cast(pa.timestamp(ts.type.unit)).cast(pa.string())
    text = pc.replace_substring(naive, " ", "T")
    if ts.type.tz:
        text = pc.binary_join_element_wise(text, "Z", "")
    # Instants Arrow cannot write as dates (hundreds of millennia away) keep its own words.
    odd = pc.fill_null(pc.starts_with(naive, "<"), False)
    return pc.if_else(odd, naive, text) if odd.true_count else text


def _needs_escape(strings: pa.Array) -> bool:
    """Whether any value holds ``"``, ``\\`` or a control character."""
    return bool(_escaped_bytes(strings))


def _escaped_bytes(strings: pa.Array) -> list[int]:
    """The bytes JSON escapes (``\\`` first, then ``"`` and control characters) that occur in
    the values: numpy passes over the UTF-8 bytes (multi-byte characters never contain them)."""
    if strings.null_count == len(strings):
        return []
    if isinstance(strings, pa.ChunkedArray):
        return sorted({b for c in strings.chunks for b in _escaped_bytes(c)}, key=_escape_order)
    if not (pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type)):
        strings = strings.cast(pa.string())
    offsets, data = string_buffers(strings)
    raw = data[offsets[0] : offsets[-1]]
    found = [b for b in (0x5C, 0x22) if (raw == b).any()]
    controls = raw < 0x20
    if controls.any():
        found += np.unique(raw[controls]).tolist()
    return found


def _escape_order(byte: int) -> int:
    # The backslash is escaped first, so the backslashes other escapes add stay single.
    return -1 if byte == 0x5C else byte


def _json_value(column: pa.Array) -> tuple[pa.Array, bool]:
    """JSON text of each value (null stays null), vectorised for flat column types, and
    whether the text still needs its surrounding quotes (strings that need no escaping)."""
    t = column.type
    if pa.types.is_dictionary(t):
        return _json_value(column.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        strings = column.cast(pa.string())
        if _needs_escape(strings):
            return json_quote(strings), False
        return strings, True
    if pa.types.is_timestamp(t):
        return iso_text(column), True  # digits, '-', ':', '.', 'T', 'Z': never escaped
    if pa.types.is_date(t):
        return column.cast(pa.string()), True
    if pa.types.is_boolean(t):
        return pc.if_else(column, "true", "false"), False
    if pa.types.is_floating(t):
        # NaN and the infinities have no JSON form: null, as orjson writes them.
        return pc.if_else(pc.is_finite(column), column.cast(pa.string()), pa.scalar(None, pa.string())), False
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        return column.cast(pa.string()), False
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return json_quote(_utf8(column)), False
    if pa.types.is_nested(t):
        return _python_json(column), False
    return json_quote(column.cast(pa.string())), False


def _utf8(column: pa.Array) -> pa.Array:
    """Bytes as text: as they are where they are UTF-8, else with the other bytes escaped
    (``\\xff``), one value at a time."""
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else v.decode("utf-8", "backslashreplace") for v in column.to_pylist()],
                        pa.string())  # fmt: skip


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    return str(value)  # decimals, times, durations


def _python_json(column: pa.Array) -> pa.Array:
    """JSON text of nested values (lists, structs, maps as lists of key-value pairs: their keys
    may repeat), which Arrow cannot write, one value at a time: typed columns of them are
    rare, and their rows few where they are shown."""
    dumps, opts = orjson.dumps, orjson.OPT_NON_STR_KEYS
    try:
        values = column.to_pylist()
    except (ValueError, OverflowError):  # instants beyond Python's years 1 to 9999: as their numbers
        values = column.cast(_numbered(column.type)).to_pylist()
    return pa.array([None if v is None else dumps(v, default=_json_default, option=opts).decode() for v in values],
                    pa.string())  # fmt: skip


def _numbered(t: pa.DataType) -> pa.DataType:
    """``t`` with every date, time, timestamp and duration inside it as its integer."""
    if pa.types.is_temporal(t):
        return pa.int32() if t.bit_width == 32 else pa.int64()
    if pa.types.is_list(t):
        return pa.list_(_numbered(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_numbered(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_numbered(t.value_type), t.list_size)
    if pa.types.is_map(t):
        return pa.map_(_numbered(t.key_type), _numbered(t.item_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _numbered(f.type), f.nullable) for f in t])
    return t


def as_array(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array from a column: a single chunk is taken as it is (no copy)."""
    if isinstance(x, pa.ChunkedArray):
        return x.chunk(0) if x.num_chunks == 1 else x.combine_chunks()
    return x


def json_lines(table: pa.Table) -> pa.Buffer:
    """The rows as JSON objects (see :func:`json_text`), each followed by a newline, in one buffer."""
    if colscan.compiled() and table.num_columns:
        return pa.py_buffer(_compiled_rows(table, "}\n")[1])
    return joined_lines(json_text(table))


def _compiled_rows(table: pa.Table, end: str) -> tuple[bytearray, bytearray]:
    """Row offsets and bytes of the rows as JSON objects, each closed by ``end``: one pass of the
    compiled column code over every column's JSON value text."""
    columns, literals, literal = [], [], "{"
    for i, name in enumerate(table.column_names):
        literal += ("" if i == 0 else ",") + orjson.dumps(name).decode() + ":"
        value = as_array(table.column(i))
        if pa.types.is_string(value.type) or pa.types.is_large_string(value.type):
            mode = 2  # escaped and quoted as it is written
        else:
            value, bare = _json_value(value)
            mode = int(bare)
        columns.append((*colscan.native_strings(value), mode))
        literals.append(literal.encode())
        literal = ""
    literals.append(end.encode())
    return colscan.native.json_rows(columns, literals)


def joined_lines(strings: pa.Array) -> pa.Buffer:
    """The values (no nulls) as one buffer, each followed by a newline: one Arrow join."""
    joined = pc.binary_join_element_wise(strings, "\n", "")
    width = np.int64 if pa.types.is_large_string(joined.type) or pa.types.is_large_binary(joined.type) else np.int32
    offsets = np.frombuffer(joined.buffers()[1], dtype=width)
    data = joined.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    return data[offsets[joined.offset] : offsets[joined.offset + len(joined)]]


def record_struct(table: pa.Table) -> pa.Array:
    """The rows of a typed table as one struct column: a record's original form, kept without
    writing it out as text (see :func:`raw_text`). Zero-copy for single-chunk columns."""
    return pa.StructArray.from_arrays([as_array(c) for c in table.columns], fields=list(table.schema))


def raw_text(raw) -> pa.Array:
    """A ``_raw`` column as record text: text stays as it is; a struct column (typed sources,
    see :func:`record_struct`) becomes one JSON object per row, fields in column order. Typed
    records are written out only here, for the few rows whose text is shown or compared."""
    raw = as_array(raw)
    if not pa.types.is_struct(raw.type):
        return raw
    fields = list(raw.type)
    return json_text(pa.Table.from_arrays(raw.flatten(), schema=pa.schema(fields)))


def concat_records(tables: list[pa.Table]) -> pa.Table:
    """Concatenates tables of one schema; struct columns whose types differ between tables
    (records from typed files of different schemas) are turned into their text first, since
    merging their types would add null fields to each record."""
    schemas = {t.schema for t in tables}
    if len(schemas) <= 1:
        return pa.concat_tables(tables)
    names = tables[0].column_names
    differing = {n for n in names if len({t.schema.field(n).type for t in tables if n in t.column_names}) > 1}
    textual = []
    for t in tables:
        for n in differing:
            if n in t.column_names and pa.types.is_struct(t.schema.field(n).type):
                t = t.set_column(t.column_names.index(n), n, raw_text(t.column(n)))
        textual.append(t)
    return pa.concat_tables(textual)


def json_text(table: pa.Table) -> pa.Array:
    """One JSON object per row, keys in column order, null values written as ``null``."""
    n = table.num_rows
    if table.num_columns == 0:
        return pa.array(["{}"] * n, pa.string())
    if colscan.compiled():
        return colscan.string_array(*_compiled_rows(table, "}"), n)
    # Literal text between values is gathered so each column costs one join argument.
    parts: list = []
    literal = "{"
    for i, name in enumerate(table.column_names):
        col = as_array(table.column(i))
        literal += ("" if i == 0 else ",") + orjson.dumps(name).decode() + ":"
        value, bare = _json_value(col)
        if bare and col.null_count == 0:
            parts += [literal + '"', value]
            literal = '"'
            continue
        if bare:
            value = pc.binary_join_element_wise('"', value, '"', "")
        parts += [literal, pc.fill_null(value, "null")]
        literal = ""
    parts.append(literal + "}")
    return pc.binary_join_element_wise(*parts, "")
