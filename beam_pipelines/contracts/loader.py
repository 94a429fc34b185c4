"""Reading a contract: the YAML file -> its shape (``CONTRACT_SCHEMA``) -> the semantic checks
-> a frozen ``Contract``. Every mistake is one ``ContractError`` naming file, line and place."""

from __future__ import annotations

import re
from datetime import date

from beam_pipelines.contracts.checks import ContractError, build_field, iso_instant
from beam_pipelines.contracts.format import CONTRACT_SCHEMA
from beam_pipelines.contracts.model import TYPES, Contract, Evolution, Field
from beam_pipelines.spec import shape, yamlsrc
from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, place_of

__all__ = ["RESERVED", "contract_from_doc", "load_contract"]

# Column names the curated output adds itself (undeclared fields are kept as JSON in ``extras``).
RESERVED = ("extras",)
_TYPE_PLACE = re.compile(r"fields\[(\d+)\]\.type$")


def load_contract(path: str, *, expect_name: str | None = None, expect_version: int | None = None) -> Contract:
    """Reads and checks the contract file at ``path``.

    Args:
        path: The YAML file.
        expect_name: The name its place in a registry gives it (``schemas/<name>/v<N>.yaml``).
        expect_version: The version its file name gives it.

    Raises:
        ContractError: The first mistake, as ``file:line: place: message``.
    """
    try:
        doc = yamlsrc.load(path)
    except SpecError as e:
        raise ContractError(e.place, e.message, e.file, e.line) from None
    return contract_from_doc(doc, path, expect_name=expect_name, expect_version=expect_version)


def contract_from_doc(
    doc, file: str | None = None, place: str = "", *, expect_name: str | None = None, expect_version: int | None = None
) -> Contract:
    """Checks a loaded contract (``yamlsrc.load`` output, or a part of a larger file such as a
    spec's inline contract at ``place``) and builds it.

    Raises:
        ContractError: The first mistake, naming its place under ``place``.
    """
    _iso_dates(doc)
    try:
        shape.check(doc, CONTRACT_SCHEMA, place, file)
    except SpecError as e:
        raise _clearer(e, doc) from None
    fields_place = place_of(place, "fields")
    _check_names(doc["fields"], fields_place, file)
    earlier: dict[str, Field] = {}
    names = [f["name"] for f in doc["fields"]]
    for i, f in enumerate(doc["fields"]):
        later = {n: j for j, n in enumerate(names) if j > i}
        earlier[f["name"]] = build_field(f, place_of(fields_place, i), file, earlier, later)
    if expect_name is not None and doc["name"] != expect_name:
        raise ContractError(
            place_of(place, "name"),
            f"{doc['name']!r} does not match the file's folder {expect_name!r} (schemas/<name>/v<N>.yaml)",
            file,
            line_of(doc, "name"),
        )
    if expect_version is not None and doc["version"] != expect_version:
        raise ContractError(
            place_of(place, "version"),
            f"{doc['version']} does not match the file name v{expect_version}.yaml",
            file,
            line_of(doc, "version"),
        )
    return Contract(
        name=doc["name"],
        version=doc["version"],
        doc=doc.get("doc"),
        fields=tuple(earlier.values()),
        evolution=_evolution(doc.get("evolution") or {}),
    )


def _evolution(doc: dict) -> Evolution:
    rest = {k: v for k, v in doc.items() if k != "types"}
    return Evolution(**rest, types=tuple(sorted((doc.get("types") or {}).items())))


def _iso_dates(node) -> None:
    """YAML reads an unquoted date or timestamp as a Python object: turn it into ISO-8601 text
    (UTC when it has no offset) in place, so the schema and checks see text."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, date):
            node[key] = iso_instant(value).isoformat()
        else:
            _iso_dates(value)


def _clearer(e: SpecError, doc) -> ContractError:
    """The schema's error, reworded where a contract can say more (an unknown type)."""
    m = _TYPE_PLACE.search(e.place)
    if m:
        value = doc["fields"][int(m.group(1))]["type"]
        if isinstance(value, str) and value not in TYPES:
            hint = did_you_mean(value, TYPES) or f" (types: {', '.join(TYPES)})"
            return ContractError(e.place, f"unknown type {value!r}{hint}", e.file, e.line)
    return ContractError(e.place, e.message, e.file, e.line)


def _check_names(fields: list, place: str, file: str | None) -> None:
    """Field names unique and not reserved; aliases neither a current name nor another's alias."""
    owner: dict[str, int] = {}
    for i, f in enumerate(fields):
        name = f["name"]
        if name in RESERVED:
            raise ContractError(
                place_of(place_of(place, i), "name"),
                f"{name!r} is reserved: the curated column of undeclared fields",
                file,
                line_of(f, "name"),
            )
        if name in owner:
            raise ContractError(
                place_of(place_of(place, i), "name"),
                f"duplicate field name {name!r} (also fields[{owner[name]}])",
                file,
                line_of(f, "name"),
            )
        owner[name] = i
    alias_of: dict[str, int] = {}
    for i, f in enumerate(fields):
        aliases = f.get("aliases", [])
        for k, alias in enumerate(aliases):
            at, line = place_of(place_of(place_of(place, i), "aliases"), k), line_of(aliases, k)
            if alias == f["name"]:
                raise ContractError(at, f"{alias!r} is the field's own name", file, line)
            if alias in owner:
                raise ContractError(
                    at,
                    f"{alias!r} is the name of fields[{owner[alias]}]: a former name cannot be a current one",
                    file,
                    line,
                )
            if alias in alias_of:
                raise ContractError(at, f"{alias!r} is also an alias of fields[{alias_of[alias]}]", file, line)
            alias_of[alias] = i
