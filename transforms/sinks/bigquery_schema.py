"""The BigQuery sink's pure parts: names, the table schema from an Arrow schema, its evolution,
partition decorators and the MERGE statement. No client, no network (``bigquery.py`` calls them).

Types: strings STRING, integers INT64, floats FLOAT64, booleans BOOL, UTC timestamps TIMESTAMP,
dates DATE, times TIME, binary BYTES, structs RECORD, and decimals NUMERIC when they fit it
(scale <= 9, integer digits <= 29), else BIGNUMERIC (scale <= 38, integer digits <= 38). A
column is REQUIRED when the caller says so (a required field of the record contract), else
NULLABLE.

Evolution of an existing table: a column the rows bring and the table lacks is added NULLABLE
(BigQuery adds no REQUIRED column to a table that has rows); a REQUIRED column the rows may leave
null is relaxed to NULLABLE; a BIGNUMERIC column also takes the decimals that would be NUMERIC.
Anything else that differs is a type change, which BigQuery does not make on a load or a schema
update: it is refused with one error naming every such column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
from google.cloud.bigquery import SchemaField

__all__ = [
    "DATASET",
    "LABEL_KEY",
    "LABEL_VALUE",
    "MODES",
    "PANE_COLUMN",
    "PROJECT",
    "SchemaChangeRefused",
    "TABLE",
    "TableName",
    "bigquery_schema",
    "bigquery_type",
    "check_column",
    "evolve",
    "file_schema",
    "merge_statement",
    "partition_id",
]

MODES = ("replace_partitions", "merge")
# The firing each merged row came from (its pane index): a stored row is replaced only by the
# same or a later firing (as in the PostgreSQL sink), so out-of-order firings leave the newest.
PANE_COLUMN = "_pane"

PROJECT = r"^(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
DATASET = r"^[A-Za-z0-9_]{1,1024}$"
# Tables stay short of BigQuery's 1,024 characters: merges stage rows in ``<table>__stage_<32 hex>``.
TABLE = r"^[A-Za-z0-9_]{1,960}$"
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,299}$"
LABEL_KEY = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE = r"^[a-z0-9_-]{0,63}$"
_RESERVED = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_", "_change_")

# Names the API gives back for the types written here (tables made elsewhere use the legacy ones).
_SAME = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}
_WIDER = {("NUMERIC", "BIGNUMERIC")}
_EPOCH = date(1970, 1, 1)  # (rows, table): the table's type takes the rows' values


class SchemaChangeRefused(ValueError):
    """The rows' columns differ from the table's in a way BigQuery cannot evolve in place."""


def _check(value: str, pattern: str, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"{what} {value!r} must match {pattern}")
    return value


def check_column(name: str) -> str:
    """``name`` if BigQuery takes it as a column name written here (ValueError otherwise)."""
    _check(name, COLUMN, "column")
    if name.lower().startswith(_RESERVED):
        raise ValueError(f"column {name!r} starts with a prefix BigQuery reserves ({', '.join(_RESERVED)})")
    return name


def _quote(name: str) -> str:
    # Every name quoted here matched one of the patterns above: no backquote or backslash in it.
    return f"`{name}`"


@dataclass(frozen=True)
class TableName:
    """A table's project, dataset and table id, validated; ``sql`` is its quoted SQL name."""

    project: str
    dataset: str
    table: str

    def __post_init__(self):
        _check(self.project, PROJECT, "project")
        _check(self.dataset, DATASET, "dataset")
        _check(self.table, TABLE, "table")

    @property
    def path(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        return ".".join(map(_quote, (self.project, self.dataset, self.table)))

    def partition(self, partition: str) -> str:
        """The table with a partition decorator: ``project.dataset.table$20240301``."""
        if not re.fullmatch(r"\d{8}", partition):
            raise ValueError(f"a day partition is YYYYMMDD, got {partition!r}")
        return f"{self.path}${partition}"

    def staging(self, token: str) -> TableName:
        """The staging table a merge loads its rows into first."""
        _check(token, r"^[0-9a-f]{32}$", "staging token")
        return TableName(self.project, self.dataset, f"{self.table}__stage_{token}")


def partition_id(day: int) -> str:
    """The DAY partition id (``YYYYMMDD``) of a day number since 1970-01-01 (UTC)."""
    return (_EPOCH + timedelta(days=int(day))).strftime("%Y%m%d")


def _decimal_type(t: pa.Decimal128Type | pa.Decimal256Type) -> str:
    whole = t.precision - t.scale
    if t.scale <= 9 and whole <= 29:
        return "NUMERIC"
    if t.scale <= 38 and whole <= 38:
        return "BIGNUMERIC"
    raise ValueError(f"decimal({t.precision}, {t.scale}) fits neither NUMERIC nor BIGNUMERIC")


def bigquery_type(t: pa.DataType) -> str:
    """The BigQuery type of an Arrow type (ValueError when there is none written here)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "STRING"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_integer(t):
        if t == pa.uint64():
            raise ValueError("uint64 does not fit INT64: cast it to int64 or a decimal first")
        return "INT64"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_decimal(t):
        return _decimal_type(t)
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise ValueError(f"{t} has no time zone: timestamps are written as UTC TIMESTAMPs")
        return "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    if pa.types.is_struct(t):
        return "RECORD"
    raise ValueError(f"no BigQuery column type for Arrow type {t} (lists and maps: make them JSON text first)")


def _field(f: pa.Field, required: bool) -> SchemaField:
    kind = bigquery_type(f.type)
    sub = tuple(_field(f.type.field(i), False) for i in range(f.type.num_fields)) if kind == "RECORD" else ()
    return SchemaField(check_column(f.name), kind, mode="REQUIRED" if required else "NULLABLE", fields=sub)


def bigquery_schema(schema: pa.Schema, required=()) -> list[SchemaField]:
    """The table schema of the rows: one column per Arrow field, REQUIRED when named in ``required``."""
    seen: dict[str, str] = {}
    for name in schema.names:
        if name.lower() in seen:
            raise ValueError(f"columns {seen[name.lower()]!r} and {name!r} are one column to BigQuery (case)")
        seen[name.lower()] = name
    missing = set(required) - set(schema.names)
    if missing:
        raise ValueError(f"required columns {sorted(missing)} are not in the schema")
    return [_field(f, f.name in set(required)) for f in schema]


def _kind(field: SchemaField) -> str:
    return _SAME.get(field.field_type.upper(), field.field_type.upper())


def _same_type(rows: SchemaField, table: SchemaField) -> bool:
    a, b = _kind(rows), _kind(table)
    if a == b == "RECORD":
        ours = {f.name.lower(): f for f in table.fields}
        return len(rows.fields) == len(table.fields) and all(
            f.name.lower() in ours and _same_type(f, ours[f.name.lower()]) for f in rows.fields
        )
    return a == b or (a, b) in _WIDER


@dataclass(frozen=True)
class Evolution:
    """A table's schema after the rows' columns were reconciled with it.

    Args:
        schema: The table's columns (its own order, added ones last).
        added: Columns added (NULLABLE).
        relaxed: REQUIRED columns made NULLABLE.
    """

    schema: tuple[SchemaField, ...]
    added: tuple[str, ...] = ()
    relaxed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relaxed)


def evolve(table: str, current: list[SchemaField], wanted: list[SchemaField]) -> Evolution:
    """Reconciles the rows' schema ``wanted`` with the table's ``current`` one (see the module doc).

    Raises SchemaChangeRefused naming every column whose type differs, and every REQUIRED
    column of the table the rows do not carry (its load would fail).
    """
    theirs = {f.name.lower(): f for f in wanted}
    problems = []
    schema, relaxed = [], []
    for f in current:
        new = theirs.get(f.name.lower())
        if new is None:
            if f.mode == "REQUIRED":
                problems.append(f"column {f.name} is REQUIRED in the table but the rows do not have it")
            schema.append(f)
            continue
        if f.mode == "REPEATED" or not _same_type(new, f):
            have = "REPEATED " + _kind(f) if f.mode == "REPEATED" else _kind(f)
            problems.append(f"column {f.name} is {have} in the table but {_kind(new)} in the rows")
            continue
        if f.mode == "REQUIRED" and new.mode != "REQUIRED":
            relaxed.append(f.name)
            f = SchemaField.from_api_repr({**f.to_api_repr(), "mode": "NULLABLE"})
        schema.append(f)
    if problems:
        raise SchemaChangeRefused(
            f"BigQuery table {table}: {'; '.join(problems)}. BigQuery does not change a column's type on a load; "
            "change the table first (ALTER TABLE ... ALTER COLUMN ... SET DATA TYPE where BigQuery allows it, or a "
            "new table) or write to another table"
        )
    ours = {f.name.lower() for f in current}
    added = [
        SchemaField(f.name, f.field_type, mode="NULLABLE", fields=f.fields)
        for f in wanted
        if f.name.lower() not in ours
    ]
    return Evolution(tuple(schema + added), tuple(f.name for f in added), tuple(relaxed))


def _file_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _file_type(f.type)) for f in t])
    return t


def file_schema(schema: pa.Schema, table: tuple[SchemaField, ...] | list[SchemaField]) -> pa.Schema:
    """The Arrow schema of the parquet file a load sends: BigQuery's widths (64-bit integers and
    floats, microsecond UTC timestamps), and a column non-nullable exactly when the table's is
    REQUIRED (an optional parquet column does not load into a REQUIRED one)."""
    required = {f.name.lower() for f in table if f.mode == "REQUIRED"}
    return pa.schema([pa.field(f.name, _file_type(f.type), nullable=f.name.lower() not in required) for f in schema])


def merge_statement(target: TableName, staging: TableName, columns, keys, partition: str | None = None) -> str:
    """The MERGE of the staged rows into ``target`` by ``keys``.

    A key matches its stored row when both are equal or both null (``IS NOT DISTINCT FROM``); a
    stored row is replaced only by a row of the same or a later firing (``_pane``), and a key not
    stored yet is inserted. With ``partition`` (the partitioning column, one of the keys), the
    target is read only between the ``@partition_lo`` and ``@partition_hi`` parameters (the staged
    rows' least and greatest value), so BigQuery prunes the partitions it scans. Only validated,
    quoted names go into the text; values come from the staging table or the parameters.
    """
    columns = [check_column(c) for c in columns]
    keys = [check_column(k) for k in keys]
    if not keys or set(keys) - set(columns):
        raise ValueError(f"keys {keys} must be columns of {columns}")
    if PANE_COLUMN in columns:
        raise ValueError(f"column {PANE_COLUMN!r} is the sink's own (the firing each row came from)")
    if partition is not None and partition not in keys:
        raise ValueError(f"the partition filter's column {partition!r} must be one of the keys")
    q = _quote
    on = [f"T.{q(k)} IS NOT DISTINCT FROM S.{q(k)}" for k in keys]
    if partition is not None:
        on.append(f"T.{q(partition)} BETWEEN @partition_lo AND @partition_hi")
    written = [*columns, PANE_COLUMN]
    updates = ", ".join(f"{q(c)} = S.{q(c)}" for c in written if c not in keys)
    pane = q(PANE_COLUMN)
    return (
        f"MERGE INTO {target.sql} AS T\n"
        f"USING {staging.sql} AS S\n"
        f"ON {' AND '.join(on)}\n"
        f"WHEN MATCHED AND (T.{pane} IS NULL OR T.{pane} <= S.{pane}) THEN\n"
        f"  UPDATE SET {updates}\n"
        f"WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(map(q, written))}) VALUES ({', '.join(f'S.{q(c)}' for c in written)})"
    )
