"""Delta Lake tables through deltalake (delta-rs): the writes the lakehouse layers make.

Each write is one commit. ``commit_properties`` tags it with the run that made it and, as a
Delta application transaction (``app_id``, version), with a number the caller planned before
writing: ``txn_version`` reads it back, so a write that a crash may or may not have committed
is done again only when the table does not hold it (delta-rs' own idempotent-write mechanism,
the one Spark's ``txnAppId``/``txnVersion`` use).

Predicates are SQL text in deltalake (no parameters): names are checked and quoted, values go
in as quoted literals (``sql_string``).
"""

from __future__ import annotations

import re
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "APP_ID", "RUN_ID_KEY", "append", "commit_properties", "merge", "open_table", "quote", "read", "replace_windows",
    "sql_string", "sql_timestamp", "txn_version", "windows_of", "writer_properties",
]  # fmt: skip

APP_ID = "beam_pipelines"  # the application transaction every commit of this project carries
RUN_ID_KEY = "beam_pipelines.run_id"  # the commit's custom metadata naming the run
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a contract's field names (contracts.model.FIELD_NAME)


def writer_properties(level: int | None = None):
    """zstd parquet, as the plain-parquet lake writes; ``level`` for a cold tier (default: zstd's
    fastest, the hot tier's)."""
    from deltalake import WriterProperties

    return WriterProperties(compression="ZSTD", compression_level=level)


def quote(name: str) -> str:
    """A column name as a SQL identifier (quoted: unquoted names are folded to lower case)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"not a plain column name: {name!r}")
    return f'"{name}"'


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled; no control characters accepted)."""
    if any(ord(c) < 32 for c in value):
        raise ValueError(f"control characters in a predicate value: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def sql_timestamp(value: datetime) -> str:
    """A UTC timestamp as a literal a timestamp column compares with (microseconds kept)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in a predicate: timestamps are UTC")
    return sql_string(value.isoformat(timespec="microseconds"))


def open_table(uri: str, storage_options: dict | None = None):
    """The Delta table at ``uri``, or None when there is none yet."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
        return None
    return DeltaTable(uri, storage_options=storage_options)


def read(table) -> pa.Table:
    """The whole table, read by delta-rs' own engine (DataFusion). Not ``to_pyarrow_table()``: in
    deltalake 1.6.6 a process that used it aborts at exit about every other time ("terminate called
    without an active exception", delta-rs issue 2184), its Arrow I/O threads still inside the
    library's filesystem handler."""
    from deltalake import QueryBuilder

    data = pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}  # DataFusion's; as written
    return data.cast(pa.schema([f.with_type(views.get(f.type, f.type)) for f in data.schema]))


def txn_version(table) -> int:
    """The last application-transaction version this project committed to ``table`` (0: none;
    None for ``table`` means the table does not exist yet)."""
    if table is None:
        return 0
    return table.transaction_version(APP_ID) or 0


def commit_properties(run_id: str, txn: int | None = None, **metadata: str):
    """A commit naming ``run_id`` (and ``metadata``, under ``beam_pipelines.<name>``) and, when
    given, carrying application transaction ``txn``."""
    from deltalake import CommitProperties, Transaction

    return CommitProperties(
        custom_metadata={RUN_ID_KEY: run_id, **{f"{APP_ID}.{k}": v for k, v in metadata.items()}},
        app_transactions=[Transaction(APP_ID, txn)] if txn is not None else None,
    )


def append(
    uri_or_table,
    data,
    partition_by: list[str],
    props=None,
    storage_options: dict | None = None,
    level: int | None = None,
) -> None:
    """Appends ``data`` (a table or a RecordBatchReader); creates the table when missing. Added
    columns are added to the table (a contract's evolution adds fields). ``level``: the zstd level
    (a cold tier's)."""
    from deltalake import write_deltalake

    write_deltalake(uri_or_table, data, mode="append", partition_by=partition_by or None, schema_mode="merge",
                    writer_properties=writer_properties(level), commit_properties=props,
                    storage_options=None if not isinstance(uri_or_table, str) else storage_options)  # fmt: skip


def merge(
    table,
    data,
    key: str,
    newer: tuple[str, str] | None = None,
    props=None,
    level: int | None = None,
    insert: bool = True,
    engine: str = "auto",
) -> dict:
    """MERGE ``data`` (a table or a RecordBatchReader) into ``table`` on ``key``: new keys
    inserted; a matched row replaced when the incoming one differs and, with
    ``newer=(column, keep)``, is not older (``keep='last'``: its ``column`` is at least the stored
    one's; ``'first'``: at most). A row equal to the stored one changes nothing, so merging the
    same rows again is a no-op (and writes no commit). Columns the table lacks are added.

    ``data`` holds each key at most once (deltalake refuses a target row matched twice).
    ``insert=False`` only updates keys the table holds (a cold tier's). ``engine``: ``"arrow"``
    computes the MERGE in Arrow and commits file actions (``arrow_merge``: several times faster),
    ``"delta-rs"`` runs deltalake's MERGE, ``"auto"`` the first when it applies (a local table of
    flat columns holding exactly ``data``'s, keys unique and not null). Returns the merge metrics (deltalake's
    names)."""
    if engine != "delta-rs":
        from beam_pipelines.lakehouse import arrow_merge

        table_data = data.read_all() if isinstance(data, pa.RecordBatchReader) else data
        try:
            if arrow_merge.applies(table, table_data, key):
                return arrow_merge.merge(table, table_data, key, newer, props, level, insert)
        except arrow_merge.RepeatedKeys:
            if engine == "arrow":
                raise
        else:
            if engine == "arrow":
                raise ValueError("the Arrow MERGE does not apply to this table and data (see arrow_merge.applies)")
        data = table_data
    held = {f.name for f in pa.schema(table.schema().to_arrow())}
    on = f"t.{quote(key)} = s.{quote(key)}"
    differs = [
        f"(t.{quote(c)} IS DISTINCT FROM s.{quote(c)})" if c in held else f"(s.{quote(c)} IS NOT NULL)"
        for c in data.schema.names
    ]
    when = f"({' OR '.join(differs)})"
    if newer is not None:
        column, keep = newer
        op = ">=" if keep == "last" else "<="
        when = f"(s.{quote(column)} {op} t.{quote(column)}) AND {when}"
    merger = table.merge(data, on, source_alias="s", target_alias="t", merge_schema=True,
                         writer_properties=writer_properties(level), commit_properties=props)  # fmt: skip
    merger = merger.when_matched_update_all(predicate=when)
    return (merger.when_not_matched_insert_all() if insert else merger).execute()


def windows_of(data: pa.Table, window_column: str) -> list[datetime]:
    """The distinct windows (their starts) of ``data``."""
    return pc.unique(data.column(window_column)).to_pylist()


def replace_windows(uri: str, data: pa.Table, window_column: str, partition_by: str, props=None) -> None:
    """Replaces every row of ``uri`` whose ``window_column`` is one of ``data``'s by ``data``, in one
    commit (Delta's replace-where: the old rows' files rewritten without them, the new rows
    added); creates the table when missing."""
    from deltalake import write_deltalake

    windows = windows_of(data, window_column)
    days = pc.unique(data.column(partition_by)).to_pylist()
    table = open_table(uri)
    if table is None:
        append(uri, data, [partition_by], props)
        return
    # The partition values let delta-rs skip every other day's files.
    where = (f"{quote(partition_by)} IN ({', '.join(sql_string(d.isoformat()) for d in days)}) AND "
             f"{quote(window_column)} IN ({', '.join(sql_timestamp(w) for w in windows)})")  # fmt: skip
    write_deltalake(table, data, mode="overwrite", predicate=where, partition_by=[partition_by],
                    writer_properties=writer_properties(), commit_properties=props)  # fmt: skip
