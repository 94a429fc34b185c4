"""The spec format as a published JSON Schema (draft 2020-12), made from the same fragments the
checker uses, so editors validate and complete specs as the checker would."""

from __future__ import annotations

import copy

from beam_pipelines.contracts import CONTRACT_SCHEMA
from beam_pipelines.spec.compile import SPEC_SCHEMA, TRANSFORM_SCHEMA
from beam_pipelines.spec.steps import STEP_TYPES

__all__ = ["PARAM", "spec_schema"]

# A ``${flag}`` reference may stand for any value that is checked (a number, a boolean, a name
# from a list, a pattern): flags are known only when a run starts.
PARAM = r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$"
_WRAPPED = ("integer", "number", "boolean")


def _allow_params(node):
    """Every non-string scalar may also be a ``${flag}`` reference."""
    if isinstance(node, list):
        return [_allow_params(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_params(v) if k in ("properties", "items", "anyOf", "additionalProperties") else v
           for k, v in node.items()}  # fmt: skip
    if "properties" in node:
        out["properties"] = {k: _allow_params(v) for k, v in node["properties"].items()}
    kinds = node.get("type")
    if kinds in _WRAPPED or (isinstance(kinds, list) and set(kinds) & set(_WRAPPED)):
        return {"anyOf": [out, {"type": "string", "pattern": PARAM}], **({"description": node["description"]}
                                                                             if "description" in node else {})}  # fmt: skip
    if "enum" in node or "pattern" in node:
        return {"anyOf": [out, {"type": "string", "pattern": PARAM}]}
    return out


def _closed(schema):
    """Objects without ``additionalProperties`` are closed (as the checker treats them)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if "properties" in schema:
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
    return out


def spec_schema() -> dict:
    """The JSON Schema of a pipeline spec file."""
    transform = _closed(copy.deepcopy(TRANSFORM_SCHEMA))
    transform["properties"]["type"] = {"enum": sorted(STEP_TYPES), "description": "The step type."}
    transform["allOf"] = [
        {
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {
                "properties": {
                    "config": {**_allow_params(_closed(cls.config_schema)), "description": cls.doc},
                }
            },
        }
        for name, cls in sorted(STEP_TYPES.items())
    ]
    schema = _closed(copy.deepcopy(SPEC_SCHEMA))
    pipeline = schema["properties"]["pipeline"]["properties"]
    pipeline["transforms"]["items"] = transform
    pipeline["contract"]["anyOf"][1] = _allow_params(_closed(copy.deepcopy(CONTRACT_SCHEMA)))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://beam-pipelines.dev/schemas/pipeline-spec-v1.json",
        "title": "beam-pipelines pipeline spec",
        "description": "A pipeline in Beam YAML's shape; see `python -m beam_pipelines.spec types`.",
        **schema,
    }
