"""UpsertPostgres: table elements -> rows upserted into a PostgreSQL table by natural key.

Each element replaces the rows with its keys (``INSERT ... ON CONFLICT (keys) DO UPDATE``), so a
window firing that carries the window's complete value so far leaves the latest total, and
writing the same element twice changes nothing. The target table is created when missing.
"""

from __future__ import annotations

import logging
import re
import time

import apache_beam as beam
import pyarrow as pa

__all__ = ["UpsertPostgres", "connect", "pg_type"]

_LOG = logging.getLogger(__name__)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TYPES = {
    pa.string(): "text",
    pa.large_string(): "text",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double precision",
    pa.bool_(): "boolean",
    pa.timestamp("us", tz="UTC"): "timestamptz",
}


def pg_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type (ValueError when there is none)."""
    try:
        return _TYPES[arrow_type]
    except KeyError:
        raise ValueError(f"no PostgreSQL type for Arrow type {arrow_type}") from None


def _check_ident(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{what} {name!r} must match {_IDENT.pattern}")
    return name


def connect(dsn: str, attempts: int = 5, first_wait_s: float = 0.5, sleep=time.sleep):
    """A psycopg connection, retried with exponential backoff; the last error is raised."""
    import psycopg

    wait = first_wait_s
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(dsn, connect_timeout=10, autocommit=False)
        except psycopg.OperationalError as e:
            if attempt == attempts:
                raise
            _LOG.warning("PostgreSQL not reachable (attempt %d/%d): %s", attempt, attempts, e)
            sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


class _UpsertFn(beam.DoFn):
    def __init__(self, dsn: str, table: str, keys: tuple[str, ...], schema: pa.Schema, attempts: int):
        self._dsn, self._table, self._keys, self._schema, self._attempts = dsn, table, keys, schema, attempts
        self._conn = None

    def setup(self):
        self._rows = beam.metrics.Metrics.counter("postgres", "rows_upserted")
        import psycopg

        self._conn = connect(self._dsn)
        self._sql = self._statements()
        try:
            with self._conn.cursor() as cur:
                cur.execute(self._sql["create"])
            self._conn.commit()
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            # Workers set up at once race on CREATE TABLE IF NOT EXISTS; one of them made it.
            self._conn.rollback()

    def _statements(self) -> dict:
        from psycopg import sql

        cols = self._schema.names
        ident = sql.Identifier
        create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            ident(self._table),
            sql.SQL(", ").join(sql.SQL("{} {}").format(ident(f.name), sql.SQL(pg_type(f.type))) for f in self._schema),
            sql.SQL(", ").join(map(ident, self._keys)),
        )
        others = [c for c in cols if c not in self._keys]
        # A null group key is stored as '' (see _key_value): with NULL in a unique key every
        # firing would insert a new row instead of replacing the old one.
        upsert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            ident(self._table),
            sql.SQL(", ").join(map(ident, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            sql.SQL(", ").join(map(ident, self._keys)),
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c)) for c in others),
        )
        return {"create": create, "upsert": upsert}

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        import psycopg

        rows = table.select(self._schema.names).to_pylist()
        params = [tuple(_key_value(r[c]) if c in self._keys else r[c] for c in self._schema.names) for r in rows]
        for attempt in range(1, self._attempts + 1):
            try:
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql["upsert"], params)
                self._conn.commit()
                break
            except psycopg.OperationalError:
                if attempt == self._attempts:
                    raise
                _LOG.warning("upsert into %s failed (attempt %d); reconnecting", self._table, attempt)
                self._close()
                time.sleep(0.5 * 2**attempt)
                self._conn = connect(self._dsn)
        self._rows.inc(len(rows))
        yield len(rows)

    def _close(self):
        if self._conn is not None:
            self._conn.close()  # psycopg's close() does not raise on a broken connection
            self._conn = None

    def teardown(self):
        self._close()


def _key_value(value):
    # A primary key cannot hold NULL; a null group key is stored as '' (see UpsertPostgres).
    return "" if value is None else value


class UpsertPostgres(beam.PTransform):
    """Upserts the rows of each table into ``table`` by ``keys``.

    Args:
        dsn: libpq connection string or URL (``postgresql://user@host:port/db``).
        table: Target table name (created when missing, typed from ``schema``).
        keys: Natural key columns (the primary key). A null key value is stored as ''
            because a primary key cannot be null; ``''`` therefore means "no value".
        schema: Arrow schema of the rows written (columns in this order).
        attempts: Tries per element on a lost connection, with backoff, before the bundle fails
            (the runner then retries it; upserts make that safe).

    Returns a PCollection of row counts, one per element written.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        keys: tuple[str, ...],
        schema: pa.Schema,
        attempts: int = 4,
        label: str | None = None,
    ):
        super().__init__(label)
        if not dsn:
            raise ValueError("dsn is required")
        _check_ident(table, "table")
        for name in schema.names:
            _check_ident(name, "column")
            pg_type(schema.field(name).type)
        missing = [k for k in keys if k not in schema.names]
        if not keys or missing:
            raise ValueError(f"keys must be columns of the schema (missing: {missing})")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._args = (dsn, table, tuple(keys), schema, attempts)

    def expand(self, tables):
        return tables | "Upsert" >> beam.ParDo(_UpsertFn(*self._args)).with_input_types(pa.Table).with_output_types(int)
