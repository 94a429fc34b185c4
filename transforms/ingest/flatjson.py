"""Vectorised parsing of flat JSON lines: the fast path of ``ParseRecords`` for jsonl.

Most lines of a jsonl file are flat objects of scalars whose strings need no unescaping.
:func:`scan_flat` takes those and builds their slots; every other line (escapes, nesting, big
numbers, bad UTF-8, duplicate keys, ...) is left to the per-line parser, whose slots these
equal for the same lines.

Two implementations take the same lines. The compiled scanner (``_flatscan.c``, built when
the package is installed) reads each line once and writes the Arrow buffers itself. Without
it, Arrow does the work in three passes: one RE2 pass over the bytes proves the shape (and
valid UTF-8), a second turns every non-string scalar into a string marked with ``\\x01`` (a
character such strings cannot hold), and Arrow's JSON reader builds the columns, which then
become slots.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from transforms.colscan import string_buffers
from transforms.ingest.slots import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NULL, KIND_STR
from transforms.records import joined_lines

try:
    from transforms.ingest import _flatscan
except ImportError:  # no compiler where the package was installed: the Arrow passes serve
    _flatscan = None

__all__ = ["compiled", "field_slots", "flat_lines", "parse_flat", "scan_flat"]

_WS = r"[ \t]*"  # no \r: Arrow's line reader would split there
_UTF8 = (
    r"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    r"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    r"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
# Printable ASCII but '"' and '\', or a well-formed multi-byte UTF-8 character (no surrogates).
_STR = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7f]|' + _UTF8 + r')*"'
# At most 18 integer digits (always int64), 17 fraction digits and 2 exponent digits (always
# finite): the per-line parser and Arrow read such numbers to the same value.
_NUM = r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?(?:[eE][+-]?[0-9]{1,2})?"
_PAIR = _WS + _STR + _WS + ":" + _WS + "(?:" + _STR + "|" + _NUM + "|true|false|null)" + _WS
# Matched on binary arrays, where Arrow's RE2 works on bytes (Latin-1).
FLAT = r"^" + _WS + r"\{(?:" + _PAIR + "(?:," + _PAIR + ")*|" + _WS + r")\}" + _WS + "$"
# In a flat line '"' then ':' only ends a key, so this finds exactly the non-string values.
_SCALAR = '"(' + _WS + "):(" + _WS + ")(" + _NUM + "|true|false|null)"
_MARK = "\x01"
_MARKED = r'"\1:\2"\\u0001\3"'

_NULL_STR = pa.scalar(None, pa.string())


def flat_lines(raw: pa.Array) -> np.ndarray:
    """Which lines the fast path can parse.

    Args:
        raw: The lines, as a binary array.

    Returns a boolean numpy array, one entry per line.
    """
    return pc.fill_null(pc.match_substring_regex(raw, FLAT), False).to_numpy(zero_copy_only=False)


def _read(lines: pa.Array, fields: tuple[str, ...]) -> pa.Table:
    """Arrow's JSON reader over marked lines; every column read as string."""
    schema = pa.schema([(f, pa.string()) for f in fields])
    data = joined_lines(lines)
    # A record must fit in one of the reader's blocks.
    block = max(1 << 20, (pc.max(pc.binary_length(lines)).as_py() or 0) + 2)
    for _ in range(2):
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=block, use_threads=False),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
        # The reader infers timestamps from some strings: read those columns again as text.
        retyped = [f for f in table.schema if not pa.types.is_string(f.type)]
        if not retyped:
            break
        for f in retyped:
            schema = schema.append(pa.field(f.name, pa.string()))
    if retyped or table.num_rows != len(lines):
        raise pa.ArrowInvalid("JSON reader did not return one text row per line")
    return table


def _read_parts(lines: pa.Array, fields: tuple[str, ...], first: int, done: list, rejected: list) -> None:
    """Reads ``lines``; a part the reader refuses (duplicate keys) is halved until the lines
    at fault are found and rejected."""
    try:
        done.append((first, len(lines), _read(lines, fields)))
    except pa.ArrowInvalid:
        if len(lines) == 1:
            rejected.append(first)
            return
        half = len(lines) // 2
        _read_parts(lines.slice(0, half), fields, first, done, rejected)
        _read_parts(lines.slice(half), fields, first + half, done, rejected)


def _slots(col: pa.Array) -> list[pa.Array]:
    """The four slots of one field from its marked string column.

    Marked (non-string) values are worked out on those rows alone and put back in place: a
    field that is mostly strings pays for its few numbers only.
    """
    n = len(col)
    marked = pc.fill_null(pc.starts_with(col, _MARK), False)
    null_i, null_f = pa.nulls(n, pa.int64()), pa.nulls(n, pa.float64())
    if not pc.any(marked).as_py():
        kinds = pc.if_else(pc.is_null(col), KIND_NULL, KIND_STR).cast(pa.int8())
        return [kinds, col, null_i, null_f]
    token = pc.utf8_slice_codeunits(col.filter(marked), 1)
    is_bool = pc.is_in(token, pa.array(["true", "false"]))
    is_float = pc.fill_null(pc.match_substring_regex(token, "^-?[0-9]+[.eE]"), False)
    is_int = pc.fill_null(pc.match_substring_regex(token, "^-?[0-9]+$"), False)
    ints = pc.if_else(is_int, token, _NULL_STR).cast(pa.int64())
    floats = pc.if_else(is_float, token, _NULL_STR).cast(pa.float64())
    token_kinds = np.full(len(token), KIND_NULL, dtype=np.int8)
    for kind, mask in ((KIND_INT, is_int), (KIND_FLOAT, is_float), (KIND_BOOL, is_bool)):
        token_kinds[mask.to_numpy(zero_copy_only=False)] = kind
    at = marked.to_numpy(zero_copy_only=False)
    kinds = np.where(col.is_valid().to_numpy(zero_copy_only=False), KIND_STR, KIND_NULL).astype(np.int8)
    kinds[at] = token_kinds
    token_text = pc.coalesce(ints.cast(pa.string()), floats.cast(pa.string()), pc.if_else(is_bool, token, _NULL_STR))
    return [
        pa.array(kinds),
        pc.replace_with_mask(col, marked, token_text),
        pc.replace_with_mask(null_i, marked, ints),
        pc.replace_with_mask(null_f, marked, floats),
    ]


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


def _undeclared(lines: pa.Array, fields: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The undeclared fields of a few lines, one by one: each line's JSON object of them (as
    ``orjson`` writes it) and its first undeclared name. For the rare lines the vectorised
    steps cannot write."""
    known = frozenset(fields)
    texts, firsts = [], []
    for line in lines.to_pylist():
        rest = {k: v for k, v in orjson.loads(line).items() if k not in known}
        texts.append(_dumps(rest)), firsts.append(next(iter(rest)))
    return texts, firsts


def _extras(table: pa.Table, fields: tuple[str, ...], raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``_extras`` (undeclared fields as a JSON object, as ``orjson`` writes it) and
    ``_unknown`` (the first undeclared field name)."""
    n = table.num_rows
    names = [c for c in table.column_names if c not in fields]
    if not names:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    cols = [table.column(c).combine_chunks() for c in names]
    present = np.zeros(n, dtype=np.int32)
    for col in cols:
        present += pc.is_valid(col).to_numpy(zero_copy_only=False)
    single = pa.array(present == 1)
    extras, unknown = [], []
    slow = present > 1
    for name, col in zip(names, cols):
        alone = pc.and_(single, pc.is_valid(col))
        marked = pc.fill_null(pc.starts_with(col, _MARK), False)
        token = pc.utf8_slice_codeunits(col, 1)
        # Numbers orjson would write differently (floats, -0) take the per-row path.
        odd = pc.and_(marked, pc.fill_null(pc.match_substring_regex(token, r"^-?[0-9]+[.eE]|^-0$"), False))
        slow |= pc.and_(alone, odd).to_numpy(zero_copy_only=False)
        value = pc.if_else(marked, token, pc.binary_join_element_wise('"', col, '"', ""))
        key = orjson.dumps(name).decode()
        extras.append(pc.if_else(alone, pc.binary_join_element_wise("{" + key + ":", value, "}", ""), _NULL_STR))
        unknown.append(pc.if_else(alone, pa.scalar(name), _NULL_STR))
    extras_col, unknown_col = pc.coalesce(*extras), pc.coalesce(*unknown)
    rows = np.flatnonzero(slow)
    if len(rows):
        # Several undeclared fields keep the line's key order: taken from the line itself.
        texts, firsts = _undeclared(raw.take(pa.array(rows)), fields)
        mask = pa.array(slow)
        extras_col = pc.replace_with_mask(extras_col, mask, pa.array(texts, pa.string()))
        unknown_col = pc.replace_with_mask(unknown_col, mask, pa.array(firsts, pa.string()))
    return extras_col, unknown_col


def parse_flat(raw: pa.Array, fields: tuple[str, ...]) -> tuple[pa.Table | None, np.ndarray]:
    """Parses flat lines (a binary array of lines :func:`flat_lines` accepted).

    Args:
        raw: The lines, as binary.
        fields: The declared field names.

    Returns ``(slots, rejected)``: a table of each field's four slots plus ``_extras``,
    ``_unknown`` and ``_raw`` for the lines taken, in input order (None if none was), and
    the positions of the lines left to the per-line parser.
    """
    text = raw.cast(pa.string())
    marked = pc.replace_substring_regex(text, _SCALAR, _MARKED)
    done: list = []
    rejected: list = []
    _read_parts(marked, fields, 0, done, rejected)
    parts = []
    for first, count, table in done:
        arrays, names = [], []
        for f in fields:
            arrays += _slots(table.column(f).combine_chunks())
            names += [f + ".k", f + ".s", f + ".i", f + ".f"]
        arrays += _extras(table, fields, raw.slice(first, count))
        arrays.append(text.slice(first, count))
        names += ["_extras", "_unknown", "_raw"]
        parts.append(pa.Table.from_arrays(arrays, names=names))
    slots = pa.concat_tables(parts) if parts else None
    return slots, np.array(rejected, dtype=np.int64)


def compiled() -> bool:
    """Whether the compiled scanner is in use."""
    return _flatscan is not None


def scan_flat(raw: pa.Array, fields: tuple[str, ...]) -> tuple[pa.Table | None, np.ndarray]:
    """Parses the flat lines of ``raw`` (a binary array of lines).

    Args:
        raw: The lines, as binary.
        fields: The declared field names.

    Returns ``(slots, taken)``: a table of each field's four slots plus ``_extras``,
    ``_unknown`` and ``_raw`` for the lines taken, in input order (None if none was), and the
    positions of those lines in ``raw``.
    """
    if _flatscan is None or raw.null_count:
        flat = flat_lines(raw)
        if not flat.any():
            return None, np.zeros(0, dtype=np.int64)
        every = bool(flat.all())
        slots, rejected = parse_flat(raw if every else raw.filter(pa.array(flat)), fields)
        return slots, np.delete(np.flatnonzero(flat), rejected)
    return _scan_compiled(raw, fields)


def field_slots(raw: pa.Array, field: str) -> tuple[list[pa.Array], np.ndarray] | None:
    """One field's four slots (kind, str, int, float) for the flat lines of ``raw`` (binary,
    no nulls), read by the compiled scanner as :func:`scan_flat` reads them; the other keys are
    only checked. Returns ``(slots, taken)``, the slots in the order of ``taken`` (the positions
    of the lines read), or None without the compiled scanner.
    """
    if _flatscan is None:
        return None
    offsets, data = string_buffers(raw)
    n, status, columns, _, _, _ = _flatscan.scan(data, offsets.astype(np.int64, copy=False), (field.encode(),))
    taken = np.flatnonzero(np.frombuffer(status, dtype=np.uint8))
    kinds, sbits, soffs, sdata, ibits, ints, fbits, floats, _ = columns[0]
    kind = pa.Array.from_buffers(pa.int8(), n, [None, pa.py_buffer(kinds)])
    text = _string_array(n, sbits, soffs, sdata)
    return [kind, text, _numbers(pa.int64(), n, ibits, ints), _numbers(pa.float64(), n, fbits, floats)], taken


def _string_array(n: int, bits, offsets, data) -> pa.Array:
    return pa.Array.from_buffers(pa.string(), n, [pa.py_buffer(bits), pa.py_buffer(offsets), pa.py_buffer(data)])


def _numbers(kind: pa.DataType, n: int, bits, values) -> pa.Array:
    if values is None:
        return pa.nulls(n, kind)
    return pa.Array.from_buffers(kind, n, [pa.py_buffer(bits), pa.py_buffer(values)])


def _scan_compiled(raw: pa.Array, fields: tuple[str, ...]) -> tuple[pa.Table | None, np.ndarray]:
    offsets, data = string_buffers(raw)
    n, status, columns, extras, unknown, (line_offsets, line_data) = _flatscan.scan(
        data, offsets.astype(np.int64, copy=False), tuple(f.encode() for f in fields)
    )
    status = np.frombuffer(status, dtype=np.uint8)
    if not n:
        return None, np.zeros(0, dtype=np.int64)
    taken = np.flatnonzero(status)
    arrays, names = [], []
    for f, (kinds, sbits, soffs, sdata, ibits, ints, fbits, floats, nfloat) in zip(fields, columns):
        text = _string_array(n, sbits, soffs, sdata)
        number = _numbers(pa.float64(), n, fbits, floats)
        if nfloat:  # floats' text is Arrow's, as on every other path
            text = pc.replace_with_mask(text, number.is_valid(), number.drop_null().cast(pa.string()))
        kinds = pa.Array.from_buffers(pa.int8(), n, [None, pa.py_buffer(kinds)])
        arrays += [kinds, text, _numbers(pa.int64(), n, ibits, ints), number]
        names += [f + ".k", f + ".s", f + ".i", f + ".f"]
    extras_col = _string_array(n, *extras)
    slow = np.flatnonzero(status[taken] == 2)
    if len(slow):
        # Undeclared floats: orjson writes them its own way, so it writes these objects.
        texts, _ = _undeclared(raw.take(pa.array(taken[slow])), fields)
        mask = np.zeros(n, dtype=bool)
        mask[slow] = True
        extras_col = pc.replace_with_mask(extras_col, pa.array(mask), pa.array(texts, pa.string()))
    # The scanner proved these lines valid UTF-8: no second check. Its copy of the taken lines
    # serves unless all were taken from 32-bit offsets, which the text can share.
    if n == len(raw) and pa.types.is_binary(raw.type):
        text = pa.Array.from_buffers(pa.string(), n, raw.buffers()[:3], offset=raw.offset)
    else:
        text = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(line_offsets), pa.py_buffer(line_data)])
    arrays += [extras_col, _string_array(n, *unknown), text]
    names += ["_extras", "_unknown", "_raw"]
    return pa.Table.from_arrays(arrays, names=names), taken
