"""A record contract's fields -> the validation rules (``transforms.ingest.validate``) and the
Arrow types of the columns they produce."""

from __future__ import annotations

import pyarrow as pa

from transforms.ingest import validate as v

__all__ = ["arrow_type", "field_names", "rules_for"]

_US = pa.timestamp("us", tz="UTC")


def arrow_type(f) -> pa.DataType:
    """The curated column type of a contract field."""
    if f.type == "decimal":
        return pa.decimal128(f.precision or 18, 2 if f.scale is None else f.scale)
    return {
        "id": pa.string(),
        "string": pa.string(),
        "int": pa.int32(),
        "long": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "timestamp": _US,
    }[f.type]


def field_names(contract) -> tuple[str, ...]:
    return tuple(f.name for f in contract.fields)


def _iso(value) -> str:
    # YAML reads an unquoted timestamp as a datetime; rules take ISO-8601 text with an offset.
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text.replace("Z", "+00:00")


def _rule(f):
    required = bool(f.required)
    if f.type == "id":
        return v.IdField(f.name)
    if f.type == "string":
        if f.values:
            kw = {"default": f.default} if f.default is not None else {}
            return v.EnumField(f.name, tuple(f.values), **({"required": required} if not required else {}), **kw)
        if f.pattern:
            return v.CodeField(
                f.name,
                f.pattern,
                default=f.default,
                **({"case": f.case} if f.case and f.case != "upper" else {}),
                **({"required": True} if required else {}),
            )
        kw = {"default": f.default} if f.default is not None else {}
        return v.TextField(f.name, **({"required": True} if required else {}), **kw)
    if f.type == "double":
        required_if = None
        if f.required_if:
            required_if = (f.required_if["field"], tuple(f.required_if["values"]))
        kw = {}
        if f.maximum is not None:
            kw["maximum"] = float(f.maximum)
        if required:
            kw["required"] = True
        if f.default is not None:
            kw["default"] = float(f.default)
        return v.NumberField(
            f.name,
            minimum=None if f.minimum is None else float(f.minimum),
            decimals=f.decimals,
            required_if=required_if,
            **kw,
        )
    if f.type == "timestamp":
        kw = {}
        if f.minimum is not None:
            kw["minimum"] = _iso(f.minimum)
        if f.maximum is not None:
            kw["maximum"] = _iso(f.maximum)
        if not required:
            kw["required"] = False
        if f.default is not None:
            kw["default"] = _iso(f.default)
        return v.TimestampField(f.name, **kw)
    if f.type in ("int", "long"):
        return v.IntegerField(
            f.name, bits=32 if f.type == "int" else 64, minimum=f.minimum, maximum=f.maximum, required=required,
            default=f.default,
        )  # fmt: skip
    if f.type == "boolean":
        return v.BooleanField(f.name, required=required, default=f.default)
    if f.type == "decimal":
        return v.DecimalField(
            f.name, precision=f.precision or 18, scale=2 if f.scale is None else f.scale, minimum=f.minimum,
            maximum=f.maximum, required=required, default=f.default,
        )  # fmt: skip
    raise ValueError(f"no validation rule for type {f.type!r}")


def rules_for(contract) -> tuple:
    """The contract's fields as validation rules, in declaration order."""
    return tuple(_rule(f) for f in contract.fields)
