"""What the contract schema cannot say: which keys fit which type, bounds and defaults of the
field's type, references to earlier fields, regexes that compile. Each mistake is a
``ContractError`` naming the file, line and place."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Context, Decimal, InvalidOperation

from beam_pipelines.contracts.model import DECIMAL_DEFAULTS, TIMESTAMP_BOUNDS, Field, RequiredIf
from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, place_of

__all__ = ["ContractError", "build_field", "iso_instant"]

# Which types each type-specific key applies to.
_KEY_TYPES = {
    "values": ("string",),
    "pattern": ("string",),
    "case": ("string",),
    "decimals": ("double",),
    "precision": ("decimal",),
    "scale": ("decimal",),
    "pii": ("id", "string"),
    "minimum": ("int", "long", "double", "decimal", "timestamp"),
    "maximum": ("int", "long", "double", "decimal", "timestamp"),
}
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# Python types a required_if value may have, by the type of the field it names (its normalised value).
_CONDITION_TYPES = {"id": str, "string": str, "int": int, "long": int, "double": (int, float), "decimal": (int, float)}


class ContractError(SpecError):
    """A mistake in a contract file; ``str()`` is ``file:line: place: message``."""


class _Checker:
    """Checks one field's mapping (already shape-checked) at ``place`` of ``file``."""

    def __init__(self, doc, place: str, file: str | None):
        self.doc, self.place, self.file = doc, place, file

    def fail(self, key: str, message: str, parent=None, sub=None):
        """Raises at ``place.key``, or deeper at ``place.key[sub]`` when ``parent`` is ``doc[key]``."""
        at, line = place_of(self.place, key), line_of(self.doc, key)
        if parent is not None:
            at, line = place_of(at, sub), line_of(parent, sub)
        raise ContractError(at, message, self.file, line)


def iso_instant(value) -> datetime | None:
    """An ISO-8601 text (no offset means UTC; Z allowed) as an aware UTC datetime, else None."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _decimal(value) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _fits(d: Decimal, precision: int, scale: int) -> bool:
    """Whether ``d`` is exact at ``scale`` places with at most ``precision`` digits."""
    try:
        exact = d.quantize(Decimal(1).scaleb(-scale), context=Context(prec=100))
    except InvalidOperation:  # more digits than any decimal128 holds
        return False
    return exact == d and len(exact.as_tuple().digits) <= precision


def _shown(value) -> str:
    return str(value) if isinstance(value, Decimal) else repr(value)


def _value(c: _Checker, ftype: str, key: str, value, precision: int, scale: int):
    """A bound or default converted to the field's type (ISO text, Decimal, int, float...)."""
    if ftype in ("int", "long"):
        lo, hi = _INT_RANGE[ftype]
        if isinstance(value, bool) or not isinstance(value, int):
            c.fail(key, f"must be an integer for {ftype} field, got {value!r}")
        if not lo <= value <= hi:
            c.fail(key, f"{value} is outside the {ftype} range [{lo}, {hi}]")
        return value
    if ftype == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            c.fail(key, f"must be a number for a double field, got {value!r}")
        return value
    if ftype == "decimal":
        d = _decimal(value)
        if d is None:
            c.fail(key, f"must be a number or numeric text for a decimal field, got {value!r}")
        if not _fits(d, precision, scale):
            c.fail(key, f"{d} does not fit decimal({precision},{scale})")
        return d
    if ftype == "timestamp":
        dt = iso_instant(value) if isinstance(value, str) else None
        if dt is None:
            c.fail(key, f"must be ISO-8601 text for a timestamp field, got {value!r}")
        return dt.isoformat()
    if ftype == "boolean":
        if not isinstance(value, bool):
            c.fail(key, f"must be true or false for a boolean field, got {value!r}")
        return value
    if not isinstance(value, str):  # string
        c.fail(key, f"must be text for a string field, got {value!r}")
    return value


def _check_keys(c: _Checker, ftype: str) -> None:
    doc = c.doc
    for key, types in _KEY_TYPES.items():
        if key in doc and ftype not in types:
            listed = types[0] if len(types) == 1 else ", ".join(types[:-1]) + " and " + types[-1]
            c.fail(key, f"{key} applies to {listed} fields only, not {ftype}")
    if ftype == "id":
        if doc.get("required") is False:
            c.fail("required", "an id is always required")
        for key in ("default", "required_if"):
            if key in doc:
                c.fail(key, f"an id is always required: {key} does not apply")
    if "case" in doc and "pattern" not in doc:
        c.fail("case", "case applies to a string with a pattern (values are stored lower case)")
    if "values" in doc and "pattern" in doc:
        c.fail("pattern", "a string has values or a pattern, not both (values already fix the text)")
    if "required_if" in doc and doc.get("required") is True:
        c.fail("required_if", "the field is already required: drop required_if or required")
    if "required_if" in doc and "default" in doc:
        c.fail("required_if", "a default fills the field, so required_if never applies: drop one")


def _values(c: _Checker) -> tuple[str, ...] | None:
    values = c.doc.get("values")
    if values is None:
        return None
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        norm = v.strip().lower()
        if not norm:
            c.fail("values", "must not be empty", values, i)
        if norm in seen:
            c.fail("values", f"{v!r} repeats values[{seen[norm]}] (matched case-insensitively)", values, i)
        seen[norm] = i
    return tuple(seen)


def _pattern(c: _Checker) -> str | None:
    pattern = c.doc.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            c.fail("pattern", f"bad regex {pattern!r}: {e}")
    return pattern


def _bounds(c: _Checker, ftype: str, precision: int, scale: int) -> tuple:
    lo, hi = (
        None if c.doc.get(k) is None else _value(c, ftype, k, c.doc[k], precision, scale)
        for k in ("minimum", "maximum")
    )
    if lo is not None and hi is not None:
        if ftype == "timestamp" and iso_instant(lo) >= iso_instant(hi):
            c.fail("maximum", f"{c.doc['maximum']} is not after minimum {c.doc['minimum']} (maximum is exclusive)")
        if ftype != "timestamp" and lo > hi:
            c.fail("maximum", f"{c.doc['maximum']} is below minimum {c.doc['minimum']}")
    return lo, hi


def _default(c: _Checker, ftype: str, values, pattern, lo, hi, precision: int, scale: int):
    if c.doc.get("default") is None:
        return None
    raw = c.doc["default"]
    value = _value(c, ftype, "default", raw, precision, scale)
    if values is not None:
        if value.strip().lower() not in values:
            c.fail("default", f"{raw!r} is not one of {', '.join(values)}{did_you_mean(value.lower(), values)}")
        return value.strip().lower()
    if pattern is not None and not re.search(pattern, value.strip()):
        c.fail("default", f"{raw!r} does not match the pattern {pattern}")
    if ftype == "timestamp":
        lo_t, hi_t = (iso_instant(b) for b in (lo or TIMESTAMP_BOUNDS[0], hi or TIMESTAMP_BOUNDS[1]))
        if not lo_t <= iso_instant(value) < hi_t:
            c.fail("default", f"{raw} is outside [{lo_t.isoformat()}, {hi_t.isoformat()})")
    elif lo is not None and value < lo:
        c.fail("default", f"{_shown(raw)} is below minimum {_shown(lo)}")
    elif hi is not None and value > hi:
        c.fail("default", f"{_shown(raw)} is above maximum {_shown(hi)}")
    return value


def _required_if(c: _Checker, earlier: dict[str, Field], later: dict[str, int]) -> RequiredIf | None:
    spec = c.doc.get("required_if")
    if spec is None:
        return None
    at = place_of(c.place, "required_if")
    sub = _Checker(spec, at, c.file)
    other = spec["field"]
    if other not in earlier:
        if other in later:
            sub.fail("field", f"{other!r} is declared after this field (fields[{later[other]}]): name an earlier field")
        hint = did_you_mean(other, earlier) or f" (earlier fields: {', '.join(earlier) or 'none'})"
        sub.fail("field", f"no earlier field {other!r}{hint}")
    target = earlier[other]
    if target.type == "timestamp":
        sub.fail("field", f"{other!r} is a timestamp: required_if names a field with discrete values")
    values = []
    for i, v in enumerate(spec["values"]):
        wanted = _CONDITION_TYPES.get(target.type, bool)
        if isinstance(v, bool) != (wanted is bool) or not isinstance(v, wanted):
            sub.fail("values", f"{v!r} cannot be a value of {other!r} ({target.type})", spec["values"], i)
        if target.values is not None:
            v = v.strip().lower()
            if v not in target.values:
                hint = did_you_mean(v, target.values)
                sub.fail("values", f"{v!r} is not one of {other}'s values{hint}", spec["values"], i)
        values.append(v)
    return RequiredIf(other, tuple(values))


def build_field(doc, place: str, file: str | None, earlier: dict[str, Field], later: dict[str, int]) -> Field:
    """The Field of a shape-checked mapping; ContractError at the first semantic mistake.

    Args:
        doc: The field's mapping as loaded (with lines).
        place: Its place (``fields[3]``).
        file: The contract file.
        earlier: The fields declared before it, by name.
        later: The names declared after it, with their index (for a clearer required_if error).
    """
    c = _Checker(doc, place, file)
    ftype = doc["type"]
    _check_keys(c, ftype)
    precision, scale = (doc.get("precision", DECIMAL_DEFAULTS[0]), doc.get("scale", DECIMAL_DEFAULTS[1]))
    if ftype == "decimal" and scale > precision:
        c.fail("scale" if "scale" in doc else "precision", f"scale {scale} is above precision {precision}")
    values, pattern = _values(c), _pattern(c)
    lo, hi = _bounds(c, ftype, precision, scale)
    default = _default(c, ftype, values, pattern, lo, hi, precision, scale)
    return Field(
        name=doc["name"],
        type=ftype,
        required=ftype == "id" or bool(doc.get("required", False)),
        default=default,
        aliases=tuple(doc.get("aliases", ())),
        values=values,
        pattern=pattern,
        case=doc.get("case"),
        minimum=lo,
        maximum=hi,
        decimals=doc.get("decimals"),
        precision=precision if ftype == "decimal" else None,
        scale=scale if ftype == "decimal" else None,
        required_if=_required_if(c, earlier, later),
        doc=doc.get("doc"),
        data_type=(doc.get("evolution") or {}).get("data_type"),
        pii=doc.get("pii"),
    )
