"""A record contract as frozen values: the contract, its fields, and its evolution policy."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

__all__ = [
    "COLUMN_POLICIES",
    "CONTRACT_NAME",
    "Contract",
    "DATA_TYPE_POLICIES",
    "DECIMAL_DEFAULTS",
    "Evolution",
    "FIELD_NAME",
    "Field",
    "PII_CLASSES",
    "RequiredIf",
    "TIMESTAMP_BOUNDS",
    "TYPES",
]

TYPES = ("id", "string", "int", "long", "double", "decimal", "boolean", "timestamp")
CONTRACT_NAME = r"^[a-z][a-z0-9_]*$"
FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
COLUMN_POLICIES = ("evolve", "discard_row", "discard_value", "freeze")
DATA_TYPE_POLICIES = ("evolve", "discard_row", "discard_value", "freeze")
# The timestamp rule's bounds when a contract gives none (transforms.ingest.validate.TimestampField).
TIMESTAMP_BOUNDS = ("2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00")
DECIMAL_DEFAULTS = (18, 2)  # precision, scale
# What kind of personal data a field holds (beam_pipelines/pii: what each layer and sink does with it).
PII_CLASSES = ("email", "name", "phone", "address", "ip", "free_text")

_US = pa.timestamp("us", tz="UTC")
_ARROW = {
    "id": pa.string(),
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": _US,
}


@dataclass(frozen=True)
class RequiredIf:
    """Null counts as missing when the earlier field ``field`` has one of ``values``.

    Also readable as a mapping (``r["field"]``, ``r["values"]``), the shape it has in YAML.
    """

    field: str
    values: tuple

    def __getitem__(self, key: str):
        if key not in ("field", "values"):
            raise KeyError(key)
        return getattr(self, key)

    def describe(self) -> str:
        return f"{self.field} in {'|'.join(str(v) for v in self.values)}"


@dataclass(frozen=True)
class Field:
    """One declared field of a contract (the format is in ``contracts/README.md``).

    Timestamp ``minimum``/``maximum``/``default`` are ISO-8601 text with a UTC offset; decimal
    ones are ``Decimal``; ``values`` are lower case; a decimal always has ``precision`` and
    ``scale``; an id is always ``required``.
    """

    name: str
    type: str
    required: bool = False
    default: object = None
    aliases: tuple[str, ...] = ()
    values: tuple[str, ...] | None = None
    pattern: str | None = None
    case: str | None = None
    minimum: object = None
    maximum: object = None
    decimals: int | None = None
    precision: int | None = None
    scale: int | None = None
    required_if: RequiredIf | None = None
    doc: str | None = None
    data_type: str | None = None  # this field's own evolution.data_type, over the contract's
    pii: str | None = None  # one of PII_CLASSES: personal data, protected per layer and sink

    @property
    def arrow_type(self) -> pa.DataType:
        """The curated column's Arrow type."""
        if self.type == "decimal":
            return pa.decimal128(self.precision, self.scale)
        return _ARROW[self.type]

    @property
    def type_text(self) -> str:
        """The type as people write it: ``decimal(18,2)`` for a decimal, else the type name."""
        return f"decimal({self.precision},{self.scale})" if self.type == "decimal" else self.type

    @property
    def may_be_null(self) -> bool:
        """Whether a valid record can leave this field null (no requirement and no default)."""
        return not self.required and self.default is None

    def bounds(self) -> tuple:
        """(minimum, maximum) as the validator applies them: a timestamp's defaults filled in,
        decimals as ``Decimal``; None where unbounded."""
        if self.type == "timestamp":
            return (self.minimum or TIMESTAMP_BOUNDS[0], self.maximum or TIMESTAMP_BOUNDS[1])
        if self.type == "decimal":
            return tuple(None if b is None else Decimal(b) for b in (self.minimum, self.maximum))
        return (self.minimum, self.maximum)


@dataclass(frozen=True)
class Evolution:
    """What the unexpected does: ``columns`` for undeclared fields, ``data_type`` for unusable
    values, ``types`` for unusable values of one declared type (``(type, policy)`` pairs)."""

    columns: str = "evolve"
    data_type: str = "discard_row"
    types: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Contract:
    """A versioned record contract."""

    name: str
    version: int
    doc: str | None
    fields: tuple[Field, ...]
    evolution: Evolution = Evolution()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        """The field called ``name`` (KeyError when there is none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def pii_fields(self) -> dict[str, str]:
        """Field name -> PII class of the fields that hold personal data, in declaration order."""
        return {f.name: f.pii for f in self.fields if f.pii}

    def data_type_policy(self, name: str) -> str:
        """What a value unusable as field ``name``'s type does: the field's own policy, else its
        type's, else the contract's."""
        f = self.field(name)
        return f.data_type or dict(self.evolution.types).get(f.type) or self.evolution.data_type

    def arrow_schema(self) -> pa.Schema:
        """The curated schema of the declared fields, in declaration order (columns nullable,
        as Arrow tables carry them)."""
        return pa.schema([pa.field(f.name, f.arrow_type) for f in self.fields])
