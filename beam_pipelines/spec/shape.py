"""Checking YAML values against JSON Schema fragments, with errors that name their place.

The spec format is declared once, as JSON Schema fragments (``transforms/*`` config shapes in
``steps.py``); the same fragments check a spec here and make the published JSON Schema
(``python -m beam_pipelines.spec schema``). Only the keywords the fragments use are
supported: type, properties, required, additionalProperties, enum, const, items, minItems,
minimum, maximum, pattern, anyOf and description.
"""

from __future__ import annotations

import functools
import re

from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, place_of

__all__ = ["DURATION", "check", "duration_seconds", "duration"]

_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
DURATION = r"^[0-9]+(ms|s|m|h|d|w)$"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@functools.lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern:
    """``pattern`` as JSON Schema (ECMA-262) reads it: ``$`` is the end of the text. Python's
    ``$`` also matches before a final newline, which let ``"curated\\n"`` or ``"orders\\n"``
    through a name or path pattern."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        out.append(r"\Z" if c == "$" and not in_class else c)
        i += 1
    return re.compile("".join(out))


def duration(description: str, minimum: int = 1) -> dict:
    """A duration: whole seconds, or a string such as ``90s``, ``15m``, ``1h``, ``7d``."""
    return {
        "description": description + " Seconds, or a string like 90s, 15m, 1h, 1d.",
        "anyOf": [{"type": "integer", "minimum": minimum}, {"type": "string", "pattern": DURATION}],
    }


def duration_seconds(value) -> int:
    """Seconds of a checked duration (an int, or a string such as ``1h``)."""
    if isinstance(value, int):
        return value
    m = re.match(r"^([0-9]+)(ms|s|m|h|d|w)$", value)
    return int(int(m.group(1)) * _UNITS[m.group(2)])


def _is(value, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[kind])


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(value, schema: dict, place: str, file: str | None, parent=None, key=None) -> None:
    """Raises SpecError at the first place where ``value`` does not fit ``schema``."""

    def fail(message: str, at: str = place, line: int | None = None):
        raise SpecError(at, message, file, line if line is not None else line_of(parent, key))

    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                check(value, option, place, file, parent, key)
                return
            except SpecError as e:
                errors.append(e)
        deeper = [e for e in errors if e.place != place]
        if len(deeper) == 1:  # only one option got past the top: its error is the useful one
            raise deeper[0]
        fail(f"{schema.get('description', 'invalid value').rstrip('.')}; got {_shown(value)}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            fail(f"must be {' or '.join(_article(k) for k in kinds)}, got {_shown(value)}")
    if "const" in schema and value != schema["const"]:
        fail(f"must be {schema['const']!r}, got {_shown(value)}")
    if "enum" in schema and value not in schema["enum"]:
        hint = did_you_mean(value, [str(v) for v in schema["enum"]]) if isinstance(value, str) else ""
        fail(f"must be one of {', '.join(str(v) for v in schema['enum'])}; got {_shown(value)}{hint}")
    if isinstance(value, str) and "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        fail(f"{schema.get('description', 'must match ' + schema['pattern']).rstrip('.')}; got {_shown(value)}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            fail(f"must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            fail(f"must be <= {schema['maximum']}, got {value}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            fail(f"needs at least {schema['minItems']} item(s)")
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                check(item, items, place_of(place, i), file, value, i)
    if isinstance(value, dict):
        _check_object(value, schema, place, file, fail)


def _check_object(value: dict, schema: dict, place: str, file: str | None, fail) -> None:
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", False)
    if not extra:  # an unknown key first: a misspelt required key is reported as the misspelling
        for name in value:
            if name not in props:
                known = ", ".join(sorted(props)) or "none"
                hint = did_you_mean(name, props) or f" (known: {known})"
                fail(f"unknown key{hint}", at=place_of(place, name), line=line_of(value, name))
    for name in schema.get("required", ()):
        if name not in value:
            fail(f"missing required key {name!r}", line=getattr(value, "line", 0))
    for name, item in value.items():
        at = place_of(place, name)
        if name in props:
            check(item, props[name], at, file, value, name)
        elif isinstance(extra, dict):
            check(item, extra, at, file, value, name)


def _article(kind: str) -> str:
    return {"integer": "an integer", "object": "a mapping", "array": "a list", "null": "null"}.get(kind, f"a {kind}")
