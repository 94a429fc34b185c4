"""ValidateSchema: parsed slot tables -> typed, normalised tables plus dead letters.

Each declared field is a rule that turns its slots into one typed Arrow column and, per row,
an optional (reason, error). The first failing field of a row, in declaration order, names
its dead letter. Everything here is vectorised with ``pyarrow.compute``; only values already
known to be unusable by the vectorised parser take a per-value fallback.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.colscan import iso_micros, string_buffers
from transforms.ingest.slots import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_MISSING,
    KIND_NULL,
    KIND_OTHER,
    KIND_STR,
    KIND_TIMESTAMP,
    Slots,
)
from transforms.records import CHANGE_COLUMNS, as_array, dead_letters, iso_text, typed

__all__ = [
    "BooleanField",
    "CodeField",
    "DecimalField",
    "EnumField",
    "IdField",
    "IntegerField",
    "NumberField",
    "TextField",
    "TimestampField",
    "ValidateSchema",
]

STAGE = "validate"
MISSING_FIELD = "missing_field"
INVALID_VALUE = "invalid_value"
UNKNOWN_FIELD = "unknown_field"
POLICIES = ("additive", "strict", "discard", "freeze")
INVALID = ("evolve", "discard_row", "discard_value", "freeze")

_NUMERIC = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
# At most 18 digits: always fits int64 (longer integers take the float path and fail the range).
_INTEGER = r"^[+-]?\d{1,18}$"
_INTEGER_ANY = r"^[+-]?\d+$"
_PLAIN_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)$"
_INT64_MAX = "9223372036854775807"  # as text: 19-digit integers are compared with it
_FLOAT_INTS = 2**53  # beyond this a float64 no longer stands for one integer
_CASES = ("upper", "lower", "keep")
_TRUE_WORDS = ("true", "1", "yes", "t", "y")
_FALSE_WORDS = ("false", "0", "no", "f", "n")
_ISO = (
    r"(?i)^\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_US = pa.timestamp("us", tz="UTC")


def _mask(x) -> pa.Array:
    """A boolean array with nulls read as False."""
    return pc.fill_null(x, False)


def _kind_in(s: Slots, *kinds: int) -> pa.Array:
    if not s.has(*kinds) or s.only(*kinds):
        return pa.array(np.full(len(s.kind), s.has(*kinds)))
    return _mask(pc.is_in(s.kind, pa.array(kinds, pa.int8())))


def _matches(text: pa.Array, where: pa.Array, pattern: str) -> pa.Array:
    """Which rows of ``where`` hold text matching ``pattern`` (False elsewhere).

    The regex runs over those rows only: Arrow's kernel pays its per-string cost on null slots
    too, and a mostly-null column would cost as much as a full one.
    """
    rows = where.true_count
    if rows == len(where):
        return _mask(pc.match_substring_regex(text, pattern))
    found = np.zeros(len(where), dtype=bool)
    if rows:
        hits = _mask(pc.match_substring_regex(text.filter(where), pattern)).to_numpy(zero_copy_only=False)
        found[where.to_numpy(zero_copy_only=False)] = hits
    return pa.array(found)


def _as_float(ints: pa.Array) -> pa.Array:
    """int64 -> float64, rounding beyond 2**53 (a safe cast would raise and fail the bundle)."""
    return pc.cast(ints, pa.float64(), safe=False)


# Kinds whose text slot is the value or null: a batch of only these needs no kind tests.
_STRINGS = (KIND_STR, KIND_MISSING, KIND_NULL)


def _shown(text: pa.Array) -> pa.Array:
    """Value text for an error message, cut to a readable length."""
    return pc.fill_null(pc.utf8_slice_codeunits(text, 0, 80), "null")


class Outcome:
    """A rule's result: the typed column, and which rows are missing or invalid.

    ``text`` and ``what`` make the error message; it is built only for failing rows.
    """

    __slots__ = ("value", "missing", "invalid", "text", "what")

    def __init__(self, value: pa.Array, missing: pa.Array | None, invalid: pa.Array | None, text, what: str):
        self.value, self.missing, self.invalid, self.text, self.what = value, missing, invalid, text, what


def _outcome(name: str, value: pa.Array, missing, invalid, text, what: str) -> Outcome:
    """Nulls the value where the row failed (missing wins over invalid)."""
    missing = _mask(missing) if missing is not None else None
    invalid = _mask(invalid) if invalid is not None else None
    failed = missing if invalid is None else invalid if missing is None else pc.or_(missing, invalid)
    if failed is not None:
        value = pc.if_else(failed, pa.scalar(None, value.type), value)
    return Outcome(value, missing, invalid, text, what)


def _absent(s: Slots) -> pa.Array:
    return _kind_in(s, KIND_MISSING, KIND_NULL)


def _missing(required: bool, default, absent: pa.Array) -> pa.Array | None:
    """The rows a required field lacks: absent or null, with no default to stand in."""
    return absent if required and default is None else None


def _defaulted(value: pa.Array, absent: pa.Array, default) -> pa.Array:
    """``value`` with ``default`` where the field is absent or null (unchanged without one)."""
    if default is None or not absent.true_count:
        return value
    return pc.if_else(absent, pa.scalar(default, value.type), value)


def _display(s: Slots):
    """The value text for error messages; typed timestamps carry no text slot, so theirs is
    formatted for the failing rows only."""
    if not s.has(KIND_TIMESTAMP):
        return s.text

    def shown(rows: pa.Array) -> pa.Array:
        as_ts = iso_text(s.int.take(rows).cast(_US))
        return pc.if_else(pc.equal(s.kind.take(rows), KIND_TIMESTAMP), as_ts, s.text.take(rows))

    return shown


def _bounds_text(minimum, maximum) -> str:
    """The bounds part of an error message: ' >= 0 and <= 10', or '' without bounds."""
    parts = [f">= {_num_text(minimum)}"] if minimum is not None else []
    parts += [f"<= {_num_text(maximum)}"] if maximum is not None else []
    return (" " + " and ".join(parts)) if parts else ""


def _num_text(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class IdField:
    """Required identifier: a non-empty string (trimmed) or an integer; stored as string."""

    name: str

    def apply(self, s: Slots, done: dict) -> Outcome:
        trimmed = pc.utf8_trim_whitespace(s.text)
        what = "must be a non-empty string or integer"
        if s.only(*_STRINGS):
            invalid = pc.equal(pc.utf8_length(trimmed), 0)
            return _outcome(self.name, trimmed, _kind_in(s, KIND_MISSING, KIND_NULL), invalid, s.text, what)
        is_str = _kind_in(s, KIND_STR)
        ok_str = _mask(pc.and_(is_str, pc.greater(pc.utf8_length(trimmed), 0)))
        is_int = _kind_in(s, KIND_INT)
        value = pc.if_else(is_str, trimmed, pc.if_else(is_int, s.text, pa.scalar(None, pa.string())))
        missing = _kind_in(s, KIND_MISSING, KIND_NULL)
        invalid = pc.invert(pc.or_(missing, pc.or_(ok_str, is_int)))
        return _outcome(self.name, value, missing, invalid, s.text, what)


@dataclass(frozen=True)
class EnumField:
    """A string from a fixed set, matched case-insensitively, stored lower case.

    Absent or null means ``default`` (one of ``values``), else a missing field when
    ``required``, else null.
    """

    name: str
    values: tuple[str, ...]
    required: bool = True
    default: str | None = None

    def __post_init__(self):
        if self.default is not None and self.default.strip().lower() not in self.values:
            raise ValueError(f"{self.name}: default {self.default!r} is not one of {', '.join(self.values)}")

    def apply(self, s: Slots, done: dict) -> Outcome:
        value = pc.utf8_lower(pc.utf8_trim_whitespace(s.text))
        ok = pc.is_in(value, pa.array(self.values))
        if not s.only(*_STRINGS):
            ok = _mask(pc.and_(_kind_in(s, KIND_STR), ok))
        absent = _absent(s)
        invalid = pc.invert(pc.or_(absent, ok))
        default = None if self.default is None else self.default.strip().lower()
        value = _defaulted(value, absent, default)
        missing = _missing(self.required, self.default, absent)
        return _outcome(self.name, value, missing, invalid, s.text, "must be one of " + "|".join(self.values))


@dataclass(frozen=True)
class NumberField:
    """A number or numeric string within ``[minimum, maximum]`` (both inclusive, either may be
    None), rounded half away from zero to ``decimals`` places (None: not rounded).

    Absent or null means ``default``, else a missing field when ``required``, else null.
    ``required_if`` is ``(other_field, values)``: null is a missing field when the other
    (earlier) field's normalised value is one of ``values``.
    """

    name: str
    minimum: float | None = 0.0
    decimals: int | None = 2
    required_if: tuple[str, tuple[str, ...]] | None = None
    maximum: float | None = None
    required: bool = False
    default: float | None = None

    def __post_init__(self):
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"{self.name}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.default is not None and not (
            math.isfinite(self.default) and _within(self.default, self.minimum, self.maximum)
        ):
            raise ValueError(f"{self.name}: default {self.default} is not a finite number within the bounds")

    def apply(self, s: Slots, done: dict) -> Outcome:
        if s.only(KIND_FLOAT, KIND_MISSING, KIND_NULL):
            number = s.float
        else:
            if s.has(KIND_STR):
                trimmed = pc.utf8_trim_whitespace(s.text)
                numeric_str = _matches(trimmed, _kind_in(s, KIND_STR), _NUMERIC)
                from_str = pc.if_else(numeric_str, trimmed, pa.scalar(None, pa.string())).cast(pa.float64())
            else:
                from_str = pa.nulls(len(s.kind), pa.float64())
            number = pc.if_else(
                _kind_in(s, KIND_FLOAT),
                s.float,
                # Integers beyond 64 bits keep only their float value.
                pc.if_else(_kind_in(s, KIND_INT), pc.coalesce(_as_float(s.int), s.float), from_str),
            )
        ok = _mask(pc.is_finite(number))
        if self.minimum is not None:
            ok = _mask(pc.and_(ok, pc.greater_equal(number, self.minimum)))
        if self.maximum is not None:
            ok = _mask(pc.and_(ok, pc.less_equal(number, self.maximum)))
        absent = _kind_in(s, KIND_MISSING, KIND_NULL)
        if self.default is not None:
            missing = None
            number = _defaulted(number, absent, float(self.default))
        elif self.required:
            missing = absent
        elif self.required_if is not None:
            other, values = self.required_if
            missing = _mask(pc.and_(absent, pc.is_in(done[other], pa.array(values))))
        else:
            missing = None
        invalid = pc.invert(pc.or_(absent, ok))
        value = number if self.decimals is None else _round(number, self.decimals)
        what = "must be a finite number" + _bounds_text(self.minimum, self.maximum)
        return _outcome(self.name, value, missing, invalid, s.text, what)


def _round(number: pa.Array, decimals: int) -> pa.Array:
    """Rounded half away from zero. From 2**52 up a float64 holds no fraction, so it is kept as
    it is: Arrow scales by 10**decimals first, which overflows for the largest values."""
    if decimals < 0:
        return pc.round(number, decimals, round_mode="half_towards_infinity")
    whole = _mask(pc.greater_equal(pc.abs(number), float(2**52)))
    if not whole.true_count:
        return pc.round(number, decimals, round_mode="half_towards_infinity")
    rounded = pc.round(pc.if_else(whole, 0.0, number), decimals, round_mode="half_towards_infinity")
    return pc.if_else(whole, number, rounded)


def _within(x, minimum, maximum) -> bool:
    return (minimum is None or x >= minimum) and (maximum is None or x <= maximum)


@dataclass(frozen=True)
class CodeField:
    """A code matching ``pattern`` (trimmed), then upper-cased, lower-cased or kept as it is
    (``case``). Absent or null means ``default``, else a missing field when ``required``,
    else null."""

    name: str
    pattern: str
    default: str | None = None
    case: str = "upper"
    required: bool = False

    def __post_init__(self):
        if self.case not in _CASES:
            raise ValueError(f"{self.name}: case must be one of {', '.join(_CASES)}, got {self.case!r}")

    def apply(self, s: Slots, done: dict) -> Outcome:
        trimmed = pc.utf8_trim_whitespace(s.text)
        ok = pc.match_substring_regex(trimmed, self.pattern)
        ok = _mask(ok if s.only(*_STRINGS) else pc.and_(_kind_in(s, KIND_STR), ok))
        absent = _kind_in(s, KIND_MISSING, KIND_NULL)
        cased = {"upper": pc.utf8_upper, "lower": pc.utf8_lower}.get(self.case, lambda x: x)(trimmed)
        value = pc.if_else(absent, pa.scalar(self.default, pa.string()), cased)
        invalid = pc.invert(pc.or_(absent, ok))
        missing = _missing(self.required, self.default, absent)
        return _outcome(self.name, value, missing, invalid, s.text, f"must match {self.pattern}")


def _parse_iso(text: pa.Array) -> pa.Array:
    """ISO-8601 strings (already checked against the pattern) -> timestamp[us, UTC].

    With an offset or Z: converted to UTC; without: taken as UTC. Values the vectorised
    cast refuses (a 30th of February, more than 6 fractional digits) are tried one by one.
    """
    norm = pc.ascii_upper(text)  # the pattern admits ASCII only
    has_offset = _has_offset(norm)
    try:
        return _cast_iso(norm, has_offset)
    except pa.ArrowInvalid:
        pass
    try:  # more than 6 fractional digits: Arrow's parser takes at most the unit's
        return _cast_iso(pc.replace_substring_regex(norm, r"(\.\d{6})\d+", r"\1"), has_offset)
    except pa.ArrowInvalid:
        return pa.array([_parse_iso_one(v) for v in text.to_pylist()], _US)


def _has_offset(iso: pa.Array) -> pa.Array:
    """Which ISO-8601 strings (upper case, already matched against ``_ISO``) carry an offset.

    After the date only an offset holds Z, + or -: the last byte is Z, or a sign stands 3, 5
    or 6 bytes from the end (+HH, +HHMM, +HH:MM). A few numpy gathers instead of a regex pass.
    """
    n = len(iso)
    if n == 0 or iso.null_count == n:
        return pa.array(np.zeros(n, dtype=bool))
    bounds, data = string_buffers(iso)
    starts, ends = bounds[:-1], bounds[1:]
    filled = ends > starts
    last = data[np.where(filled, ends - 1, 0)]
    found = filled & (last == ord("Z"))
    for back in (3, 5, 6):
        at = ends - back
        inside = at >= starts + 10
        sign = data[np.where(inside, at, 0)]
        found |= inside & ((sign == ord("+")) | (sign == ord("-")))
    if iso.null_count:
        found &= iso.is_valid().to_numpy(zero_copy_only=False)
    return pa.array(found)


def _cast_iso(norm: pa.Array, has_offset: pa.Array) -> pa.Array:
    null_str = pa.scalar(None, pa.string())
    aware = pc.if_else(has_offset, norm, null_str).cast(_US)
    naive = pc.if_else(has_offset, null_str, norm).cast(pa.timestamp("us"))
    return pc.if_else(has_offset, aware, naive.cast(pa.int64()).cast(_US))


_OFFSET_MINUTES = re.compile(r"[+-]\d{2}:?(\d{2})$")


def _parse_iso_one(value: str | None) -> datetime | None:
    if value is None:
        return None
    zone = _OFFSET_MINUTES.search(value)
    if zone and int(zone.group(1)) > 59:  # fromisoformat carries +05:60 over to +06:00
        return None
    try:
        dt = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset moved it past year 1 or 9999
        return None


def _instant(name: str, iso: str) -> datetime:
    """An ISO-8601 bound or default as an aware UTC datetime (no offset means UTC)."""
    try:
        dt = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {iso!r} is not an ISO-8601 timestamp") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _day_text(iso: str) -> str:
    """A bound as an error message shows it: the date alone when it is a UTC midnight."""
    dt = datetime.fromisoformat(iso)
    if (dt.tzinfo is None or dt.utcoffset() == timedelta(0)) and dt.time() == time(0):
        return dt.date().isoformat()
    return iso


@dataclass(frozen=True)
class TimestampField:
    """Event time: ISO-8601 (offset or Z; none means UTC), epoch seconds, or epoch
    milliseconds (integers >= ``millis_from``), within ``[minimum, maximum)`` (ISO-8601; none
    means UTC).

    Absent or null means ``default`` (ISO-8601), else a missing field when ``required``, else
    null.
    """

    name: str
    minimum: str = "2000-01-01T00:00:00+00:00"
    maximum: str = "2100-01-01T00:00:00+00:00"
    millis_from: int = 10**11
    required: bool = True
    default: str | None = None

    def __post_init__(self):
        lo, hi = _instant(self.name, self.minimum), _instant(self.name, self.maximum)
        if lo >= hi:
            raise ValueError(f"{self.name}: minimum {self.minimum} is not before maximum {self.maximum}")
        if self.default is not None and not lo <= _instant(self.name, self.default) < hi:
            raise ValueError(f"{self.name}: default {self.default} is outside [minimum, maximum)")

    def apply(self, s: Slots, done: dict) -> Outcome:
        lo = _instant(self.name, self.minimum).timestamp() * 1e6
        hi = _instant(self.name, self.maximum).timestamp() * 1e6
        absent = _kind_in(s, KIND_MISSING, KIND_NULL)
        what = (
            "must be ISO-8601 or epoch seconds/milliseconds within "
            f"[{_day_text(self.minimum)}, {_day_text(self.maximum)})"
        )
        value, in_range = self._micros(s, lo, hi)
        invalid = pc.invert(pc.or_(absent, in_range))
        if self.default is not None:
            value = _defaulted(value, absent, _instant(self.name, self.default))
        return _outcome(self.name, value, _missing(self.required, self.default, absent), invalid, _display(s), what)

    def _micros(self, s: Slots, lo: float, hi: float) -> tuple[pa.Array, pa.Array]:
        """The instants within ``[lo, hi)`` microseconds (null elsewhere), and which rows they are."""
        if s.only(KIND_TIMESTAMP, KIND_MISSING, KIND_NULL):  # typed sources: already epoch microseconds
            in_range = _mask(pc.and_(pc.greater_equal(s.int, int(lo)), pc.less(s.int, int(hi))))
            return pc.if_else(in_range, s.int, pa.scalar(None, pa.int64())).cast(_US), in_range
        trimmed = pc.utf8_trim_whitespace(s.text)
        is_str = _kind_in(s, KIND_STR)
        null_str = pa.scalar(None, pa.string())
        # The common ISO shapes are parsed in one compiled pass; Arrow takes the rest.
        fast, fast_micros = iso_micros(s.text, is_str.to_numpy(zero_copy_only=False))
        slow = pc.and_not(is_str, pa.array(fast)) if fast.any() else is_str
        iso_str = _matches(trimmed, slow, _ISO)
        slow_iso = iso_str
        if fast.any():
            iso_str = pc.or_(iso_str, pa.array(fast))
        # Each source of a value (ISO string, typed timestamp, integer, float) is worked out
        # only when the batch holds it; a JSON batch is mostly ISO strings and integers.
        # A date has '-' between digits, so no ISO string is numeric: the rest only are tried.
        non_iso = pc.and_not(is_str, iso_str)
        if non_iso.true_count:
            int_str = _matches(trimmed, non_iso, _INTEGER)
            float_str = pc.and_not(_matches(trimmed, non_iso, _NUMERIC), int_str)
        else:
            int_str = float_str = None
        # Integers (numbers or integer strings): seconds, or milliseconds when large.
        as_int = None
        if int_str is not None and int_str.true_count:
            # Arrow's integer parser refuses a leading "+".
            parsed = pc.replace_substring_regex(pc.if_else(int_str, trimmed, null_str), r"^\+", "").cast(pa.int64())
            as_int = pc.if_else(_kind_in(s, KIND_INT), s.int, parsed)
        elif s.has(KIND_INT):
            as_int = pc.if_else(_kind_in(s, KIND_INT), s.int, pa.scalar(None, pa.int64()))
        # Floats (numbers or non-integer numeric strings): seconds.
        as_float = None
        if float_str is not None and float_str.true_count:
            as_float = pc.if_else(
                _kind_in(s, KIND_FLOAT), s.float, pc.if_else(float_str, trimmed, null_str).cast(pa.float64())
            )
        elif s.has(KIND_FLOAT):
            as_float = pc.if_else(_kind_in(s, KIND_FLOAT), s.float, pa.scalar(None, pa.float64()))
        n = len(s.kind)
        micros_f = pc.multiply(as_float, 1e6) if as_float is not None else pa.nulls(n, pa.float64())
        if as_int is not None:
            int_is_ms = _mask(pc.greater_equal(as_int, self.millis_from))
            scaled = pc.multiply(_as_float(as_int), pc.if_else(int_is_ms, 1e3, 1e6))
            micros_f = pc.if_else(pc.is_valid(as_int), scaled, micros_f)
        is_ts = _kind_in(s, KIND_TIMESTAMP) if s.has(KIND_TIMESTAMP) else None
        if is_ts is not None:
            micros_f = pc.if_else(is_ts, _as_float(s.int), micros_f)
        iso = None
        if slow_iso.true_count:
            iso = _parse_iso(pc.if_else(slow_iso, trimmed, null_str)).cast(pa.int64())
        if fast.any():
            fast_iso = pa.array(fast_micros, mask=~fast)
            iso = fast_iso if iso is None else pc.if_else(fast, fast_iso, iso)
        if iso is not None:
            micros_f = pc.if_else(pc.is_valid(iso), _as_float(iso), micros_f)
        in_range = _mask(pc.and_(pc.greater_equal(micros_f, lo), pc.less(micros_f, hi)))
        # Exact integer arithmetic where the input was an integer: no float rounding.
        if as_float is not None:
            exact = pc.round(pc.if_else(in_range, micros_f, 0.0)).cast(pa.int64())
            # A float just below the maximum can round up onto it: the range is checked again.
            in_range = _mask(pc.and_(in_range, pc.less(exact, int(hi))))
        else:
            exact = pa.nulls(n, pa.int64())
        if as_int is not None:
            exact = pc.if_else(pc.is_valid(as_int), pc.multiply(as_int, pc.if_else(int_is_ms, 1000, 1_000_000)), exact)
        if is_ts is not None:
            exact = pc.if_else(is_ts, s.int, exact)
        if iso is not None:
            exact = pc.if_else(pc.is_valid(iso), iso, exact)
        return pc.if_else(in_range, exact, pa.scalar(None, pa.int64())).cast(_US), in_range


@dataclass(frozen=True)
class TextField:
    """Free text; non-string values keep their text form for later cleansing. Absent or null
    means ``default``, else a missing field when ``required``, else null."""

    name: str
    required: bool = False
    default: str | None = None

    def apply(self, s: Slots, done: dict) -> Outcome:
        if not self.required and self.default is None:
            return Outcome(s.text, None, None, s.text, "")
        absent = _absent(s)
        value = _defaulted(s.text, absent, self.default)
        return Outcome(value, _missing(self.required, self.default, absent), None, s.text, "")


def _byte_set(chars: str) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(chars.encode())] = True
    return table


_INT_BYTES = _byte_set("0123456789-")
_PLAIN_BYTES = _byte_set("0123456789+-.")


def _only_bytes(text: pa.Array, allowed: np.ndarray) -> bool:
    """Whether the strings hold no byte but ``allowed`` ones: a numpy pass over the bytes that
    lets a cast stand in for a regex pass (on these bytes Arrow's parser takes no shape the
    rule's pattern refuses)."""
    offsets, data = string_buffers(text)
    return len(text) == 0 or bool(allowed[data[offsets[0] : offsets[-1]]].all())


def _among(text: pa.Array, where: pa.Array) -> pa.Array:
    """``text`` on the rows of ``where``, null elsewhere."""
    if not pc.and_not(pc.is_valid(text), where).true_count:  # already null outside ``where``
        return text
    return pc.if_else(where, text, pa.scalar(None, pa.string()))


def _int_text(text: pa.Array, where: pa.Array) -> pa.Array:
    """Integer strings (trimmed, optional sign, any number of digits) among ``where`` -> their
    int64 values, null where the text is no integer or the value is beyond 64 bits.

    A batch of plain integer text fitting int64, the usual case, is one cast. Otherwise beyond
    18 significant digits a value may not fit: a 19-digit one is compared as text with the
    int64 limit, a longer one never fits.
    """
    candidates = _among(text, where)
    if _only_bytes(candidates, _INT_BYTES):
        try:
            return candidates.cast(pa.int64())
        except pa.ArrowInvalid:  # a value beyond int64, or a stray sign: decided below
            pass
    text = pc.utf8_trim_whitespace(text)
    is_int = _matches(text, where, _INTEGER_ANY)
    null_str = pa.scalar(None, pa.string())
    if not is_int.true_count:
        return pa.nulls(len(text), pa.int64())
    candidates = pc.if_else(is_int, text, null_str)
    digits = pc.utf8_ltrim(candidates, characters="+-0")  # sign and leading zeros off
    width = pc.utf8_length(digits)
    fits = pc.less_equal(width, 18)
    if pc.any(pc.greater(width, 18)).as_py():
        negative = pc.starts_with(candidates, "-")
        limit = pc.if_else(negative, _INT64_MAX[:-1] + "8", _INT64_MAX)
        fits = pc.or_(fits, pc.and_(pc.equal(width, 19), pc.less_equal(digits, limit)))
    # Arrow's integer parser refuses a leading "+" (and takes leading zeros).
    return pc.if_else(fits, pc.utf8_ltrim(candidates, characters="+"), null_str).cast(pa.int64())


@dataclass(frozen=True)
class IntegerField:
    """An integer within the ``bits`` (64 or 32) signed range and ``[minimum, maximum]`` (both
    inclusive, either may be None); stored as int64 or int32.

    Accepts JSON integers, typed integer columns of any width, integer strings (trimmed, an
    optional sign, digits only: ``"1e2"`` and ``"3.0"`` are not integer strings), and floats
    that hold a whole number of at most 2**53 in magnitude (``3.0``): JSON Schema's
    ``integer`` takes such numbers, and a typed integer column with nulls often arrives as
    float64 (pandas). A float with a fractional part, or beyond 2**53 (where a float64 no
    longer stands for one integer), is an invalid value, as is a boolean.

    Absent or null means ``default``, else a missing field when ``required``, else null.
    """

    name: str
    bits: int = 64
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False
    default: int | None = None

    def __post_init__(self):
        if self.bits not in (32, 64):
            raise ValueError(f"{self.name}: bits must be 32 or 64, got {self.bits!r}")
        lo, hi = self._range()
        if lo > hi:
            raise ValueError(f"{self.name}: no {self.bits}-bit integer lies within [{self.minimum}, {self.maximum}]")
        if self.default is not None and (type(self.default) is not int or not lo <= self.default <= hi):
            raise ValueError(f"{self.name}: default {self.default!r} is not an integer within [{lo}, {hi}]")

    def _range(self) -> tuple[int, int]:
        """The accepted range: the bit width's, narrowed by the bounds."""
        lo, hi = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        if self.minimum is not None:
            lo = max(lo, self.minimum)
        if self.maximum is not None:
            hi = min(hi, self.maximum)
        return lo, hi

    def apply(self, s: Slots, done: dict) -> Outcome:
        n = len(s.kind)
        if s.only(KIND_INT, KIND_MISSING, KIND_NULL):  # typed integer columns, JSON integers
            number = s.int
        else:
            number = pa.nulls(n, pa.int64())
            if s.has(KIND_STR):
                number = _int_text(s.text, _kind_in(s, KIND_STR))
            if s.has(KIND_INT):
                number = pc.if_else(_kind_in(s, KIND_INT), s.int, number)
            if s.has(KIND_FLOAT):
                whole = _mask(
                    pc.and_(pc.equal(pc.floor(s.float), s.float), pc.less_equal(pc.abs(s.float), _FLOAT_INTS))
                )
                from_float = pc.if_else(whole, s.float, pa.scalar(None, pa.float64())).cast(pa.int64())
                number = pc.if_else(_kind_in(s, KIND_FLOAT), from_float, number)
        lo, hi = self._range()
        ok = _mask(pc.and_(pc.greater_equal(number, lo), pc.less_equal(number, hi)))
        absent = _absent(s)
        invalid = pc.invert(pc.or_(absent, ok))
        out = pa.int64() if self.bits == 64 else pa.int32()
        value = pc.if_else(ok, number, pa.scalar(None, pa.int64())).cast(out)
        value = _defaulted(value, absent, self.default)
        what = f"must be a {self.bits}-bit integer" + _bounds_text(self.minimum, self.maximum)
        return _outcome(self.name, value, _missing(self.required, self.default, absent), invalid, _display(s), what)


@dataclass(frozen=True)
class BooleanField:
    """A boolean: JSON true/false, typed boolean columns, the strings true/false, 1/0, yes/no,
    t/f and y/n in any case (trimmed), and the integers 1/0. Anything else (a float, another
    integer, an empty string) is an invalid value.

    Absent or null means ``default``, else a missing field when ``required``, else null.
    """

    name: str
    required: bool = False
    default: bool | None = None

    def __post_init__(self):
        if self.default is not None and type(self.default) is not bool:
            raise ValueError(f"{self.name}: default must be true or false, got {self.default!r}")

    def apply(self, s: Slots, done: dict) -> Outcome:
        absent = _absent(s)
        if s.only(KIND_BOOL, KIND_MISSING, KIND_NULL):  # JSON and typed booleans: "true"/"false"
            is_true = pc.equal(s.text, "true")
            ok = pc.invert(absent)
        else:
            # Integers' text slots hold their digits: one test of the text serves every kind
            # but floats, whose text ("1") must not pass. The words are ASCII, so ASCII case
            # folding decides as Unicode folding would.
            words = pc.ascii_lower(pc.utf8_trim_whitespace(s.text))
            is_true = _mask(pc.is_in(words, pa.array(_TRUE_WORDS)))
            ok = pc.or_(is_true, _mask(pc.is_in(words, pa.array(_FALSE_WORDS))))
            if s.has(KIND_FLOAT):
                ok = pc.and_not(ok, _kind_in(s, KIND_FLOAT))
        invalid = pc.invert(pc.or_(absent, ok))
        value = _defaulted(pc.if_else(ok, is_true, pa.scalar(None, pa.bool_())), absent, self.default)
        what = "must be true/false, 1/0, yes/no, t/f or y/n"
        return _outcome(self.name, value, _missing(self.required, self.default, absent), invalid, _display(s), what)


def _decimal_of(name: str, what: str, x, precision: int, scale: int) -> Decimal:
    """A bound or default as a Decimal the column type holds exactly (ValueError otherwise)."""
    try:
        d = Decimal(str(x)) if not isinstance(x, Decimal) else x
    except InvalidOperation:
        raise ValueError(f"{name}: {what} {x!r} is not a number") from None
    if not d.is_finite() or _decimal_one(d, precision, scale) != d:
        raise ValueError(f"{name}: {what} {x!r} does not fit decimal({precision}, {scale}) exactly")
    return d


def _decimal_text(text: str) -> Decimal:
    """A numeric string (matched against ``_NUMERIC``) as an exact Decimal. Exponents beyond
    what ``Decimal`` reads ("1e99999999999999999999") are applied to the digits here: the
    value is then far too large for any decimal128, or rounds to zero."""
    digits, _, exponent = text.lower().partition("e")
    d = Decimal(digits)
    if not exponent or d.is_zero():
        return d
    sign, coefficient, exp = d.as_tuple()
    shift = int(exponent)
    if d.adjusted() + shift > 100:
        return Decimal(f"{'-' if sign else ''}1e101")
    if d.adjusted() + shift < -100:
        return Decimal(0)
    return Decimal((sign, coefficient, exp + shift))


def _decimal_one(d: Decimal, precision: int, scale: int) -> Decimal | None:
    """One value rounded half away from zero to ``scale`` places; None if it then has more
    than ``precision - scale`` integer digits."""
    if not d.is_finite() or (not d.is_zero() and d.adjusted() >= precision - scale):
        return None
    rounded = d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=Context(prec=precision + 2))
    return rounded if abs(rounded) < Decimal(10) ** (precision - scale) else None


def _rounded(text: pa.Array, precision: int, scale: int, wide: pa.DataType) -> pa.Array:
    """Plain numeric strings -> decimal128(precision, scale), rounded half away from zero; null
    where the value then has too many integer digits.

    ``wide`` has one more decimal than ``scale`` and room for every value's integer digits plus
    a carry out of the rounding (Arrow's decimal round gives 0 when its result needs more
    digits than the type holds). Arrow's unchecked cast to it cuts further decimals off towards
    zero, which leaves the one decimal that decides a rounding half away from zero.
    """
    rounded = pc.round(text.cast(wide, safe=False), scale, round_mode="half_towards_infinity")
    fits = _mask(pc.less(pc.abs(rounded), pa.scalar(Decimal(10) ** (precision - scale), wide)))
    out = pa.decimal128(precision, scale)
    return pc.if_else(fits, rounded.cast(out, safe=False), pa.scalar(None, out))


def _decimals(text: pa.Array, where: pa.Array, precision: int, scale: int) -> pa.Array:
    """Numeric strings (trimmed) among ``where`` -> decimal128(precision, scale), rounded half
    away from zero; null where the text is not numeric or the value too large.

    Plain numbers (no exponent) of at most 38 significant digits, the usual case, are cast by
    Arrow straight from their text, so "19.99" is exactly 19.99: with at most ``scale``
    decimals to the type itself, with more through :func:`_rounded`. A batch of only short
    plain numbers takes one of those two casts whole. The rest (exponents, very long numbers,
    leading zeros that make a number look too long) go through ``decimal.Decimal`` one by one.
    """
    n = len(text)
    out = pa.decimal128(precision, scale)
    null_str = pa.scalar(None, pa.string())
    candidates = _among(text, where)
    # Short plain text, the usual batch: Arrow's parser cannot overflow on at most 38
    # characters, takes no shape the pattern refuses on these bytes, and its checked cast
    # refuses any value the type does not hold exactly. A refused cast costs three good ones,
    # so more decimals than the scale, its common cause, is ruled out first.
    length = pc.binary_length(candidates)
    longest = pc.max(length).as_py() or 0
    if longest <= 38 and _only_bytes(candidates, _PLAIN_BYTES):
        dot = pc.find_substring(candidates, ".")
        decimals = pc.if_else(pc.less(dot, 0), 0, pc.subtract(pc.subtract(length, dot), 1))
        try:
            if (pc.max(decimals).as_py() or 0) <= scale:
                return candidates.cast(out)
            if precision <= 36 and longest <= 36 - scale:
                return _rounded(candidates, precision, scale, pa.decimal128(38, scale + 1))
        except pa.ArrowInvalid:  # too many digits or a stray sign: decided below
            pass
    text = pc.utf8_trim_whitespace(text)
    plain = _matches(text, where, _PLAIN_NUMBER)
    rest = pc.and_not(where, plain)
    numeric = pc.or_(plain, _matches(text, rest, _NUMERIC)) if rest.true_count else plain
    value = pa.nulls(n, out)
    if plain.true_count:
        body = pc.utf8_ltrim(pc.if_else(plain, text, null_str), characters="+-0")  # no sign, no leading zeros
        width = pc.utf8_length(body)
        dot = pc.find_substring(body, ".")
        has_dot = pc.greater_equal(dot, 0)
        int_digits = pc.if_else(has_dot, dot, width)
        frac_digits = pc.if_else(has_dot, pc.subtract(pc.subtract(width, dot), 1), 0)
        fast = _mask(
            pc.and_(
                pc.less_equal(int_digits, precision - scale),
                pc.less_equal(pc.add(int_digits, frac_digits), 38),
            )
        )
        exact = _mask(pc.and_(fast, pc.less_equal(frac_digits, scale)))
        if exact.true_count:
            value = pc.if_else(exact, text, null_str).cast(out)
        longer = pc.and_not(fast, exact)
        if longer.true_count:
            wide = (pa.decimal128 if precision + 2 <= 38 else pa.decimal256)(precision + 2, scale + 1)
            value = pc.if_else(longer, _rounded(pc.if_else(longer, text, null_str), precision, scale, wide), value)
        slow = pc.or_(pc.and_not(plain, fast), pc.and_not(numeric, plain))
    else:
        slow = numeric
    if slow.true_count:
        rows = np.flatnonzero(slow.to_numpy(zero_copy_only=False))
        found = [_decimal_one(_decimal_text(t), precision, scale) for t in text.take(pa.array(rows)).to_pylist()]
        value = pc.replace_with_mask(value, slow, pa.array(found, out))
    return value


@dataclass(frozen=True)
class DecimalField:
    """An exact decimal (money): a number or numeric string -> decimal128(precision, scale),
    within ``[minimum, maximum]`` (both inclusive, either may be None).

    Values are converted from their text, never through float64, so "19.99" is exactly 19.99
    and "1e2" exactly 100.00. A value with more than ``scale`` decimals is rounded half away
    from zero ("-0.005" -> -0.01 at scale 2); one with more than ``precision - scale``
    integer digits after rounding is an invalid value. JSON numbers carry their text too,
    but as float64 wrote it back (the shortest text that reads as the same float64): exactly
    what the line held for numbers of at most 15 significant digits; integers of any length
    stay exact. Typed decimal and integer columns are read from their exact text. Booleans are
    invalid values.

    Absent or null means ``default``, else a missing field when ``required``, else null.
    """

    name: str
    precision: int = 18
    scale: int = 2
    minimum: Decimal | float | int | str | None = None
    maximum: Decimal | float | int | str | None = None
    required: bool = False
    default: Decimal | float | int | str | None = None

    def __post_init__(self):
        if not (type(self.precision) is int and 1 <= self.precision <= 38):
            raise ValueError(f"{self.name}: precision must be an integer from 1 to 38, got {self.precision!r}")
        if not (type(self.scale) is int and 0 <= self.scale <= self.precision):
            raise ValueError(f"{self.name}: scale must be an integer from 0 to precision, got {self.scale!r}")
        lo, hi, default = self._constants()
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{self.name}: minimum {self.minimum} is above maximum {self.maximum}")
        if default is not None and not _within(default, lo, hi):
            raise ValueError(f"{self.name}: default {self.default} is outside the bounds")

    def _constants(self) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        return tuple(
            None if x is None else _decimal_of(self.name, what, x, self.precision, self.scale)
            for what, x in (("minimum", self.minimum), ("maximum", self.maximum), ("default", self.default))
        )

    def apply(self, s: Slots, done: dict) -> Outcome:
        out = pa.decimal128(self.precision, self.scale)
        lo, hi, default = self._constants()
        # Strings, integers and floats are all read from their text slot.
        if s.only(KIND_STR, KIND_INT, KIND_FLOAT, KIND_MISSING, KIND_NULL):
            where = pc.invert(_absent(s))
        else:
            where = _kind_in(s, KIND_STR, KIND_INT, KIND_FLOAT)
        value = _decimals(s.text, where, self.precision, self.scale)
        ok = pc.is_valid(value)
        if lo is not None:
            ok = _mask(pc.and_(ok, pc.greater_equal(value, pa.scalar(lo, out))))
        if hi is not None:
            ok = _mask(pc.and_(ok, pc.less_equal(value, pa.scalar(hi, out))))
        absent = _absent(s)
        invalid = pc.invert(pc.or_(absent, ok))
        value = _defaulted(value, absent, default)
        digits = self.precision - self.scale
        what = f"must be a number{_bounds_text(self.minimum, self.maximum)} with at most {digits} integer digits"
        return _outcome(self.name, value, _missing(self.required, self.default, absent), invalid, _display(s), what)


_OK, _MISSING, _INVALID, _UNKNOWN = 0, 1, 2, 3
_REASONS = {_MISSING: MISSING_FIELD, _INVALID: INVALID_VALUE, _UNKNOWN: UNKNOWN_FIELD}


class ContractViolation(ValueError):
    """A record broke a frozen contract: the run must stop (policy or ``invalid`` ``freeze``)."""


def validate_table(
    parsed: pa.Table, rules: tuple, policy: str, invalid="discard_row", counts: dict | None = None
) -> tuple[pa.Table, pa.Table]:
    """Applies the rules to one parsed slot table: (valid rows, dead letters).

    ``invalid`` (one policy, or a mapping of field name to policy with ``discard_row`` for the
    fields it lacks) says what a value unusable as its field's type does: ``discard_row`` (the
    record is a dead letter), ``discard_value`` (nulled and counted in ``counts`` as
    ``quality.discarded_value.<field>``), ``evolve`` (nulled, the value kept in ``extras`` under
    the field's name, counted as ``quality.evolved_value.<field>``) or ``freeze``
    (ContractViolation). A required field's record is a dead letter under discard_value and
    evolve. ``counts`` also gets ``quality.discarded_fields`` under policy ``discard``.
    """
    n = parsed.num_rows
    done: dict[str, pa.Array] = {}
    outcomes: list[Outcome] = []
    variants: list[tuple[str, np.ndarray]] = []  # (field, rows) whose unusable value evolve keeps
    # Per row: the first failure's kind and the index of the rule that failed.
    code = np.zeros(n, dtype=np.int8)
    which = np.full(n, -1, dtype=np.int16)
    # A change stream's deletes carry only the old image's columns (the key, by default).
    deleting = (
        pc.fill_null(pc.equal(parsed.column("_op"), "delete"), False).to_numpy(zero_copy_only=False)
        if "_op" in parsed.column_names
        else None
    )
    for i, rule in enumerate(rules):
        out = rule.apply(Slots(parsed, rule.name), done)
        done[rule.name] = out.value
        outcomes.append(out)
        mode = invalid if isinstance(invalid, str) else invalid.get(rule.name, "discard_row")
        for kind, mask in ((_MISSING, out.missing), (_INVALID, out.invalid)):
            if mask is None:
                continue
            hit = mask.to_numpy(zero_copy_only=False) & (code == _OK)
            if kind == _MISSING and deleting is not None:
                hit &= ~deleting
            if kind == _INVALID and mode != "discard_row" and hit.any():
                if mode == "freeze":
                    shown = _shown(out.text(pa.array(np.flatnonzero(hit)[:1])) if callable(out.text)
                                   else out.text.take(pa.array(np.flatnonzero(hit)[:1])))[0]  # fmt: skip
                    raise ContractViolation(
                        f"field {rule.name!r} got {shown}, which {out.what.removeprefix('must ')} does not allow, "
                        "and the contract's data types are frozen"
                    )
                if not getattr(rule, "required", True):  # the value is already null: the record is kept
                    if mode == "evolve":
                        variants.append((rule.name, np.flatnonzero(hit)))
                    if counts is not None:
                        key = f"quality.{'evolved' if mode == 'evolve' else 'discarded'}_value.{rule.name}"
                        counts[key] = counts.get(key, 0) + int(hit.sum())
                    continue
            code[hit] = kind
            which[hit] = i
    unknown = as_array(parsed.column("_unknown"))
    extras = as_array(parsed.column("_extras"))
    if policy == "strict":
        hit = pc.is_valid(unknown).to_numpy(zero_copy_only=False) & (code == _OK)
        code[hit] = _UNKNOWN
    elif policy == "freeze" and unknown.null_count < n:
        name = unknown.filter(pc.is_valid(unknown))[0].as_py()
        raise ContractViolation(f"field {name!r} is not declared and the contract's columns are frozen")
    elif policy == "discard" and unknown.null_count < n:
        if counts is not None:
            counts["quality.discarded_fields"] = counts.get("quality.discarded_fields", 0) + n - unknown.null_count
        extras = pa.nulls(n, pa.string())
    if variants:
        extras = _with_variants(extras, variants, parsed)
    columns = dict(done)
    columns["extras"] = extras
    columns["_raw"] = as_array(parsed.column("_raw"))
    for c in CHANGE_COLUMNS:
        if c in parsed.column_names:
            columns[c] = as_array(parsed.column(c))
    table = pa.table(columns)
    ok = code == _OK
    valid = table.filter(pa.array(ok)) if not ok.all() else table
    bad_idx = np.flatnonzero(~ok)
    if len(bad_idx) == 0:
        return valid, dead_letters(STAGE, pa.array([], pa.string()), None, "", pa.array([], pa.string()),
                                   pa.array([], pa.string()))  # fmt: skip
    take = pa.array(bad_idx)
    reason, fld, error = _failures(code[bad_idx], which[bad_idx], bad_idx, rules, outcomes, unknown.take(take))
    dead = dead_letters(
        STAGE, reason, fld, error, columns["_raw"].take(take), as_array(parsed.column("_source")).take(take)
    )
    return valid, dead


def _with_variants(extras: pa.Array, variants: list, parsed: pa.Table) -> pa.Array:
    """``extras`` with each evolved value added under its field's name, as the record held it.

    Per row, but only over the rows whose values were unusable.
    """
    merged: dict[int, dict] = {}
    for name, rows in variants:
        s = Slots(parsed, name)
        idx = pa.array(rows)
        kinds = s.kind.take(idx).to_pylist()
        texts, ints, floats = s.text.take(idx).to_pylist(), s.int.take(idx).to_pylist(), s.float.take(idx).to_pylist()
        for j, row in enumerate(rows.tolist()):
            if row not in merged:
                prior = extras[row].as_py()
                merged[row] = json.loads(prior) if prior is not None else {}
            merged[row][name] = _slot_value(kinds[j], texts[j], ints[j], floats[j])
    rows = sorted(merged)
    text = pa.array([json.dumps(merged[r], ensure_ascii=False, separators=(",", ":")) for r in rows], pa.string())
    mask = np.zeros(len(extras), dtype=bool)
    mask[rows] = True
    spread = np.zeros(len(extras), dtype=np.int64)
    spread[rows] = np.arange(len(rows))
    return pc.if_else(pa.array(mask), text.take(pa.array(spread)), extras)


def _slot_value(kind: int, text, as_int, as_float):
    """A slot's value as JSON would hold it (a timestamp from a typed source as ISO-8601 text,
    or its microseconds since the epoch beyond the years 1 to 9999)."""
    if kind == KIND_INT:
        return as_int if as_int is not None else text
    if kind == KIND_FLOAT:
        return as_float
    if kind == KIND_BOOL:
        return text == "true"
    if kind == KIND_TIMESTAMP:
        try:
            return (_EPOCH + timedelta(microseconds=as_int)).isoformat()
        except OverflowError:
            return as_int
    if kind == KIND_OTHER:
        try:
            return json.loads(text)
        except ValueError:  # a typed source's value shown as <type>: its text is all there is
            return text
    return text


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _failures(codes, rules_hit, rows, rules: tuple, outcomes: list, unknown: pa.Array):
    """(reason, field, error) of the failing rows, built a group at a time: one group per
    (kind of failure, rule), each one vectorised join."""
    reasons = list(_REASONS.values())
    reason = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8) - 1), pa.array(reasons, pa.string())).cast(
        pa.string()
    )
    parts, where = [], []
    for c in (_MISSING, _INVALID, _UNKNOWN):
        for r in np.unique(rules_hit[codes == c]).tolist() if c != _UNKNOWN else [None]:
            sel = np.flatnonzero((codes == c) & (rules_hit == r)) if r is not None else np.flatnonzero(codes == c)
            if not len(sel):
                continue
            if c == _UNKNOWN:
                names = unknown.take(pa.array(sel))
                errors = pc.binary_join_element_wise("field ", names, " is not declared (policy strict)", "")
            else:
                name = rules[r].name
                names = pa.repeat(pa.scalar(name), len(sel))
                if c == _MISSING:
                    errors = pa.repeat(pa.scalar(f"{name} is missing or null"), len(sel))
                else:
                    text = outcomes[r].text
                    idx = pa.array(rows[sel])
                    shown = _shown(text(idx) if callable(text) else text.take(idx))
                    errors = pc.binary_join_element_wise(f"{name} {outcomes[r].what}, got ", shown, "")
            parts.append((names, errors))
            where.append(sel)
    back = pa.array(np.argsort(np.concatenate(where), kind="stable"))
    fld = pa.concat_arrays([p[0].cast(pa.string()) for p in parts]).take(back)
    error = pa.concat_arrays([p[1].cast(pa.string()) for p in parts]).take(back)
    return reason, fld, error


class _ValidateFn(beam.DoFn):
    def __init__(self, rules: tuple, policy: str, invalid: str = "discard_row"):
        self._rules = rules
        self._policy = policy
        self._on_invalid = invalid

    def setup(self):
        self._invalid = beam.metrics.Metrics.counter(STAGE, "dead_lettered")

    def process(self, parsed: pa.Table):
        counts: dict = {}
        valid, dead = validate_table(parsed, self._rules, self._policy, self._on_invalid, counts)
        if valid.num_rows:
            yield valid
        if dead.num_rows:
            self._invalid.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput("dead_letters", dead)
        if counts:
            yield beam.pvalue.TaggedOutput("stats", counts)


class ValidateSchema(beam.PTransform):
    """Types and normalises parsed records by declared field rules.

    Args:
        rules: Field rules in order (``IdField``, ``EnumField``, ``NumberField``,
            ``IntegerField``, ``DecimalField``, ``BooleanField``, ``CodeField``,
            ``TimestampField``, ``TextField``); their names must be the fields the records
            were parsed with.
        policy: Schema-evolution policy for undeclared fields: ``additive`` keeps them as a
            JSON string in ``extras``; ``strict`` dead-letters the record (``unknown_field``);
            ``discard`` drops them (counted as ``quality.discarded_fields``); ``freeze`` fails the
            run (ContractViolation).
        invalid: What a value unusable as its field's type does, one policy or a mapping of
            field name to policy (``discard_row`` for fields it lacks): ``discard_row`` (a dead
            letter, ``invalid_value``), ``discard_value`` (nulled and counted as
            ``quality.discarded_value.<field>``), ``evolve`` (nulled, the value kept in
            ``extras`` under the field's name, counted as ``quality.evolved_value.<field>``) or
            ``freeze`` (the run fails). A required field's record is a dead letter under
            discard_value and evolve.

    Returns a dict: ``valid`` (tables with one column per rule, then ``extras`` and ``_raw``),
    ``dead_letters`` (DeadLetter tables, stage ``validate``) and, when values or fields may be
    discarded, ``stats`` (count dicts).
    """

    def __init__(self, rules, policy: str = "additive", invalid="discard_row", label: str | None = None):
        super().__init__(label)
        if policy not in POLICIES:
            raise ValueError(f"unknown schema policy {policy!r}; expected one of {', '.join(POLICIES)}")
        names = [r.name for r in rules]
        if not names or len(set(names)) != len(names):
            raise ValueError("rules must name distinct fields")
        modes = {"": invalid} if isinstance(invalid, str) else dict(invalid)
        for field, mode in modes.items():
            if field and field not in names:
                raise ValueError(f"invalid names {field!r}, which no rule validates")
            if mode not in INVALID:
                raise ValueError(f"invalid must be one of {', '.join(INVALID)}, got {mode!r}")
        self._invalid = invalid if isinstance(invalid, str) else modes
        self._counted = policy == "discard" or any(m in ("discard_value", "evolve") for m in modes.values())
        for r in rules:
            if isinstance(r, NumberField) and r.required_if and r.required_if[0] not in names[: names.index(r.name)]:
                raise ValueError(f"{r.name}: required_if must name an earlier field, got {r.required_if[0]!r}")
        self._rules = tuple(rules)
        self._policy = policy

    def expand(self, parsed):
        counted = self._counted
        tags = ("dead_letters", "stats") if counted else ("dead_letters",)
        out = parsed | "Validate" >> beam.ParDo(_ValidateFn(self._rules, self._policy, self._invalid)).with_outputs(
            *tags, main="valid"
        ).with_input_types(pa.Table)
        result = {"valid": typed(out.valid), "dead_letters": typed(out.dead_letters)}
        if counted:
            result["stats"] = typed(out.stats, dict)
        return result
