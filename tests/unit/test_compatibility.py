"""Compatibility of contract versions (Confluent Schema Registry's modes): a case per rule in
both directions and in full mode, transitive checks over three versions, and the CLI."""

import os

import pytest
import yaml

from beam_pipelines import schemas
from beam_pipelines.contracts import (
    MODES,
    Problem,
    Registry,
    check_compatibility,
    check_history,
    contract_from_doc,
    is_compatible,
)
from beam_pipelines.spec.yamlsrc import load_text

FIXTURES = os.path.join(os.path.dirname(__file__), "contracts", "registry")
KEY = {"name": "order_id", "type": "id"}


def contract(version, *fields, columns="evolve", name="orders"):
    doc = {"name": name, "version": version, "fields": [KEY, *fields], "evolution": {"columns": columns}}
    return contract_from_doc(load_text(yaml.safe_dump(doc, sort_keys=False)))


def found(old_fields, new_fields, mode, old_columns="evolve", new_columns="evolve"):
    """(severity, place) of each problem of v1 -> v2 under ``mode``."""
    old = contract(1, *old_fields, columns=old_columns)
    new = contract(2, *new_fields, columns=new_columns)
    return [(p.severity, p.place) for p in check_compatibility(old, new, mode)]


def both(old_fields, new_fields, **kw):
    """The problems under backward, forward and full."""
    return tuple(found(old_fields, new_fields, m, **kw) for m in ("backward", "forward", "full"))


OK = []


# --- added and removed fields ------------------------------------------------------------------


def test_added_optional_field_is_fully_compatible():
    assert both([], [{"name": "note", "type": "string"}]) == (OK, OK, OK)


def test_added_required_field_with_a_default_is_fully_compatible():
    assert both([], [{"name": "qty", "type": "long", "required": True, "default": 1}]) == (OK, OK, OK)


def test_added_required_field_without_a_default_is_only_forward_compatible():
    old, new = contract(1), contract(2, {"name": "qty", "type": "long", "required": True})
    assert [str(p) for p in check_compatibility(old, new, "backward")] == [
        "error: fields.qty: added; v2 has it required without a default, so data written under v1 cannot be "
        "read by v2 (backward)"
    ]
    assert check_compatibility(old, new, "forward") == []
    assert [p.place for p in check_compatibility(old, new, "full")] == ["fields.qty"]


def test_added_id_is_a_required_field():
    assert both([], [{"name": "customer_id", "type": "id"}]) == (
        [("error", "fields.customer_id")],
        OK,
        [("error", "fields.customer_id")],
    )


def test_added_required_if_field_without_a_default_is_not_backward_compatible():
    kind = {"name": "kind", "type": "string", "values": ["buy", "sell"]}
    new = [kind, {"name": "price", "type": "double", "required_if": {"field": "kind", "values": ["buy"]}}]
    assert both([kind], new) == ([("error", "fields.price")], OK, [("error", "fields.price")])
    old, v2 = contract(1, kind), contract(2, *new)
    assert "required when kind in buy without a default" in check_compatibility(old, v2)[0].message


def test_removed_optional_field_is_fully_compatible():
    assert both([{"name": "note", "type": "string"}], []) == (OK, OK, OK)


def test_removed_field_with_a_default_is_fully_compatible():
    assert both([{"name": "qty", "type": "long", "required": True, "default": 1}], []) == (OK, OK, OK)


def test_removed_required_field_is_only_backward_compatible():
    # Confluent: deleting any field is backward compatible; forward only when it was optional.
    old, new = contract(1, {"name": "qty", "type": "long", "required": True}), contract(2)
    assert check_compatibility(old, new, "backward") == []
    assert [str(p) for p in check_compatibility(old, new, "forward")] == [
        "error: fields.qty: removed; v1 has it required without a default, so data written under v2 cannot be "
        "read by v1 (forward)"
    ]
    assert [p.place for p in check_compatibility(old, new, "full")] == ["fields.qty"]


@pytest.mark.parametrize(
    "columns, expected",
    [
        ("evolve", OK),
        ("discard_value", [("warning", "fields.note")]),
        ("discard_row", [("error", "fields.note")]),
        ("freeze", [("error", "fields.note")]),
    ],
)
def test_a_field_the_reader_does_not_declare_follows_its_evolution_columns(columns, expected):
    note = {"name": "note", "type": "string"}
    # Removed: the new contract reads old data that carries it (backward).
    assert found([note], [], "backward", new_columns=columns) == expected
    assert found([note], [], "forward", new_columns=columns) == OK
    # Added: the old contract reads new data that carries it (forward).
    assert found([], [note], "forward", old_columns=columns) == expected
    assert found([], [note], "backward", old_columns=columns) == OK


def test_discard_row_message():
    old, new = contract(1, {"name": "note", "type": "string"}), contract(2, columns="discard_row")
    assert [str(p) for p in check_compatibility(old, new)] == [
        "error: fields.note: removed; v2 dead-letters records that carry it (evolution.columns: discard_row), so "
        "data written under v1 cannot be read by v2 (backward)"
    ]


# --- types ---------------------------------------------------------------------------------------


def test_the_forward_narrowing_message():
    old, new = contract(1, {"name": "quantity", "type": "int"}), contract(2, {"name": "quantity", "type": "long"})
    assert [str(p) for p in check_compatibility(old, new, "forward")] == [
        "error: fields.quantity.type: long -> int narrows; data written under v2 cannot be read by v1 (forward)"
    ]


@pytest.mark.parametrize("wide, narrow", [("int", "long"), ("int", "double"), ("long", "double")])
def test_promotion_is_backward_compatible_and_its_reverse_narrows(wide, narrow):
    place = [("error", "fields.x.type")]
    assert both([{"name": "x", "type": wide}], [{"name": "x", "type": narrow}]) == (OK, place, place)
    assert both([{"name": "x", "type": narrow}], [{"name": "x", "type": wide}]) == (place, OK, place)
    old, new = contract(1, {"name": "x", "type": narrow}), contract(2, {"name": "x", "type": wide})
    assert check_compatibility(old, new)[0].message.startswith(f"{narrow} -> {wide} narrows;")


@pytest.mark.parametrize(
    "a, b", [("string", "long"), ("boolean", "string"), ("timestamp", "long"), ("double", "decimal")]
)
def test_other_type_changes_are_refused_both_ways(a, b):
    place = [("error", "fields.x.type")]
    assert both([{"name": "x", "type": a}], [{"name": "x", "type": b}]) == (place, place, place + place)
    old, new = contract(1, {"name": "x", "type": a}), contract(2, {"name": "x", "type": b})
    assert "changes the type" in check_compatibility(old, new)[0].message


def test_id_and_string_are_the_same_column():
    required = {"name": "ref", "type": "string", "required": True}
    assert both([{"name": "ref", "type": "id"}], [required]) == (OK, OK, OK)
    assert both([required], [{"name": "ref", "type": "id"}]) == (OK, OK, OK)
    # An id is required: an optional string becoming an id is an optional field becoming required.
    optional = {"name": "ref", "type": "string"}
    assert both([optional], [{"name": "ref", "type": "id"}]) == (
        [("error", "fields.ref.required")],
        OK,
        [("error", "fields.ref.required")],
    )


def test_decimal_precision_widening_with_the_same_scale():
    d12, d18 = {"name": "amt", "type": "decimal", "precision": 12}, {"name": "amt", "type": "decimal", "precision": 18}
    assert both([d12], [d18]) == (OK, [("error", "fields.amt.precision")], [("error", "fields.amt.precision")])
    old, new = contract(1, d12), contract(2, d18)
    assert str(check_compatibility(old, new, "forward")[0]) == (
        "error: fields.amt.precision: decimal(18,2) -> decimal(12,2) narrows the precision; data written under v2 "
        "cannot be read by v1 (forward)"
    )


def test_decimal_scale_change_is_refused_both_ways():
    old = [{"name": "amt", "type": "decimal", "precision": 18, "scale": 2}]
    new = [{"name": "amt", "type": "decimal", "precision": 20, "scale": 4}]
    place = [("error", "fields.amt.scale")]
    assert both(old, new) == (place, place, place + place)


# --- renames -----------------------------------------------------------------------------------


def test_rename_through_aliases_is_backward_compatible_only():
    old = [{"name": "customer", "type": "id"}]
    new = [{"name": "customer_id", "type": "id", "aliases": ["customer"]}]
    # The old contract does not know the new name: its required field is gone (forward).
    assert both(old, new) == (OK, [("error", "fields.customer")], [("error", "fields.customer")])


def test_rename_without_aliases_is_an_added_and_a_removed_field():
    old, new = [{"name": "customer", "type": "id"}], [{"name": "customer_id", "type": "id"}]
    assert both(old, new) == (
        [("error", "fields.customer_id")],
        [("error", "fields.customer")],
        [("error", "fields.customer_id"), ("error", "fields.customer")],
    )


def test_an_aliased_field_is_still_checked():
    old = [{"name": "qty", "type": "long"}]
    new = [{"name": "quantity", "type": "int", "aliases": ["qty"]}]
    assert found(old, new, "backward") == [("error", "fields.quantity.type")]


def test_a_field_of_the_same_name_wins_over_an_alias():
    old = [{"name": "a", "type": "string"}, {"name": "b", "type": "long"}]
    new = [{"name": "b", "type": "long", "aliases": ["a"]}]
    assert found(old, new, "backward") == OK  # b reads b; a is undeclared, kept in extras


# --- values, requirements, rules -----------------------------------------------------------------


def test_enum_reader_must_know_every_value_the_writer_accepts():
    few = {"name": "status", "type": "string", "values": ["placed", "paid"]}
    more = {"name": "status", "type": "string", "values": ["placed", "paid", "cancelled"]}
    place = [("error", "fields.status.values")]
    assert both([few], [more]) == (OK, place, place)
    assert both([more], [few]) == (place, OK, place)
    old, new = contract(1, more), contract(2, few)
    assert str(check_compatibility(old, new)[0]) == (
        "error: fields.status.values: v2 does not know cancelled, which v1 accepts; data written under v1 cannot be "
        "read by v2 (backward)"
    )


def test_enum_default_does_not_excuse_unknown_values():
    more = {"name": "status", "type": "string", "values": ["placed", "cancelled"]}
    few = {"name": "status", "type": "string", "values": ["placed"], "default": "placed"}
    (p,) = check_compatibility(contract(1, more), contract(2, few))
    assert "(its default fills only absent values)" in p.message


def test_free_text_becoming_an_enum_is_refused_and_the_reverse_allowed():
    text = {"name": "status", "type": "string"}
    enum = {"name": "status", "type": "string", "values": ["placed"]}
    assert both([text], [enum]) == ([("error", "fields.status.values")], OK, [("error", "fields.status.values")])


def test_optional_becoming_required_is_not_backward_compatible():
    optional, required = {"name": "qty", "type": "long"}, {"name": "qty", "type": "long", "required": True}
    place = [("error", "fields.qty.required")]
    assert both([optional], [required]) == (place, OK, place)
    assert both([required], [optional]) == (OK, place, place)
    # A default fills the nulls.
    assert both([optional], [{**required, "default": 0}]) == (OK, OK, OK)
    # A writer with a default never leaves it null.
    assert both([{**optional, "default": 0}], [required]) == (OK, OK, OK)


def test_a_new_required_if_is_not_backward_compatible():
    kind = {"name": "kind", "type": "string", "values": ["buy", "sell"]}
    price = {"name": "price", "type": "double"}
    buy = {**price, "required_if": {"field": "kind", "values": ["buy"]}}
    buy_sell = {**price, "required_if": {"field": "kind", "values": ["buy", "sell"]}}
    assert both([kind, price], [kind, buy]) == (
        [("error", "fields.price.required_if")],
        OK,
        [("error", "fields.price.required_if")],
    )
    assert both([kind, buy_sell], [kind, buy]) == (
        [],
        [("error", "fields.price.required_if")],
        [("error", "fields.price.required_if")],
    )


def test_changed_pattern_is_a_warning():
    a = {"name": "cur", "type": "string", "pattern": "^[A-Z]{3}$"}
    b = {"name": "cur", "type": "string", "pattern": "^[A-Z]{2,3}$"}
    place = [("warning", "fields.cur.pattern")]
    assert both([a], [b]) == (place, place, place + place)
    assert both([{"name": "cur", "type": "string"}], [a]) == (place, OK, place)
    old, new = contract(1, a), contract(2, b)
    problems = check_compatibility(old, new)
    assert is_compatible(problems)
    assert str(problems[0]) == (
        "warning: fields.cur.pattern: ^[A-Z]{3}$ -> ^[A-Z]{2,3}$: text v1 accepted may not match; data written under "
        "v1 may fail v2 (backward)"
    )


def test_narrowed_bounds_are_warnings_and_widened_ones_fine():
    wide = {"name": "qty", "type": "long", "minimum": 0, "maximum": 100}
    narrow = {"name": "qty", "type": "long", "minimum": 1, "maximum": 10}
    places = [("warning", "fields.qty.minimum"), ("warning", "fields.qty.maximum")]
    assert both([wide], [narrow]) == (places, OK, places)
    assert both([{"name": "qty", "type": "long"}], [{"name": "qty", "type": "long", "minimum": 0}]) == (
        [("warning", "fields.qty.minimum")],
        OK,
        [("warning", "fields.qty.minimum")],
    )
    problems = check_compatibility(contract(1, wide), contract(2, narrow))
    assert is_compatible(problems)
    assert problems[0].message == (
        "0 -> 1 narrows: values v1 accepted may be below it; data written under v1 may fail v2 (backward)"
    )


def test_timestamp_bounds_count_the_validator_defaults():
    bare = {"name": "ts", "type": "timestamp"}
    later = {"name": "ts", "type": "timestamp", "minimum": "2010-01-01T00:00:00Z"}
    earlier = {"name": "ts", "type": "timestamp", "minimum": "1990-01-01T00:00:00Z"}
    assert found([bare], [later], "backward") == [("warning", "fields.ts.minimum")]
    assert found([earlier], [bare], "backward") == [("warning", "fields.ts.minimum")]  # 2000 by default
    assert found([bare], [earlier], "backward") == OK
    assert found([bare], [{**bare, "maximum": "2100-01-01T00:00:00+00:00"}], "full") == OK


def test_fewer_decimals_is_a_warning():
    assert both([{"name": "x", "type": "double", "decimals": 4}], [{"name": "x", "type": "double", "decimals": 2}]) == (
        [("warning", "fields.x.decimals")],
        OK,
        [("warning", "fields.x.decimals")],
    )


def test_identical_contracts_and_the_meta_warnings():
    assert check_compatibility(contract(1), contract(2), "full") == []
    assert [p.place for p in check_compatibility(contract(2), contract(2))] == ["version"]
    assert [str(p) for p in check_compatibility(contract(1), contract(2, name="other"))] == [
        "warning: name: comparing different contracts 'orders' and 'other'"
    ]
    (p,) = check_compatibility(contract(2, {"name": "q", "type": "long", "required": True}), contract(2), "forward")[1:]
    assert "data written under the new contract cannot be read by the old contract" in p.message


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of backward, "):
        check_compatibility(contract(1), contract(2), "sideways")
    with pytest.raises(ValueError, match="at least one"):
        check_history([], contract(2))


def test_problem_text():
    assert str(Problem("fields.a", "bad")) == "error: fields.a: bad"
    assert not is_compatible([Problem("a", "b", "warning"), Problem("c", "d")])
    assert is_compatible([Problem("a", "b", "warning")])


# --- transitive, over three versions -------------------------------------------------------------


def test_transitive_modes_check_every_earlier_version():
    reg = Registry(FIXTURES)
    v1, v2, v3 = reg.history("orders")
    # v2 dropped quantity (a long), v3 brings it back as an int: fine against v2, narrowing against v1.
    assert check_history([v1, v2], v3, "backward") == []
    assert [str(p) for p in check_history([v1, v2], v3, "backward_transitive")] == [
        "error: fields.quantity.type: long -> int narrows; data written under v1 cannot be read by v3 (backward)"
    ]
    assert check_history([v1, v2], v3, "forward_transitive") == [
        Problem(
            "fields.status.values",
            "v1 does not know cancelled, which v3 accepts; data written under v3 cannot be read by v1 (forward)",
        ),
        Problem(
            "fields.amount.precision",
            "decimal(18,2) -> decimal(12,2) narrows the precision; data written under v3 cannot be read by v1 "
            "(forward)",
        ),
    ]
    full = check_history([v1, v2], v3, "full_transitive")
    assert [p.place for p in full] == ["fields.quantity.type", "fields.status.values", "fields.amount.precision"]
    assert check_history([v1, v2], v3, "full") == []
    assert set(MODES) == {f"{m}{t}" for m in ("backward", "forward", "full") for t in ("", "_transitive")}


# --- the command line --------------------------------------------------------------------------


def run(capsys, *argv):
    code = schemas.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_cli_compatible_exits_0(capsys):
    code, out, err = run(capsys, "check", "orders@2", "orders@3", "--registry", FIXTURES)
    assert (code, out, err) == (0, ["compatible (backward): orders v3 against v2: 0 error(s), 0 warning(s)"], [])


def test_cli_incompatible_exits_1_with_every_reason(capsys):
    code, out, err = run(capsys, "check", "orders/v1", "orders/v2", "--mode=full", "--registry", FIXTURES)
    assert code == 1 and err == []
    assert out == [
        "error: fields.status.values: v1 does not know cancelled, which v2 accepts; data written under v2 cannot "
        "be read by v1 (forward)",
        "error: fields.amount.precision: decimal(18,2) -> decimal(12,2) narrows the precision; data written under "
        "v2 cannot be read by v1 (forward)",
        "incompatible (full): orders v2 against v1: 2 error(s), 0 warning(s)",
    ]


def test_cli_transitive_uses_the_registry_history(capsys):
    argv = ("check", "orders@2", "orders@3", "--registry", FIXTURES)
    assert run(capsys, *argv, "--mode", "BACKWARD_TRANSITIVE") == (
        1,
        [
            "error: fields.quantity.type: long -> int narrows; data written under v1 cannot be read by v3 (backward)",
            "incompatible (backward_transitive): orders v3 against v1, v2: 1 error(s), 0 warning(s)",
        ],
        [],
    )


def test_cli_files_and_warnings(capsys, tmp_path):
    new = tmp_path / "v4.yaml"
    text = open(os.path.join(FIXTURES, "orders", "v3.yaml")).read().replace("version: 3", "version: 4")
    new.write_text(text.replace("{name: quantity, type: int, minimum: 1}", "{name: quantity, type: int, minimum: 2}"))
    code, out, err = run(capsys, "check", os.path.join(FIXTURES, "orders", "v3.yaml"), str(new))
    assert code == 0 and err == []
    assert out == [
        "warning: fields.quantity.minimum: 1 -> 2 narrows: values v3 accepted may be below it; data written under "
        "v3 may fail v4 (backward)",
        "compatible (backward): orders v4 against v3: 0 error(s), 1 warning(s)",
    ]


def test_cli_invalid_contract_exits_2_with_one_line_naming_the_place(capsys, tmp_path):
    bad = tmp_path / "v2.yaml"
    bad.write_text("name: orders\nversion: 2\nfields:\n  - {name: a, type: id}\n  - {name: b, type: dobule}\n")
    code, out, err = run(capsys, "check", "orders@1", str(bad), "--registry", FIXTURES)
    assert (code, out) == (2, [])
    assert err == [f"error: {bad}:5: fields[1].type: unknown type 'dobule' (did you mean 'double'?)"]


def test_cli_unknown_ref_and_bad_usage_exit_2(capsys):
    code, out, err = run(capsys, "check", "ordres", "orders", "--registry", FIXTURES)
    assert (code, out) == (2, [])
    assert err == [f"error: no contract 'ordres' in {FIXTURES} or {schemas.PACKAGED_SCHEMAS} (did you mean 'orders'?)"]
    for argv in (["check", "orders"], ["check", "a", "b", "--mode=sideways"], [], ["frobnicate"]):
        code, out, err = run(capsys, *argv)
        assert (code, out, len(err)) == (2, [], 1), argv
        assert err[0].startswith("error: python -m beam_pipelines.schemas") and err[0].endswith("(see --help)")


@pytest.mark.parametrize(
    "argv, text", [([], "check"), (["check"], "--mode"), (["show"], "REF"), (["list"], "--registry")]
)
def test_cli_help(capsys, argv, text):
    code, out, err = run(capsys, *argv, "--help")
    assert code == 0 and err == []
    assert any(text in line for line in out)


def test_cli_show(capsys):
    code, out, err = run(capsys, "show", "orders@2", "--registry", FIXTURES)
    assert code == 0 and err == []
    assert out[0] == "orders v2: Orders placed in the shop."
    assert out[1].split() == ["field", "type", "arrow", "required", "default", "rules"]
    assert out[2].split() == ["order_id", "id", "string", "yes"]
    assert out[5].split() == ["amount", "decimal(18,2)", "decimal128(18,", "2)", "no", "min", "0"]
    assert out[6].split() == ["currency", "string", "string", "no", "EUR", "pattern", "^[A-Z]{3}$", "(upper)"]
    assert out[-1] == "evolution: columns evolve, data_type discard_row"


def test_cli_list(capsys, tmp_path):
    code, out, err = run(capsys, "list", "--registry", FIXTURES, "--registry", str(tmp_path))
    assert code == 0 and err == []
    assert out[0].split() == ["name", "versions", "latest", "folder"]
    assert out[1].split() == ["orders", "1,", "2,", "3", "3", os.path.relpath(FIXTURES)]
    assert any(line.split()[:3] == ["events", "1", "1"] for line in out[2:])
