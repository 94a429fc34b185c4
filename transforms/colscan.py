"""Passes over whole string columns: compiled (``_colscan.c``, built when the package is
installed) or, where no compiler was at hand, Arrow and numpy giving the same results."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from transforms import _colscan as native
except ImportError:
    native = None

__all__ = [
    "compiled",
    "iso_micros",
    "json_quote",
    "native",
    "native_strings",
    "string_array",
    "string_buffers",
    "string_stats",
]


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (``len(arr) + 1`` of them, into the data) and the data bytes of a string or
    binary array (either offset width), as numpy views: no copy."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if large else np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    data = arr.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)


def native_strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A string column as the compiled passes take it: int64 offsets, the bytes, and a byte
    per entry marking the non-null ones (None when there are no nulls)."""
    offsets, data = string_buffers(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8) if arr.null_count else None
    return offsets.astype(np.int64, copy=False), data, valid


def string_array(offsets, data, n: int, bitmap: pa.Buffer | None = None, nulls: int = 0) -> pa.Array:
    """A string array over what a compiled pass wrote (int64 offsets, bytes): ``string`` when
    the bytes fit 32-bit offsets, else ``large_string``."""
    offsets = np.frombuffer(offsets, dtype=np.int64)
    kind = pa.large_string()
    if offsets[-1] < 2**31:
        kind, offsets = pa.string(), offsets.astype(np.int32)
    return pa.Array.from_buffers(kind, n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], nulls)


def compiled() -> bool:
    """Whether the compiled passes are in use."""
    return native is not None


def string_stats(arr: pa.Array) -> tuple[str, str, int, int] | None:
    """The smallest and largest value (compared as bytes) and the fewest and most characters of
    a string array's non-null values; None when it has none."""
    if arr.null_count == len(arr):
        return None
    if native is None:
        lo, hi = pc.min_max(arr).values()
        short, long = pc.min_max(pc.utf8_length(arr)).values()
        return lo.as_py(), hi.as_py(), short.as_py(), long.as_py()
    lo, hi, short, long = native.string_stats(*native_strings(arr))
    return arr[lo].as_py(), arr[hi].as_py(), short, long


def iso_micros(text: pa.Array, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows ``where`` marks: which hold an ISO-8601 timestamp of the common shapes
    (``YYYY-MM-DD``, then ``[T ]hh:mm[:ss[.ffffff]]`` and ``Z`` or ``+hh[[:]mm]``, between ASCII
    whitespace, every field in range) and its microseconds since the epoch in UTC. Everything
    else, and every row without the compiled pass, is left to the caller (handled is False)."""
    n = len(text)
    handled = np.zeros(n, dtype=bool)
    micros = np.zeros(n, dtype=np.int64)
    if native is None or n == 0:
        return handled, micros
    if text.null_count:
        where = where & text.is_valid().to_numpy(zero_copy_only=False)
    offsets, data = string_buffers(text)
    native.iso_micros(offsets.astype(np.int64, copy=False), data, where.view(np.uint8), micros, handled.view(np.uint8))
    return handled, micros


def json_quote(strings: pa.Array) -> pa.Array | None:
    """Each string as a quoted JSON literal (null stays null), escaped as orjson escapes, in
    one compiled pass; None without the compiled pass."""
    if native is None:
        return None
    out_offsets, out_data = native.json_quote(*native_strings(strings))
    bitmap = strings.is_valid().buffers()[1] if strings.null_count else None
    return string_array(out_offsets, out_data, len(strings), bitmap, strings.null_count)
