"""UpsertPostgres: table elements -> rows upserted into a PostgreSQL table by natural key.

Each element replaces the rows with its keys (``INSERT ... ON CONFLICT (keys) DO UPDATE``), so a
window firing that carries the window's complete value so far leaves the latest total, and
writing the same element twice changes nothing. The target table is created when missing.

Firings can arrive out of order (parallel bundles; a bundle retried through an outage), so each
row also stores the firing it came from (the pane index, column ``_pane``) and is replaced only
by the same or a later firing: the table ends with the newest total whatever the order (the live
stream's running aggregate numbers its emissions of a window by the pane index too). Rows that
say their own order (``version``: a column of the rows, e.g. the online feature rows' ``_version``)
are replaced only by a row of the same or a higher version instead.

With ``row_security`` the table gets row-level security: each tenant's roles see only that
tenant's rows, and the pipeline's own role writes through the policies (``row_security.py``).
"""

from __future__ import annotations

import logging
import re
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.utils.windowed_value import PaneInfo

from transforms.sinks.row_security import RowSecurity
from transforms.stage_times import record

__all__ = ["PANE_COLUMN", "PostgresUnavailable", "RetryBudget", "UpsertPostgres", "connect", "pg_type"]

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
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision}, {arrow_type.scale})"
    try:
        return _TYPES[arrow_type]
    except KeyError:
        raise ValueError(f"no PostgreSQL type for Arrow type {arrow_type}") from None


def _check_ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"{what} {name!r} must match {_IDENT.pattern}")
    return name


class RetryBudget:
    """Waits between tries, doubling from ``first_wait_s`` up to ``max_wait_s``, until ``budget_s`` has passed.

    A budget in time rather than in tries: a server restart takes as long as it takes, whatever the
    number of tries that fit in it.
    """

    def __init__(
        self,
        budget_s: float,
        first_wait_s: float = 0.5,
        max_wait_s: float = 10.0,
        clock=time.monotonic,
        sleep=time.sleep,
    ):
        self.budget_s, self._wait, self._max_wait = budget_s, first_wait_s, max_wait_s
        self._clock, self._sleep = clock, sleep
        self._deadline = clock() + budget_s
        self.tries = 1

    def wait(self) -> bool:
        """Sleeps before the next try; False (without sleeping) when the budget has no room for one."""
        left = self._deadline - self._clock()
        if left <= 0:
            return False
        self._sleep(min(self._wait, left))
        self._wait = min(self._wait * 2, self._max_wait)
        self.tries += 1
        return True


class PostgresUnavailable(ConnectionError):
    """PostgreSQL stayed unreachable for the whole retry budget."""


def _open(dsn: str):
    import psycopg

    return psycopg.connect(dsn, connect_timeout=10, autocommit=False)


def connect(dsn: str, retry: RetryBudget | None = None):
    """A psycopg connection, retried with backoff within ``retry`` (default 60 s)."""
    import psycopg

    retry = retry or RetryBudget(60.0)
    while True:
        try:
            return _open(dsn)
        except psycopg.OperationalError as e:
            _LOG.warning("PostgreSQL not reachable (try %d): %s", retry.tries, e)
            if not retry.wait():
                raise PostgresUnavailable(
                    f"PostgreSQL not reachable for {retry.budget_s:.0f}s ({retry.tries} tries): {_first_line(e)}"
                ) from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# The firing each row came from (its pane index): parallel bundles, or a bundle retried through an
# outage, can deliver an older firing after a newer one; a row is replaced only by its own or a
# later firing, so the newest total stays.
PANE_COLUMN = "_pane"


class _UpsertFn(beam.DoFn):
    def __init__(
        self,
        dsn: str,
        table: str,
        keys: tuple[str, ...],
        schema: pa.Schema,
        retry_for_s: float,
        version: str | None = None,
        row_security: RowSecurity | None = None,
        dsn_env: str | None = None,
        dsn_file: str | None = None,
    ):
        self._dsn, self._table, self._keys, self._schema, self._retry_for_s = dsn, table, keys, schema, retry_for_s
        self._version, self._row_security = version, row_security
        self._dsn_env, self._dsn_file = dsn_env, dsn_file
        self._conn = None

    def setup(self):
        if not self._dsn:  # read on the worker: the connection string never sits in the job graph
            from transforms.ingest.pg_sql import resolve_dsn

            self._dsn = resolve_dsn(self._dsn_env, self._dsn_file)
        self._rows = beam.metrics.Metrics.counter("postgres", "rows_upserted")
        self._stale = beam.metrics.Metrics.counter("postgres", "rows_older_firing_skipped")
        self._sql = self._statements()
        self._ready = False
        self.start_bundle()
        # Connected here so a wrong DSN fails at start; an outage is ridden out in process().
        self._conn = connect(self._dsn, RetryBudget(self._retry_for_s))

    def _prepare(self):
        import psycopg

        try:
            with self._conn.cursor() as cur:
                cur.execute(self._sql["create"])
                cur.execute(self._sql["pane"])
            self._conn.commit()
            if self._row_security is not None:
                with self._conn.cursor() as cur:
                    self._row_security.create_roles(cur, self._table)
                self._conn.commit()
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateColumn):
            # Workers set up at once race on CREATE TABLE / ADD COLUMN IF NOT EXISTS; one of them made it.
            self._conn.rollback()
        self._ready = True

    def _statements(self) -> dict:
        from psycopg import sql

        cols = self._schema.names
        ident = sql.Identifier
        table, pane = ident(self._table), ident(PANE_COLUMN)
        order = ident(self._version or PANE_COLUMN)  # what says which of two rows is newer
        create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, {} bigint, PRIMARY KEY ({}))").format(
            table,
            sql.SQL(", ").join(sql.SQL("{} {}").format(ident(f.name), sql.SQL(pg_type(f.type))) for f in self._schema),
            pane,
            sql.SQL(", ").join(map(ident, self._keys)),
        )
        # Tables made before the pane column existed get it (null: any firing replaces the row).
        add_pane = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint").format(table, pane)
        others = [c for c in cols if c not in self._keys] + [PANE_COLUMN]
        # A null group key is stored as '' (see _key_value): with NULL in a unique key every
        # firing would insert a new row instead of replacing the old one.
        upsert = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} WHERE {}.{} IS NULL OR {}.{} <= EXCLUDED.{}"
        ).format(
            table,
            sql.SQL(", ").join(map(ident, [*cols, PANE_COLUMN])),
            sql.SQL(", ").join(sql.Placeholder() * (len(cols) + 1)),
            sql.SQL(", ").join(map(ident, self._keys)),
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c)) for c in others),
            table,
            order,
            table,
            order,
            order,
        )
        return {"create": create, "pane": add_pane, "upsert": upsert}

    def start_bundle(self):
        self._pending: dict[tuple, tuple] = {}  # key -> (order, row): the bundle's newest row per key
        self._began = None

    def process(self, table: pa.Table, pane_info=beam.DoFn.PaneInfoParam):
        """Buffers the element's rows; the bundle's rows are written in one transaction when it ends."""
        if table.num_rows == 0:
            return
        if self._began is None:
            self._began = time.time()
        # Outside a runner (called directly) there is no pane: firing 0.
        index = pane_info.index if isinstance(pane_info, PaneInfo) else 0
        names, keys, version = self._schema.names, self._keys, self._version
        for r in table.select(names).to_pylist():
            row = (*(_key_value(r[c]) if c in keys else r[c] for c in names), index)
            order = index if version is None else r[version]
            key = tuple(_key_value(r[k]) for k in keys)
            held = self._pending.get(key)
            # Several firings of a window in one bundle: the newest wins here, as in the table.
            if held is None or (order is not None and (held[0] is None or held[0] <= order)):
                self._pending[key] = (order, row)

    def finish_bundle(self):
        if self._pending:
            self._write([row for _, row in self._pending.values()])
        self.start_bundle()

    def _write(self, params: list[tuple]) -> None:
        import psycopg

        retry = RetryBudget(self._retry_for_s)
        began = self._began or time.time()
        while True:
            try:
                if self._conn is None:
                    self._conn = _open(self._dsn)
                if not self._ready:
                    self._prepare()
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql["upsert"], params, returning=False)
                    written = cur.rowcount
                self._conn.commit()
                break
            except psycopg.OperationalError as e:
                # The transaction is lost with the connection; the whole bundle is upserted again.
                self._close()
                _LOG.warning(
                    "upsert into %s failed (try %d): %s; reconnecting", self._table, retry.tries, _first_line(e)
                )
                if not retry.wait():
                    raise PostgresUnavailable(
                        f"upsert into {self._table}: PostgreSQL not reachable for {self._retry_for_s:.0f}s "
                        f"({retry.tries} tries): {_first_line(e)}"
                    ) from e
        record("upsert", table=self._table, began=began, rows=len(params))
        self._rows.inc(len(params))
        if 0 <= written < len(params):
            self._stale.inc(len(params) - written)

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
        dsn: libpq connection string or URL (``postgresql://user@host:port/db``). It travels in
            the job graph with the sink: a password belongs in ``dsn_env`` / ``dsn_file`` (or
            libpq's ``PGPASSWORD`` / ``PGPASSFILE`` on the workers).
        table: Target table name (created when missing, typed from ``schema``).
        keys: Natural key columns (the primary key). A null key value is stored as ''
            because a primary key cannot be null; ``''`` therefore means "no value".
        schema: Arrow schema of the rows written (columns in this order).
        retry_for_s: How long an element is retried on a lost connection (a restart, a failover),
            with backoff doubling up to 10 s, before the bundle fails with ``PostgresUnavailable``
            (the runner may then retry it; upserts make that safe).
        version: An integer column of the schema saying which of two rows of a key is newer: a
            stored row is replaced only by one of the same or a higher version. Default: the
            firing (pane) each row came from.
        row_security: Row-level security by a tenant key column (see ``RowSecurity``).
        dsn_env: Instead of ``dsn``: the environment variable holding it, read on the worker.
        dsn_file: Instead of ``dsn``: a file holding it, read on the worker.

    Rows are written when each bundle ends, in one transaction (a bundle holding several
    firings of a window writes its newest). Returns an empty PCollection.
    """

    def __init__(
        self,
        dsn: str | None,
        table: str,
        keys: tuple[str, ...],
        schema: pa.Schema,
        retry_for_s: float = 300.0,
        version: str | None = None,
        row_security: RowSecurity | None = None,
        label: str | None = None,
        dsn_env: str | None = None,
        dsn_file: str | None = None,
    ):
        super().__init__(label)
        if sum(x is not None and x != "" for x in (dsn, dsn_env, dsn_file)) != 1:
            raise ValueError("give the connection string: dsn, dsn_env or dsn_file (exactly one)")
        if dsn_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dsn_env):
            raise ValueError(f"dsn_env must be an environment variable's name, got {dsn_env!r}")
        _check_ident(table, "table")
        for name in schema.names:
            _check_ident(name, "column")
            if name == PANE_COLUMN:
                raise ValueError(f"column {PANE_COLUMN!r} is the sink's own (the firing each row came from)")
            pg_type(schema.field(name).type)
        missing = [k for k in keys if k not in schema.names]
        if not keys or missing:
            raise ValueError(f"keys must be columns of the schema (missing: {missing})")
        if not retry_for_s > 0:
            raise ValueError(f"retry_for_s must be > 0, got {retry_for_s}")
        if version is not None and (version not in schema.names or not pa.types.is_integer(schema.field(version).type)):
            raise ValueError(f"version must be an integer column of the schema, got {version!r}")
        if version in keys:
            raise ValueError(f"version {version!r} cannot be a key column")
        if row_security is not None:
            if not isinstance(row_security, RowSecurity):
                raise ValueError("row_security must be a RowSecurity")
            if row_security.column not in keys:
                raise ValueError(
                    f"row_security.column {row_security.column!r} must be a key column: two tenants' rows with "
                    "the same other keys would replace each other"
                )
        self._args, self._version = (dsn or None, table, tuple(keys), schema, float(retry_for_s)), version
        self._row_security, self._dsn_from = row_security, {"dsn_env": dsn_env, "dsn_file": dsn_file}

    def expand(self, tables):
        upsert = _UpsertFn(*self._args, self._version, self._row_security, **self._dsn_from)
        return tables | "Upsert" >> beam.ParDo(upsert).with_input_types(pa.Table).with_output_types(int)
