"""Hot and cold tiers: a layer's old partitions moved to a second Delta table, the cold tier.

A ``WriteLakehouse`` step with ``cold: {after_days, location, compression_level}`` keeps its
recent partitions in the table under ``--output`` (the hot tier, zstd level 1) and, from
``lakehouse maintain``, the partitions older than ``after_days`` in a Delta table of the same
schema and partitioning at ``location`` (another bucket, or another directory), written at zstd
``compression_level`` (19 by default: ``benchmarks/results/compression.md``).

A move is two commits: the partitions' rows appended to the cold table, then deleted from the
hot one. A maintenance killed between them leaves the rows in both tiers; the next one moves the
same partitions again and appends only the rows the cold tier does not hold yet (a multiset
difference: a row held n times in hot and m times in cold is appended n - m times), so nothing is
copied twice and nothing is lost, whatever was committed to the hot table in between.

The table is the union of both tiers: ``read`` returns it; Polars and DuckDB read it as shown in
the README (Hot and cold tiers). Silver MERGEs keys the cold tier holds into the cold tier
(``commit``), and an erasure rewrites both tiers (``erase``).
"""

from __future__ import annotations

import os
from datetime import date

import pyarrow as pa

from beam_pipelines.lakehouse import tables
from transforms import faults

__all__ = ["COLD_LEVEL", "HOT_LEVEL", "cold_entry", "move_partitions", "query", "read", "storage_options"]

HOT_LEVEL = 1  # zstd level of the hot tier: the fastest write and read within 15% of the smallest file
COLD_LEVEL = 19  # the smallest file read within 2x of the hot tier's (benchmarks/results/compression.md)
_REMOTE = ("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://")
# The settings delta-rs takes for an S3 endpoint, read from the environment (never stored).
_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ALLOW_HTTP", "AWS_S3_ALLOW_UNSAFE_RENAME")  # fmt: skip


def is_remote(uri: str) -> bool:
    return uri.startswith(_REMOTE)


def storage_options(uri: str) -> dict | None:
    """delta-rs' options for ``uri``: for S3 the ``AWS_*`` settings of the environment (with
    ``AWS_ALLOW_HTTP`` when the endpoint is plain http, as an emulator's is); None otherwise."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    options = {k: os.environ[k] for k in _S3_ENV if os.environ.get(k)}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    return options


def cold_entry(entry: dict) -> dict:
    """The maintenance entry of ``entry``'s cold tier: the same retention and file sizes, its own
    location and compression level."""
    cold = entry["cold"]
    return {**entry, "table": cold["table"], "tier": "cold", "level": cold["level"], "cold": None,
            "storage_options": storage_options(cold["table"])}  # fmt: skip


def query(table, sql: str) -> pa.Table:
    from deltalake import QueryBuilder

    data = pa.table(QueryBuilder().register("t", table).execute(sql).read_all())
    views = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    return data.cast(pa.schema([f.with_type(views.get(f.type, f.type)) for f in data.schema]))


def _in(column: str, days: list[str]) -> str:
    return f"{tables.quote(column)} IN ({', '.join(tables.sql_string(d) for d in days)})"


def _not_held(rows: pa.Table, held: pa.Table) -> pa.Table:
    """``rows`` minus ``held`` as multisets (EXCEPT ALL), on ``rows``' columns."""
    import duckdb

    if not held.num_rows:
        return rows
    cols = [c for c in rows.column_names]
    select = ", ".join(tables.quote(c) if c in held.column_names else f"NULL AS {tables.quote(c)}" for c in cols)
    con = duckdb.connect()
    try:
        con.register("hot_rows", rows)
        con.register("cold_rows", held)
        names = ", ".join(tables.quote(c) for c in cols)
        out = con.sql(f"SELECT {names} FROM hot_rows EXCEPT ALL SELECT {select} FROM cold_rows").to_arrow_table()
    finally:
        con.close()
    return pa.table(out).cast(rows.schema)


def move_partitions(hot, cold_uri: str, column: str, days: list[str], level: int, run_id: str) -> dict:
    """Moves partitions ``days`` (``YYYY-MM-DD`` values of ``column``) of the hot table ``hot`` to
    the cold table at ``cold_uri`` (created when missing); returns rows read, appended and deleted.
    Safe to repeat after a crash between its two commits (see the module docstring)."""
    options = storage_options(cold_uri)
    rows = query(hot, f"SELECT * FROM t WHERE {_in(column, days)}")
    cold = tables.open_table(cold_uri, options)
    if cold is not None:
        held = query(cold, f"SELECT * FROM t WHERE {_in(column, days)}")
        rows = _not_held(rows, held)
    appended = rows.num_rows
    if appended:
        props = tables.commit_properties(run_id, maintenance="tier_move", partitions=",".join(days))
        tables.append(cold if cold is not None else cold_uri, rows, [column], props, storage_options=options,
                      level=level)  # fmt: skip
    faults.at("tier:moved")
    metrics = hot.delete(_in(column, days), commit_properties=tables.commit_properties(run_id, maintenance="tier_move"))
    return {"appended": appended, "deleted": metrics.get("num_deleted_rows", 0)}


def read(hot_uri: str, cold_uri: str | None = None, where: str | None = None) -> pa.Table:
    """The rows of both tiers (either may be missing), hot first; columns one tier lacks are null
    in its rows. ``where``: a SQL condition on the table's columns."""
    parts = []
    for uri in (hot_uri, cold_uri):
        table = tables.open_table(uri, storage_options(uri)) if uri else None
        if table is not None:
            parts.append(query(table, "SELECT * FROM t" + (f" WHERE {where}" if where else "")))
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")


def cutoff_days(files: list[dict], after_days: int, today: date) -> tuple[str, list[str]]:
    """The cut-off day and the partitions before it (of ``files``, ``maintain._files``' rows)."""
    from datetime import timedelta

    cutoff = (today - timedelta(days=after_days)).isoformat()
    return cutoff, sorted({f["partition"] for f in files if f["partition"] is not None and f["partition"] < cutoff})
