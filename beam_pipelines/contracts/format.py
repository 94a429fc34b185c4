"""The contract file format, declared once as a JSON Schema fragment.

``spec.shape.check`` checks files against it and the project's published JSON Schema embeds
it; what a schema cannot say (which keys fit which type, references between fields, defaults
of the field's type) is checked in ``contracts.checks``.
"""

from __future__ import annotations

from beam_pipelines.contracts.model import (
    COLUMN_POLICIES,
    CONTRACT_NAME,
    DATA_TYPE_POLICIES,
    FIELD_NAME,
    PII_CLASSES,
    TYPES,
)

__all__ = ["CONTRACT_SCHEMA", "FIELD_SCHEMA"]

_BOUND = {
    "anyOf": [{"type": "number"}, {"type": "string"}],
    "description": "A number; ISO-8601 text for a timestamp; a number or numeric text for a decimal.",
}

_DATA_TYPE = {
    "enum": list(DATA_TYPE_POLICIES),
    "description": "A value unusable as its type: discard_row (dead letter invalid_value, the default), "
    "discard_value (nulled, counted), evolve (nulled, the value kept as JSON in extras under the field's name, "
    "counted) or freeze (the run fails). A required field's record is a dead letter whatever the policy.",
}

FIELD_SCHEMA = {
    "type": "object",
    "description": "A field of the record, in declaration order (a record's first failing field names its dead letter).",
    "properties": {
        "name": {
            "type": "string",
            "pattern": FIELD_NAME,
            "description": "The field's name: letters, digits and _, not starting with a digit.",
        },
        "type": {"type": "string", "enum": list(TYPES), "description": "The field's type."},
        "doc": {"type": "string"},
        "required": {
            "type": "boolean",
            "description": "Absent or null is a dead letter (missing_field). Default false; an id is always required.",
        },
        "default": {
            "type": ["string", "number", "boolean"],
            "description": "The value used when the field is absent or null, of the field's type.",
        },
        "aliases": {
            "type": "array",
            "items": {"type": "string", "pattern": FIELD_NAME},
            "description": "Former names of the field (a rename is compatible only through them).",
        },
        "values": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string"},
            "description": "string only: the allowed values, matched case-insensitively, stored lower case.",
        },
        "pattern": {"type": "string", "description": "string only: a regex the trimmed text must match."},
        "case": {
            "enum": ["lower", "upper", "keep"],
            "description": "string with a pattern: how the stored text is cased.",
        },
        "minimum": _BOUND,
        "maximum": {**_BOUND, "description": _BOUND["description"] + " Exclusive for a timestamp."},
        "decimals": {
            "type": "integer",
            "minimum": 0,
            "maximum": 15,
            "description": "double only: rounded half away from zero to this many places.",
        },
        "precision": {"type": "integer", "minimum": 1, "maximum": 38, "description": "decimal only; default 18."},
        "scale": {"type": "integer", "minimum": 0, "maximum": 38, "description": "decimal only; default 2."},
        "evolution": {
            "type": "object",
            "description": "This field's own policy, over the contract's evolution.",
            "properties": {"data_type": _DATA_TYPE},
        },
        "pii": {
            "enum": list(PII_CLASSES),
            "description": "string and id only: the field holds personal data of this kind; the spec's pii "
            "actions (or the class's defaults) say what each layer and sink keeps of it: keep, mask, token, encrypt "
            "or drop (README: PII protection).",
        },
        "required_if": {
            "type": "object",
            "description": "Null counts as missing when the earlier field's normalised value is one of values.",
            "properties": {
                "field": {"type": "string", "description": "An earlier field of the contract."},
                "values": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
            },
            "required": ["field", "values"],
        },
    },
    "required": ["name", "type"],
}

CONTRACT_SCHEMA = {
    "type": "object",
    "description": "A versioned record contract: schemas/<name>/v<version>.yaml.",
    "properties": {
        "name": {
            "type": "string",
            "pattern": CONTRACT_NAME,
            "description": "The contract's name: lower-case letters, digits and _, starting with a letter.",
        },
        "version": {"type": "integer", "minimum": 1, "description": "The contract's version, as in its file name."},
        "doc": {"type": "string"},
        "fields": {"type": "array", "minItems": 1, "items": FIELD_SCHEMA},
        "evolution": {
            "type": "object",
            "description": "What the unexpected does.",
            "properties": {
                "columns": {
                    "enum": list(COLUMN_POLICIES),
                    "description": "An undeclared field: evolve (kept as JSON in extras, the default), discard_row "
                    "(dead letter unknown_field), discard_value (dropped, counted) or freeze (the run fails).",
                },
                "data_type": _DATA_TYPE,
                "types": {
                    "type": "object",
                    "description": "Per declared type, data_type for the fields of that type (a field's own "
                    "evolution.data_type wins over it).",
                    "properties": {t: _DATA_TYPE for t in TYPES},
                },
            },
        },
    },
    "required": ["name", "version", "fields"],
}
