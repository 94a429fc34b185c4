"""Hostile YAML given as a spec or contract: refused with one SpecError, never run, never left to
exhaust memory or CPU (security tests of the spec loader)."""

from __future__ import annotations

import pytest

from beam_pipelines.spec.yamlsrc import MAX_BYTES, MAX_DEPTH, MAX_NODES, SpecError, load, load_text

LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def test_a_billion_laughs_is_refused_at_its_aliases():
    with pytest.raises(SpecError, match=f"more than {MAX_NODES:,} values once its aliases"):
        load_text(LAUGHS, "laughs.yaml")
    # A few aliases, as people write them, are fine.
    doc = load_text("base: &b {size: 1h}\none: *b\ntwo: *b\n")
    assert doc["one"] == doc["two"] == {"size": "1h"}


def test_deep_nesting_and_oversized_text_are_refused(tmp_path):
    with pytest.raises(SpecError, match=f"nested more than {MAX_DEPTH} levels"):
        load_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(SpecError, match=f"nested more than {MAX_DEPTH} levels"):
        load_text("\n".join("  " * i + f"k{i}:" for i in range(200)) + " 1\n")
    big = tmp_path / "big.yaml"
    big.write_text("pipeline:\n  doc: '" + "x" * MAX_BYTES + "'\n")
    with pytest.raises(SpecError, match="more than a spec's") as e:
        load(str(big))
    assert str(e.value).startswith(str(big))


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch /tmp/pwned']",
        "a: !!python/name:os.system ''",
        "a: !!binary aGk=\nb: !custom x",
    ],
)
def test_tags_that_build_objects_are_refused(text):
    with pytest.raises(SpecError, match="malformed YAML"):
        load_text(text)
