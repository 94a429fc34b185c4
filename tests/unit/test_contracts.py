"""Record contracts: the loader's errors (each names file, line and place), the model and its
Arrow types, and registries (references, versions, lookup order)."""

import os
import textwrap
from decimal import Decimal

import pyarrow as pa
import pytest

from beam_pipelines.contracts import (
    CONTRACT_SCHEMA,
    PACKAGED_SCHEMAS,
    ContractError,
    Field,
    Registry,
    UnknownContract,
    contract_from_doc,
    load_contract,
    parse_ref,
)
from beam_pipelines.spec.yamlsrc import SpecError, load_text

FIXTURES = os.path.join(os.path.dirname(__file__), "contracts", "registry")
HEAD = "name: orders\nversion: 2\nfields:\n"


def write(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def error_of(tmp_path, text: str) -> str:
    """The error of a contract file, with the tmp folder cut from its path."""
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as e:
        load_contract(path)
    assert e.value.file == path
    return str(e.value).replace(path, "c.yaml")


def fields_error(tmp_path, *lines: str) -> str:
    """The error of a contract whose fields are ``lines`` (fields[0] is on line 4)."""
    return error_of(tmp_path, HEAD + "".join(f"  - {line}\n" for line in lines))


# --- the loader: one case per kind of mistake -------------------------------------------------


def test_unknown_type_names_file_line_place_and_the_closest_type(tmp_path):
    err = fields_error(
        tmp_path, "{name: a, type: id}", "{name: b, type: string}", "{name: c, type: int}", "{name: d, type: dobule}"
    )
    assert err == "c.yaml:7: fields[3].type: unknown type 'dobule' (did you mean 'double'?)"


def test_unknown_type_without_a_close_one_lists_the_types(tmp_path):
    err = fields_error(tmp_path, "{name: a, type: blob}")
    assert (
        err
        == "c.yaml:4: fields[0].type: unknown type 'blob' (types: id, string, int, long, double, decimal, boolean, timestamp)"
    )


def test_unknown_field_key_suggests_the_known_one(tmp_path):
    err = fields_error(tmp_path, "{name: a, type: long, requird: true}")
    assert err == "c.yaml:4: fields[0].requird: unknown key (did you mean 'required'?)"


def test_unknown_top_level_key(tmp_path):
    assert error_of(tmp_path, HEAD + "  - {name: a, type: id}\nevolutoin: {}\n") == (
        "c.yaml:5: evolutoin: unknown key (did you mean 'evolution'?)"
    )


def test_missing_keys(tmp_path):
    assert fields_error(tmp_path, "{name: a}") == "c.yaml:4: fields[0]: missing required key 'type'"
    assert error_of(tmp_path, "name: orders\nfields: [{name: a, type: id}]\n") == (
        "c.yaml:1: missing required key 'version'"
    )


def test_bad_name_version_and_policy(tmp_path):
    assert error_of(tmp_path, "name: Orders\nversion: 1\nfields: [{name: a, type: id}]\n") == (
        "c.yaml:1: name: The contract's name: lower-case letters, digits and _, starting with a letter; got 'Orders'"
    )
    assert error_of(tmp_path, "name: orders\nversion: 0\nfields: [{name: a, type: id}]\n") == (
        "c.yaml:2: version: must be >= 1, got 0"
    )
    assert fields_error(tmp_path, "{name: 1a, type: id}").startswith("c.yaml:4: fields[0].name: The field's name")
    err = error_of(tmp_path, HEAD + "  - {name: a, type: id}\nevolution:\n  columns: evolv\n")
    assert err == (
        "c.yaml:6: evolution.columns: must be one of evolve, discard_row, discard_value, freeze; got 'evolv'"
        " (did you mean 'evolve'?)"
    )


def test_malformed_yaml_and_duplicate_keys(tmp_path):
    assert error_of(tmp_path, HEAD + "  - {name: a, type: id\n").startswith("c.yaml:5: malformed YAML")
    assert error_of(tmp_path, HEAD + "  - {name: a, type: id}\nname: again\n") == "c.yaml:5: duplicate key 'name'"


def test_empty_file_and_empty_fields(tmp_path):
    assert error_of(tmp_path, "") == "c.yaml: must be a mapping, got None"
    assert error_of(tmp_path, "name: orders\nversion: 1\nfields: []\n") == (
        "c.yaml:3: fields: needs at least 1 item(s)"
    )


@pytest.mark.parametrize(
    "line, place, message",
    [
        ("{name: a, type: double, values: [x]}", "values", "values applies to string fields only, not double"),
        ("{name: a, type: string, decimals: 2}", "decimals", "decimals applies to double fields only, not string"),
        ("{name: a, type: double, precision: 10}", "precision", "precision applies to decimal fields only, not double"),
        ("{name: a, type: long, scale: 2}", "scale", "scale applies to decimal fields only, not long"),
        ("{name: a, type: long, pattern: x}", "pattern", "pattern applies to string fields only, not long"),
        (
            "{name: a, type: string, minimum: 1}",
            "minimum",
            "minimum applies to int, long, double, decimal and timestamp fields only, not string",
        ),
        (
            "{name: a, type: string, case: upper}",
            "case",
            "case applies to a string with a pattern (values are stored lower case)",
        ),
        (
            "{name: a, type: string, values: [x], pattern: x}",
            "pattern",
            "a string has values or a pattern, not both (values already fix the text)",
        ),
        ("{name: a, type: id, required: false}", "required", "an id is always required"),
        ("{name: a, type: id, default: x}", "default", "an id is always required: default does not apply"),
    ],
)
def test_keys_that_do_not_fit_the_type(tmp_path, line, place, message):
    assert fields_error(tmp_path, line) == f"c.yaml:4: fields[0].{place}: {message}"


def test_bad_regex(tmp_path):
    err = fields_error(tmp_path, '{name: a, type: string, pattern: "^[A-Z"}')
    assert err.startswith("c.yaml:4: fields[0].pattern: bad regex '^[A-Z': unterminated character set")


@pytest.mark.parametrize(
    "line, place, message",
    [
        ("{name: a, type: long, minimum: 5, maximum: 1}", "maximum", "1 is below minimum 5"),
        ("{name: a, type: double, minimum: 0.5, maximum: 0.25}", "maximum", "0.25 is below minimum 0.5"),
        (
            "{name: a, type: timestamp, minimum: '2020-01-01', maximum: '2020-01-01T00:00:00Z'}",
            "maximum",
            "2020-01-01T00:00:00Z is not after minimum 2020-01-01 (maximum is exclusive)",
        ),
        ("{name: a, type: int, minimum: '1'}", "minimum", "must be an integer for int field, got '1'"),
        ("{name: a, type: long, maximum: 1.5}", "maximum", "must be an integer for long field, got 1.5"),
        (
            "{name: a, type: int, maximum: 3000000000}",
            "maximum",
            "3000000000 is outside the int range [-2147483648, 2147483647]",
        ),
        (
            "{name: a, type: timestamp, minimum: yesterday}",
            "minimum",
            "must be ISO-8601 text for a timestamp field, got 'yesterday'",
        ),
        ("{name: a, type: timestamp, minimum: 5}", "minimum", "must be ISO-8601 text for a timestamp field, got 5"),
        (
            "{name: a, type: decimal, minimum: abc}",
            "minimum",
            "must be a number or numeric text for a decimal field, got 'abc'",
        ),
        ("{name: a, type: decimal, precision: 10, scale: 12}", "scale", "scale 12 is above precision 10"),
        ("{name: a, type: decimal, precision: 1}", "precision", "scale 2 is above precision 1"),
    ],
)
def test_bounds_and_decimal_sizes(tmp_path, line, place, message):
    assert fields_error(tmp_path, line) == f"c.yaml:4: fields[0].{place}: {message}"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{name: a, type: long, default: x}", "must be an integer for long field, got 'x'"),
        ("{name: a, type: long, default: 1.5}", "must be an integer for long field, got 1.5"),
        ("{name: a, type: double, default: 'x'}", "must be a number for a double field, got 'x'"),
        ("{name: a, type: boolean, default: 'yes'}", "must be true or false for a boolean field, got 'yes'"),
        ("{name: a, type: string, default: 1}", "must be text for a string field, got 1"),
        (
            "{name: a, type: string, values: [view, click], default: clik}",
            "'clik' is not one of view, click (did you mean 'click'?)",
        ),
        (
            '{name: a, type: string, pattern: "^[A-Z]{3}$", default: EURO}',
            "'EURO' does not match the pattern ^[A-Z]{3}$",
        ),
        ("{name: a, type: long, maximum: 10, default: 11}", "11 is above maximum 10"),
        ("{name: a, type: double, minimum: 0, default: -0.5}", "-0.5 is below minimum 0"),
        ("{name: a, type: decimal, default: 1.005}", "1.005 does not fit decimal(18,2)"),
        ("{name: a, type: decimal, precision: 4, default: 123.4}", "123.4 does not fit decimal(4,2)"),
        ("{name: a, type: decimal, minimum: '0', default: '-1'}", "'-1' is below minimum 0"),
        (
            "{name: a, type: timestamp, default: '1999-12-31T23:59:59Z'}",
            "1999-12-31T23:59:59Z is outside [2000-01-01T00:00:00+00:00, 2100-01-01T00:00:00+00:00)",
        ),
    ],
)
def test_default_of_the_field_type(tmp_path, line, message):
    assert fields_error(tmp_path, line) == f"c.yaml:4: fields[0].default: {message}"


def test_enum_values_unique_and_not_blank(tmp_path):
    assert fields_error(tmp_path, "{name: a, type: string, values: [view, ' ']}") == (
        "c.yaml:4: fields[0].values[1]: must not be empty"
    )
    err = error_of(tmp_path, HEAD + "  - name: a\n    type: string\n    values:\n      - view\n      - VIEW\n")
    assert err == "c.yaml:8: fields[0].values[1]: 'VIEW' repeats values[0] (matched case-insensitively)"


@pytest.mark.parametrize(
    "lines, place, message",
    [
        (
            [
                "{name: k, type: id}",
                "{name: a, type: double, required_if: {field: kind, values: [x]}}",
                "{name: kind, type: string}",
            ],
            "field",
            "'kind' is declared after this field (fields[2]): name an earlier field",
        ),
        (
            ["{name: kind, type: string}", "{name: a, type: double, required_if: {field: knd, values: [x]}}"],
            "field",
            "no earlier field 'knd' (did you mean 'kind'?)",
        ),
        (
            [
                "{name: kind, type: string, values: [buy, sell]}",
                "{name: a, type: double, required_if: {field: kind, values: [bye]}}",
            ],
            "values[0]",
            "'bye' is not one of kind's values (did you mean 'buy'?)",
        ),
        (
            ["{name: kind, type: long}", "{name: a, type: double, required_if: {field: kind, values: ['1']}}"],
            "values[0]",
            "'1' cannot be a value of 'kind' (long)",
        ),
        (
            ["{name: kind, type: boolean}", "{name: a, type: double, required_if: {field: kind, values: [1]}}"],
            "values[0]",
            "1 cannot be a value of 'kind' (boolean)",
        ),
        (
            ["{name: t, type: timestamp}", "{name: a, type: double, required_if: {field: t, values: [x]}}"],
            "field",
            "'t' is a timestamp: required_if names a field with discrete values",
        ),
    ],
)
def test_required_if_names_an_earlier_field_and_its_values(tmp_path, lines, place, message):
    assert fields_error(tmp_path, *lines) == f"c.yaml:5: fields[1].required_if.{place}: {message}"


def test_required_if_with_required_or_default(tmp_path):
    base = "{name: kind, type: string}"
    err = fields_error(
        tmp_path, base, "{name: a, type: double, required: true, required_if: {field: kind, values: [x]}}"
    )
    assert err == "c.yaml:5: fields[1].required_if: the field is already required: drop required_if or required"
    err = fields_error(tmp_path, base, "{name: a, type: double, default: 0, required_if: {field: kind, values: [x]}}")
    assert err == "c.yaml:5: fields[1].required_if: a default fills the field, so required_if never applies: drop one"


def test_field_names_and_aliases_unique(tmp_path):
    assert fields_error(tmp_path, "{name: a, type: id}", "{name: a, type: long}") == (
        "c.yaml:5: fields[1].name: duplicate field name 'a' (also fields[0])"
    )
    assert fields_error(tmp_path, "{name: extras, type: string}") == (
        "c.yaml:4: fields[0].name: 'extras' is reserved: the curated column of undeclared fields"
    )
    assert fields_error(tmp_path, "{name: a, type: id}", "{name: b, type: long, aliases: [a]}") == (
        "c.yaml:5: fields[1].aliases[0]: 'a' is the name of fields[0]: a former name cannot be a current one"
    )
    assert fields_error(tmp_path, "{name: a, type: id, aliases: [x]}", "{name: b, type: long, aliases: [x]}") == (
        "c.yaml:5: fields[1].aliases[0]: 'x' is also an alias of fields[0]"
    )
    assert fields_error(tmp_path, "{name: a, type: id, aliases: [a]}") == (
        "c.yaml:4: fields[0].aliases[0]: 'a' is the field's own name"
    )


def test_error_is_a_spec_error_with_its_parts(tmp_path):
    path = write(tmp_path, HEAD + "  - {name: a, type: dobule}\n")
    with pytest.raises(SpecError) as e:
        load_contract(path)
    assert (e.value.file, e.value.line, e.value.place) == (path, 4, "fields[0].type")
    assert isinstance(e.value, ContractError)


def test_unreadable_file(tmp_path):
    with pytest.raises(ContractError, match="cannot read"):
        load_contract(str(tmp_path / "missing.yaml"))


# --- the model --------------------------------------------------------------------------------

ALL_TYPES = """
name: things
version: 3
doc: One of each type.
fields:
  - {name: key, type: id, doc: The key.}
  - {name: kind, type: string, required: true, values: [Buy, sell]}
  - {name: code, type: string, pattern: "^[a-z]{2}$", case: lower, default: xx}
  - {name: small, type: int, minimum: -5, maximum: 5, default: 0}
  - {name: big, type: long, aliases: [count]}
  - {name: price, type: double, minimum: 0, decimals: 2, required_if: {field: kind, values: [BUY]}}
  - {name: money, type: decimal, default: "1.50"}
  - {name: exact, type: decimal, precision: 38, scale: 10, minimum: 0}
  - {name: flag, type: boolean, default: false}
  - {name: at, type: timestamp, minimum: 2001-02-03, maximum: 2030-01-01T00:00:00Z, default: 2010-01-01T12:00:00+02:00}
evolution: {columns: discard_row}
"""


def test_every_type_loads_with_its_values_normalised(tmp_path):
    c = load_contract(write(tmp_path, ALL_TYPES))
    assert (c.name, c.version, c.doc) == ("things", 3, "One of each type.")
    assert c.names == ("key", "kind", "code", "small", "big", "price", "money", "exact", "flag", "at")
    key, kind, code, small, big, price, money, exact, flag, at = c.fields
    assert key == Field("key", "id", required=True, doc="The key.")
    assert kind.values == ("buy", "sell") and kind.required
    assert (code.pattern, code.case, code.default, code.required) == ("^[a-z]{2}$", "lower", "xx", False)
    assert (small.minimum, small.maximum, small.default) == (-5, 5, 0)
    assert big.aliases == ("count",)
    assert (price.decimals, price.required_if.field, price.required_if.values) == (2, "kind", ("buy",))
    assert price.required_if["field"] == "kind" and price.required_if["values"] == ("buy",)  # the YAML shape too
    assert (money.precision, money.scale, money.default) == (18, 2, Decimal("1.50"))
    assert (exact.precision, exact.scale, exact.minimum) == (38, 10, Decimal(0))
    assert flag.default is False
    # YAML's own dates and timestamps become ISO-8601 text in UTC.
    assert (at.minimum, at.maximum, at.default) == (
        "2001-02-03T00:00:00+00:00",
        "2030-01-01T00:00:00+00:00",
        "2010-01-01T10:00:00+00:00",
    )
    assert (c.evolution.columns, c.evolution.data_type) == ("discard_row", "discard_row")
    assert c.field("big") is big
    with pytest.raises(KeyError):
        c.field("nope")


def test_arrow_types_of_the_curated_columns(tmp_path):
    c = load_contract(write(tmp_path, ALL_TYPES))
    assert c.arrow_schema() == pa.schema(
        [
            ("key", pa.string()),
            ("kind", pa.string()),
            ("code", pa.string()),
            ("small", pa.int32()),
            ("big", pa.int64()),
            ("price", pa.float64()),
            ("money", pa.decimal128(18, 2)),
            ("exact", pa.decimal128(38, 10)),
            ("flag", pa.bool_()),
            ("at", pa.timestamp("us", tz="UTC")),
        ]
    )
    assert c.field("money").arrow_type == pa.decimal128(18, 2)
    assert c.field("money").type_text == "decimal(18,2)"


def test_defaults_of_an_optional_contract():
    c = contract_from_doc(load_text("name: x\nversion: 1\nfields: [{name: a, type: string}]\n"))
    (a,) = c.fields
    assert (a.required, a.default, a.aliases, a.values, a.precision, a.scale) == (False, None, (), None, None, None)
    assert (c.doc, c.evolution.columns, c.evolution.data_type) == (None, "evolve", "discard_row")
    assert a.may_be_null


def test_contract_inline_in_a_larger_file_names_its_place():
    text = "pipeline:\n  contract:\n    name: x\n    version: 1\n    fields:\n      - {name: a, type: lnog}\n"
    doc = load_text(text, "spec.yaml")
    with pytest.raises(ContractError) as e:
        contract_from_doc(doc["pipeline"]["contract"], "spec.yaml", "pipeline.contract")
    assert str(e.value) == "spec.yaml:6: pipeline.contract.fields[0].type: unknown type 'lnog' (did you mean 'long'?)"


def test_contracts_are_frozen_and_comparable(tmp_path):
    a = load_contract(write(tmp_path, ALL_TYPES))
    b = load_contract(write(tmp_path, ALL_TYPES, "d.yaml"))
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.name = "y"


def test_schema_fragment_declares_every_field_key():
    keys = set(CONTRACT_SCHEMA["properties"]["fields"]["items"]["properties"])
    # A field's `evolution: {data_type: ...}` is its Field.data_type.
    assert keys - {"evolution"} | {"data_type"} == {f for f in Field.__dataclass_fields__}


# --- registries ------------------------------------------------------------------------------


def test_versions_latest_and_history():
    reg = Registry(FIXTURES)
    assert reg.names() == ["orders"]
    assert reg.versions("orders") == [1, 2, 3]
    assert reg.versions("nope") == []
    assert reg.get("orders").version == 3
    assert reg.get("orders", 1).field("quantity").type == "long"
    assert [c.version for c in reg.history("orders", upto=2)] == [1, 2]
    assert reg.get("orders", 2) is reg.get("orders", 2)  # read once


@pytest.mark.parametrize("ref, version", [("orders", 3), ("orders@2", 2), ("orders/v1", 1), (" orders@3 ", 3)])
def test_resolve_refs(ref, version):
    assert Registry(FIXTURES).resolve(ref).version == version


@pytest.mark.parametrize("ref", ["orders@", "orders@0", "orders/v", "orders/2", "Orders", "orders@latest", ""])
def test_malformed_refs(ref):
    with pytest.raises(ValueError, match="must be name, name@<version> or name/v<version>"):
        parse_ref(ref)
    with pytest.raises(ContractError) as e:
        Registry(FIXTURES).resolve(ref, file="spec.yaml", place="pipeline.contract", line=7)
    assert str(e.value).startswith("spec.yaml:7: pipeline.contract: contract reference")


def test_unknown_name_or_version_names_the_place_of_the_reference():
    reg = Registry(FIXTURES)
    with pytest.raises(UnknownContract) as e:
        reg.resolve("ordres", file="spec.yaml", place="pipeline.contract", line=7)
    assert (
        str(e.value) == f"spec.yaml:7: pipeline.contract: no contract 'ordres' in {FIXTURES} (did you mean 'orders'?)"
    )
    with pytest.raises(UnknownContract) as e:
        reg.resolve("orders@9")
    assert e.value.message == "no version 9 of 'orders' (versions: 1, 2, 3)"


def test_name_and_version_must_match_the_path(tmp_path):
    write(tmp_path, "name: order\nversion: 1\nfields: [{name: a, type: id}]\n", "orders/v1.yaml")
    write(tmp_path, "name: orders\nversion: 3\nfields: [{name: a, type: id}]\n", "orders/v2.yaml")
    reg = Registry(str(tmp_path))
    with pytest.raises(ContractError) as e:
        reg.get("orders", 1)
    assert str(e.value) == (
        f"{tmp_path}/orders/v1.yaml:1: name: 'order' does not match the file's folder 'orders' "
        "(schemas/<name>/v<N>.yaml)"
    )
    with pytest.raises(ContractError) as e:
        reg.resolve("orders@2", place="pipeline.contract")  # an invalid file keeps its own place
    assert str(e.value) == f"{tmp_path}/orders/v2.yaml:2: version: 3 does not match the file name v2.yaml"


def test_files_that_are_not_versions_are_ignored(tmp_path):
    write(tmp_path, "name: a\nversion: 1\nfields: [{name: a, type: id}]\n", "a/v1.yaml")
    for stray in ("a/v0.yaml", "a/v01.yaml", "a/latest.yaml", "a/v2.yml", "B/v1.yaml"):
        write(tmp_path, "x: 1\n", stray)
    reg = Registry(str(tmp_path))
    assert (reg.names(), reg.versions("a")) == (["a"], [1])


def test_lookup_order_a_name_belongs_to_the_first_root(tmp_path):
    write(tmp_path, "name: orders\nversion: 7\nfields: [{name: a, type: id}]\n", "mine/orders/v7.yaml")
    reg = Registry([str(tmp_path / "mine"), FIXTURES])
    assert reg.versions("orders") == [7]  # shadowed whole, not merged
    assert reg.root_of("orders") == str(tmp_path / "mine")
    assert reg.listing() == [
        ("orders", str(tmp_path / "mine"), [7], False),
        ("orders", FIXTURES, [1, 2, 3], True),
    ]
    assert Registry([str(tmp_path / "absent"), FIXTURES]).get("orders").version == 3


def test_a_spec_looks_in_its_own_schemas_then_the_packaged_ones(tmp_path):
    write(tmp_path, "name: orders\nversion: 1\nfields: [{name: a, type: id}]\n", "schemas/orders/v1.yaml")
    reg = Registry.for_spec(str(tmp_path))
    assert reg.roots == (str(tmp_path / "schemas"), PACKAGED_SCHEMAS)
    assert reg.resolve("orders").names == ("a",)
    assert reg.resolve("events@1").names[:2] == ("event_id", "user_id")


def test_the_packaged_events_contract():
    events = Registry(PACKAGED_SCHEMAS).get("events", 1)
    assert events.names == ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
    assert events.field("event_type").values == ("view", "click", "add_to_cart", "purchase", "refund")
    assert events.field("amount").required_if.values == ("purchase", "refund")
    assert events.field("ts").arrow_type == pa.timestamp("us", tz="UTC")


def _packaged():
    reg = Registry(PACKAGED_SCHEMAS)
    return [(n, v) for n in reg.names() for v in reg.versions(n)]


@pytest.mark.parametrize("name, version", _packaged())
def test_every_packaged_contract_is_valid(name, version):
    c = Registry(PACKAGED_SCHEMAS).get(name, version)
    assert (c.name, c.version) == (name, version)
    assert len(c.arrow_schema()) == len(c.fields)
