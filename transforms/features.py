"""AddFeatures: time and email features computed on Arrow tables."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.records import as_array

__all__ = ["AddFeatures"]


def add_features(table: pa.Table, ts: str, email: str | None) -> pa.Table:
    """Adds ``email_domain`` (after ``email``), ``hour_of_day``, ``day_of_week`` (0 = Monday)
    and ``is_weekend``, all from UTC event time."""
    t = table.column(ts)
    if email is not None:
        parts = pc.extract_regex(as_array(table.column(email)), r"@(?P<d>[^@]+)$")
        domain = pc.utf8_lower(pc.struct_field(parts, "d"))
        table = table.add_column(table.schema.get_field_index(email) + 1, "email_domain", domain)
    dow = pc.day_of_week(t)
    before = table.schema.get_field_index("extras")
    at = before if before >= 0 else table.num_columns
    table = table.add_column(at, "hour_of_day", pc.hour(t).cast(pa.int32()))
    table = table.add_column(at + 1, "day_of_week", dow.cast(pa.int32()))
    table = table.add_column(at + 2, "is_weekend", pc.greater_equal(dow, 5))
    return table


class _FeaturesFn(beam.DoFn):
    def __init__(self, ts: str, email: str | None):
        self._ts, self._email = ts, email

    def process(self, table: pa.Table):
        yield add_features(table, self._ts, self._email)


class AddFeatures(beam.PTransform):
    """Adds derived columns to each table.

    Args:
        ts_field: The timestamp[us, UTC] column the time features come from.
        email_field: The (cleansed) email column; ``email_domain`` is inserted after it.
            None leaves email features out.
    """

    def __init__(self, ts_field: str = "ts", email_field: str | None = "email", label: str | None = None):
        super().__init__(label)
        if not ts_field:
            raise ValueError("ts_field is required")
        self._ts = ts_field
        self._email = email_field

    def expand(self, tables):
        return tables | "Features" >> beam.ParDo(_FeaturesFn(self._ts, self._email)).with_input_types(
            pa.Table
        ).with_output_types(pa.Table)
