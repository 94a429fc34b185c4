"""ValidateSchema: parsed slot tables -> typed, normalised tables plus dead letters.

Each declared field is a rule that turns its slots into one typed Arrow column and, per row,
an optional (reason, error). The first failing field of a row, in declaration order, names
its dead letter. Everything here is vectorised with ``pyarrow.compute``; only values already
known to be unusable by the vectorised parser take a per-value fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.colscan import iso_micros, string_buffers
from transforms.ingest.slots import (
    KIND_FLOAT,
    KIND_INT,
    KIND_MISSING,
    KIND_NULL,
    KIND_STR,
    KIND_TIMESTAMP,
    Slots,
)
from transforms.records import as_array, dead_letters, iso_text, typed

__all__ = [
    "CodeField",
    "EnumField",
    "IdField",
    "NumberField",
    "TextField",
    "TimestampField",
    "ValidateSchema",
]

STAGE = "validate"
MISSING_FIELD = "missing_field"
INVALID_VALUE = "invalid_value"
UNKNOWN_FIELD = "unknown_field"
POLICIES = ("additive", "strict")

_NUMERIC = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
# At most 18 digits: always fits int64 (longer integers take the float path and fail the range).
_INTEGER = r"^[+-]?\d{1,18}$"
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
    """Required string from a fixed set, matched case-insensitively, stored lower case."""

    name: str
    values: tuple[str, ...]

    def apply(self, s: Slots, done: dict) -> Outcome:
        value = pc.utf8_lower(pc.utf8_trim_whitespace(s.text))
        ok = pc.is_in(value, pa.array(self.values))
        if not s.only(*_STRINGS):
            ok = _mask(pc.and_(_kind_in(s, KIND_STR), ok))
        missing = _kind_in(s, KIND_MISSING, KIND_NULL)
        invalid = pc.invert(pc.or_(missing, ok))
        return _outcome(self.name, value, missing, invalid, s.text, "must be one of " + "|".join(self.values))


@dataclass(frozen=True)
class NumberField:
    """A number or numeric string >= minimum, rounded; null allowed unless ``required_if``.

    ``required_if`` is ``(other_field, values)``: null is a missing field when the other
    (earlier) field's normalised value is one of ``values``.
    """

    name: str
    minimum: float | None = 0.0
    decimals: int = 2
    required_if: tuple[str, tuple[str, ...]] | None = None

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
        absent = _kind_in(s, KIND_MISSING, KIND_NULL)
        if self.required_if is not None:
            other, values = self.required_if
            missing = _mask(pc.and_(absent, pc.is_in(done[other], pa.array(values))))
        else:
            missing = None
        invalid = pc.invert(pc.or_(absent, ok))
        value = pc.round(number, self.decimals, round_mode="half_towards_infinity")
        what = "must be a finite number" + ("" if self.minimum is None else f" >= {self.minimum:g}")
        return _outcome(self.name, value, missing, invalid, s.text, what)


@dataclass(frozen=True)
class CodeField:
    """Optional code matching ``pattern``, upper-cased; absent or null means ``default``."""

    name: str
    pattern: str
    default: str | None = None

    def apply(self, s: Slots, done: dict) -> Outcome:
        trimmed = pc.utf8_trim_whitespace(s.text)
        ok = pc.match_substring_regex(trimmed, self.pattern)
        ok = _mask(ok if s.only(*_STRINGS) else pc.and_(_kind_in(s, KIND_STR), ok))
        absent = _kind_in(s, KIND_MISSING, KIND_NULL)
        value = pc.if_else(absent, pa.scalar(self.default, pa.string()), pc.utf8_upper(trimmed))
        invalid = pc.invert(pc.or_(absent, ok))
        return _outcome(self.name, value, None, invalid, s.text, f"must match {self.pattern}")


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


def _parse_iso_one(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset moved it past year 1 or 9999
        return None


@dataclass(frozen=True)
class TimestampField:
    """Required event time: ISO-8601 (offset or Z; none means UTC), epoch seconds, or epoch
    milliseconds (integers >= ``millis_from``), within ``[minimum, maximum)``."""

    name: str
    minimum: str = "2000-01-01T00:00:00+00:00"
    maximum: str = "2100-01-01T00:00:00+00:00"
    millis_from: int = 10**11

    def apply(self, s: Slots, done: dict) -> Outcome:
        lo = datetime.fromisoformat(self.minimum).timestamp() * 1e6
        hi = datetime.fromisoformat(self.maximum).timestamp() * 1e6
        missing = _kind_in(s, KIND_MISSING, KIND_NULL)
        what = "must be ISO-8601 or epoch seconds/milliseconds within [2000-01-01, 2100-01-01)"

        def shown(rows: pa.Array) -> pa.Array:
            # Typed timestamps carry no text slot; format just the failing ones.
            as_ts = iso_text(s.int.take(rows).cast(_US))
            return pc.if_else(pc.equal(s.kind.take(rows), KIND_TIMESTAMP), as_ts, s.text.take(rows))

        if s.only(KIND_TIMESTAMP, KIND_MISSING, KIND_NULL):  # typed sources: already epoch microseconds
            in_range = _mask(pc.and_(pc.greater_equal(s.int, int(lo)), pc.less(s.int, int(hi))))
            value = pc.if_else(in_range, s.int, pa.scalar(None, pa.int64())).cast(_US)
            return _outcome(self.name, value, missing, pc.invert(pc.or_(missing, in_range)), shown, what)
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
        else:
            exact = pa.nulls(n, pa.int64())
        if as_int is not None:
            exact = pc.if_else(pc.is_valid(as_int), pc.multiply(as_int, pc.if_else(int_is_ms, 1000, 1_000_000)), exact)
        if is_ts is not None:
            exact = pc.if_else(is_ts, s.int, exact)
        if iso is not None:
            exact = pc.if_else(pc.is_valid(iso), iso, exact)
        value = pc.if_else(in_range, exact, pa.scalar(None, pa.int64())).cast(_US)
        invalid = pc.invert(pc.or_(missing, in_range))
        return _outcome(self.name, value, missing, invalid, shown, what)


@dataclass(frozen=True)
class TextField:
    """Optional free text; non-string values keep their text form for later cleansing."""

    name: str

    def apply(self, s: Slots, done: dict) -> Outcome:
        return Outcome(s.text, None, None, s.text, "")


_OK, _MISSING, _INVALID, _UNKNOWN = 0, 1, 2, 3
_REASONS = {_MISSING: MISSING_FIELD, _INVALID: INVALID_VALUE, _UNKNOWN: UNKNOWN_FIELD}


def validate_table(parsed: pa.Table, rules: tuple, policy: str) -> tuple[pa.Table, pa.Table]:
    """Applies the rules to one parsed slot table: (valid rows, dead letters)."""
    n = parsed.num_rows
    done: dict[str, pa.Array] = {}
    outcomes: list[Outcome] = []
    # Per row: the first failure's kind and the index of the rule that failed.
    code = np.zeros(n, dtype=np.int8)
    which = np.full(n, -1, dtype=np.int16)
    for i, rule in enumerate(rules):
        out = rule.apply(Slots(parsed, rule.name), done)
        done[rule.name] = out.value
        outcomes.append(out)
        for kind, mask in ((_MISSING, out.missing), (_INVALID, out.invalid)):
            if mask is None:
                continue
            hit = mask.to_numpy(zero_copy_only=False) & (code == _OK)
            code[hit] = kind
            which[hit] = i
    unknown = as_array(parsed.column("_unknown"))
    if policy == "strict":
        hit = pc.is_valid(unknown).to_numpy(zero_copy_only=False) & (code == _OK)
        code[hit] = _UNKNOWN
    columns = dict(done)
    columns["extras"] = as_array(parsed.column("_extras"))
    columns["_raw"] = as_array(parsed.column("_raw"))
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
    def __init__(self, rules: tuple, policy: str):
        self._rules = rules
        self._policy = policy

    def setup(self):
        self._invalid = beam.metrics.Metrics.counter(STAGE, "dead_lettered")

    def process(self, parsed: pa.Table):
        valid, dead = validate_table(parsed, self._rules, self._policy)
        if valid.num_rows:
            yield valid
        if dead.num_rows:
            self._invalid.inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput("dead_letters", dead)


class ValidateSchema(beam.PTransform):
    """Types and normalises parsed records by declared field rules.

    Args:
        rules: Field rules in order (``IdField``, ``EnumField``, ``NumberField``,
            ``CodeField``, ``TimestampField``, ``TextField``); their names must be the
            fields the records were parsed with.
        policy: Schema-evolution policy for undeclared fields: ``additive`` keeps them as a
            JSON string in ``extras``; ``strict`` dead-letters the record (``unknown_field``).

    Returns a dict: ``valid`` (tables with one column per rule, then ``extras`` and ``_raw``) and ``dead_letters`` (DeadLetter tables, stage ``validate``).
    """

    def __init__(self, rules, policy: str = "additive", label: str | None = None):
        super().__init__(label)
        if policy not in POLICIES:
            raise ValueError(f"unknown schema policy {policy!r}; expected one of {', '.join(POLICIES)}")
        names = [r.name for r in rules]
        if not names or len(set(names)) != len(names):
            raise ValueError("rules must name distinct fields")
        for r in rules:
            if isinstance(r, NumberField) and r.required_if and r.required_if[0] not in names[: names.index(r.name)]:
                raise ValueError(f"{r.name}: required_if must name an earlier field, got {r.required_if[0]!r}")
        self._rules = tuple(rules)
        self._policy = policy

    def expand(self, parsed):
        out = parsed | "Validate" >> beam.ParDo(_ValidateFn(self._rules, self._policy)).with_outputs(
            "dead_letters", main="valid"
        ).with_input_types(pa.Table)
        return {"valid": typed(out.valid), "dead_letters": typed(out.dead_letters)}
