"""Cleanse: vectorised normalisation of optional fields, counting what it had to null.

Cleansing never drops a record: a value that fails its rule becomes null and is counted
under the rule's quality name (``invalid_email``, ``invalid_country``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.records import as_array, typed

__all__ = ["Cleanse", "CountryCode", "Email"]

# What Python's \s matches in str patterns, spelled for RE2.
_UNICODE_SPACE = r"\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}"


@dataclass(frozen=True)
class Email:
    """Trimmed, lower case; null unless it looks like ``local@domain.tld``."""

    field: str = "email"
    # The spec's ^[^@\s]+@[^@\s]+\.[^@\s]+$ with Python's Unicode \s (RE2's \s is ASCII only).
    pattern: str = r"^[^@{ws}]+@[^@{ws}]+\.[^@{ws}]+$".replace("{ws}", _UNICODE_SPACE)
    quality: str = "invalid_email"

    def apply(self, col: pa.Array) -> tuple[pa.Array, int]:
        value = pc.utf8_lower(pc.utf8_trim_whitespace(col))
        ok = pc.fill_null(pc.match_substring_regex(value, self.pattern), False)
        bad = pc.and_(pc.is_valid(col), pc.invert(ok))
        return pc.if_else(ok, value, pa.scalar(None, pa.string())), pc.sum(bad).as_py() or 0


@dataclass(frozen=True)
class CountryCode:
    """Trimmed, upper case; null unless exactly two letters A-Z."""

    field: str = "country"
    pattern: str = r"^[A-Z]{2}$"
    quality: str = "invalid_country"

    def apply(self, col: pa.Array) -> tuple[pa.Array, int]:
        value = pc.utf8_upper(pc.utf8_trim_whitespace(col))
        ok = pc.fill_null(pc.match_substring_regex(value, self.pattern), False)
        bad = pc.and_(pc.is_valid(col), pc.invert(ok))
        return pc.if_else(ok, value, pa.scalar(None, pa.string())), pc.sum(bad).as_py() or 0


def cleanse_table(table: pa.Table, rules: tuple) -> tuple[pa.Table, dict[str, int]]:
    counts: dict[str, int] = {}
    for rule in rules:
        i = table.schema.get_field_index(rule.field)
        value, bad = rule.apply(as_array(table.column(i)))
        table = table.set_column(i, rule.field, value)
        counts[rule.quality] = counts.get(rule.quality, 0) + bad
    return table, counts


class _CleanseFn(beam.DoFn):
    def __init__(self, rules: tuple):
        self._rules = rules

    def process(self, table: pa.Table):
        cleaned, counts = cleanse_table(table, self._rules)
        for name, n in counts.items():
            beam.metrics.Metrics.counter("cleanse", name).inc(n)
        yield cleaned
        yield beam.pvalue.TaggedOutput("stats", {"quality." + k: v for k, v in counts.items()})


class Cleanse(beam.PTransform):
    """Normalises optional fields in place; bad values become null and are counted.

    Args:
        rules: Cleansing rules such as ``Email('email')`` and ``CountryCode('country')``;
            each names a string column the input tables must have.

    Returns a dict: ``cleaned`` (tables, same schema) and ``stats`` (dicts of counts,
    ``quality.<name>``).
    """

    def __init__(self, rules=(Email(), CountryCode()), label: str | None = None):
        super().__init__(label)
        if not rules:
            raise ValueError("Cleanse needs at least one rule")
        self._rules = tuple(rules)

    def expand(self, tables):
        out = tables | "Cleanse" >> beam.ParDo(_CleanseFn(self._rules)).with_outputs(
            "stats", main="cleaned"
        ).with_input_types(pa.Table)
        return {"cleaned": typed(out.cleaned), "stats": typed(out.stats, dict)}
