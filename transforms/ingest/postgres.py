"""ReadPostgres: a PostgreSQL table -> typed Arrow batches, read in parallel key ranges.

``Plan`` (one session) checks the table's columns, takes the key's min and max and, for an
incremental read, fixes the window's upper end (the last row by cursor and key); the key span is
cut into ranges, spread by a Reshuffle, and each range is read by its own ``ReadRanges`` call
through the ADBC PostgreSQL driver, which decodes PostgreSQL's binary results straight into
Arrow (see benchmarks/postgres_read.py for why that and not psycopg's binary COPY).

Batches are typed tables (as from parquet) with a ``_source`` column naming the table and each
row's key (``postgres:public.orders id=42``), so ``ParseRecords("parquet", ...)`` takes them and a
rejected row's dead letter says where it came from. NUMERIC arrives as its exact text.

Incremental reads take the rows whose ``(cursor, key)`` comes after the last published state
and at or before the upper end fixed by Plan; with a lookback, every row whose cursor is at or
after ``state - lookback`` (rows of transactions that committed late with an earlier cursor).
The next state (the upper end) goes to ``state_path`` in the run's staging directory.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.ingest import pg_sql
from transforms.ingest.pg_state import VERSION, check_state, write_state

__all__ = ["ReadPostgres"]


def _connect(dsn_env: str | None, dsn_file: str | None, timeout_ms: int):
    """An autocommit ADBC session in UTC with the statement timeout set; errors without secrets."""
    import adbc_driver_postgresql.dbapi as adbc  # batch runs of file sources need no driver

    dsn = pg_sql.resolve_dsn(dsn_env, dsn_file)
    try:
        conn = adbc.connect(dsn, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', $1, false), set_config('TimeZone', 'UTC', false)",
                        (str(timeout_ms),))  # fmt: skip
            cur.fetchall()
    except adbc.Error as e:
        raise ConnectionError(f"PostgreSQL: {pg_sql.scrub(str(e), dsn)}") from None
    return conn, dsn


def check_columns(rows: list, table: str, key: str, cursor: str | None, columns: tuple[str, ...] | None) -> None:
    """ValueError unless the key is an integer NOT NULL column, the cursor a timestamp NOT NULL
    one, and every selected column exists. ``rows``: (name, type, not null) from ``column_query``."""
    if not rows:
        raise ValueError(f"table {table} does not exist (or has no columns)")
    found = {name: (kind, notnull) for name, kind, notnull in rows}
    for name in columns or ():
        if name not in found:
            raise ValueError(f"table {table} has no column {name!r}; columns: {', '.join(found)}")
    wanted = [(key, "key", pg_sql.KEY_TYPES)] + ([(cursor, "cursor", pg_sql.CURSOR_TYPES)] if cursor else [])
    for name, what, kinds in wanted:
        if name not in found:
            raise ValueError(f"table {table} has no {what} column {name!r}; columns: {', '.join(found)}")
        kind, notnull = found[name]
        if kind not in kinds:
            raise ValueError(f"{what} column {name!r} of {table} is {kind}; it must be {' or '.join(kinds)}")
        if not notnull:
            # A NULL key falls in no range and a NULL cursor in no window: those rows would be lost.
            raise ValueError(f"{what} column {name!r} of {table} is nullable; it must be NOT NULL")


class _SessionFn(beam.DoFn):
    def __init__(self, src: dict):
        self._src = src

    def setup(self):
        s = self._src
        self._conn, self._dsn = _connect(s["dsn_env"], s["dsn_file"], s["timeout_ms"])

    def teardown(self):
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    def _run(self, query: str, params: tuple | list = ()):
        import adbc_driver_postgresql.dbapi as adbc

        try:
            cur = self._conn.cursor()
            cur.execute(query, params)
            return cur
        except adbc.Error as e:
            raise RuntimeError(f"PostgreSQL: {pg_sql.scrub(str(e), self._dsn)}") from None


class _PlanFn(_SessionFn):
    """The read plan: the key ranges, the incremental window and the state after it."""

    def process(self, _):
        s = self._src
        table = f"{s['schema']}.{s['table']}"
        with self._run(pg_sql.column_query(), (s["schema"], s["table"])) as cur:
            check_columns(cur.fetchall(), table, s["key"], s["cursor"], s["columns"])
        with self._run(pg_sql.key_bounds_query(s["schema"], s["table"], s["key"])) as cur:
            lo, hi = cur.fetchone()
        window, state = None, None
        if s["cursor"]:
            with self._run(pg_sql.upper_query(s["schema"], s["table"], s["key"], s["cursor"])) as cur:
                last = cur.fetchone()
            previous = s["state"]
            upper = (pg_sql.as_utc(last[0]), last[1]) if last else None
            before = (_cursor_of(previous), previous["cursor_key"]) if previous and previous["cursor"] else None
            if upper is not None and before is not None and upper < before:
                upper = before  # rows were deleted: the cursor never moves back
            window = pg_sql.window_for(previous, upper, s["lookback_s"])
            state = _state(s, upper)
        ranges = pg_sql.split_ranges(lo, hi, s["ranges"])
        yield {"ranges": ranges, "window": window, "state": state}


def _cursor_of(state: dict):
    from datetime import datetime

    return datetime.fromisoformat(state["cursor"])


def _identity(src: dict) -> dict:
    return {"table": f"{src['schema']}.{src['table']}", "key_column": src["key"], "cursor_column": src["cursor"]}


def _state(src: dict, upper: tuple | None) -> dict:
    cursor, key = (upper[0].isoformat(), upper[1]) if upper else (None, None)
    return {"version": VERSION, **_identity(src), "cursor": cursor, "cursor_key": key}


def _ranges(plan: dict):
    for lo, hi in plan["ranges"]:
        yield lo, hi, plan["window"]


def _numeric_type(field: pa.Field) -> pa.DataType | None:
    """The decimal type of a NUMERIC(p, s) column, from the type modifier the driver passes on
    (``((p << 16) | s) + 4``); None for a NUMERIC without one (any scale: kept as text)."""
    meta = field.metadata or {}
    typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
    if meta.get(b"POSTGRESQL:type") != b"numeric" or typmod < 4:
        return None
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else None


def _plain(table: pa.Table) -> pa.Table:
    """Types the parser knows: NUMERIC(p, s) as an exact decimal, other extension columns (NUMERIC
    without a scale, types the driver passes through) as their text; the driver's field metadata
    dropped, so every batch of a read has one schema."""
    arrays, fields = [], []
    for f, col in zip(table.schema, table.columns):
        if isinstance(f.type, pa.BaseExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], f.type.storage_type)
            decimal = _numeric_type(f)
            if decimal is not None:
                try:
                    col = col.cast(decimal)
                except pa.ArrowInvalid:  # NaN or Infinity: kept as text, the contract judges each row
                    pass
        arrays.append(col)
        fields.append(pa.field(f.name, col.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _ReadRangeFn(_SessionFn):
    def setup(self):
        super().setup()
        self._rows = beam.metrics.Metrics.counter("postgres", "rows")
        self._ranges = beam.metrics.Metrics.counter("postgres", "ranges")

    def process(self, item: tuple):
        lo, hi, window = item
        s = self._src
        query, params = pg_sql.read_query(s["schema"], s["table"], s["key"], s["select"], s["cursor"], window, lo, hi)
        prefix = pa.scalar(f"postgres:{s['schema']}.{s['table']} {s['key']}=", pa.string())
        with self._run(query, params) as cur:
            reader = cur.fetch_record_batch()
            pending, rows = [], 0
            for batch in reader:
                pending.append(batch)
                rows += batch.num_rows
                if rows >= s["batch_rows"]:
                    yield self._table(pending, prefix)
                    pending, rows = [], 0
            if rows:
                yield self._table(pending, prefix)
        self._ranges.inc()

    def _table(self, batches: list, prefix: pa.Scalar) -> pa.Table:
        s = self._src
        table = _plain(pa.Table.from_batches(batches))
        keys = table.column(s["key"]).cast(pa.string())
        table = table.append_column("_source", pc.binary_join_element_wise(prefix, keys, ""))
        if s["columns"] is not None and s["key"] not in s["columns"]:
            table = table.drop_columns([s["key"]])
        self._rows.inc(table.num_rows)
        return table


class _WriteStateFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, plan: dict):
        write_state(self._path, plan["state"])
        yield self._path


class ReadPostgres(beam.PTransform):
    """Reads a PostgreSQL table (whole, or incrementally by a cursor column) into typed Arrow batches.

    Args:
        table: The table's name (a plain SQL name).
        key: An integer NOT NULL column (the primary key): reads are split into ranges of it, and
            it breaks ties between rows with the same cursor value.
        schema: The table's schema.
        columns: Columns to read (default: all).
        cursor: A timestamp NOT NULL column (e.g. ``updated_at``) for incremental reads; None
            reads the whole table every run.
        lookback_s: Incremental reads also take rows whose cursor is up to this many seconds
            before the saved one (transactions that committed after a later cursor was read).
        state: The last published state (see ``pg_state``), or None to read from the start.
        state_path: Where to write the state after this read (in the run's staging directory).
        ranges: How many key ranges to read in parallel.
        dsn_env: Environment variable holding the connection string (read by each worker).
        dsn_file: Or a file holding it (a mounted secret).
        statement_timeout_s: Each statement's time limit, in seconds.
        batch_rows: Rows per emitted table, about.
    """

    def __init__(
        self,
        table: str,
        key: str,
        *,
        schema: str = "public",
        columns: tuple[str, ...] | None = None,
        cursor: str | None = None,
        lookback_s: int = 0,
        state: dict | None = None,
        state_path: str | None = None,
        ranges: int = 8,
        dsn_env: str | None = None,
        dsn_file: str | None = None,
        statement_timeout_s: int = 600,
        batch_rows: int = 262_144,
        label: str | None = None,
    ):
        super().__init__(label)
        for name, what in ((table, "table"), (key, "key"), (schema, "schema")):
            pg_sql.check_identifier(name, what)
        if cursor is not None:
            pg_sql.check_identifier(cursor, "cursor")
        if columns is not None:
            columns = tuple(pg_sql.check_identifier(c, "column") for c in columns)
            if not columns or len(set(columns)) != len(columns):
                raise ValueError("columns must be a non-empty list of distinct names")
        if bool(dsn_env) == bool(dsn_file):
            raise ValueError("give exactly one of dsn_env and dsn_file")
        if dsn_env is not None and not pg_sql.IDENTIFIER_ENV.fullmatch(dsn_env):
            raise ValueError(f"dsn_env must name an environment variable, got {dsn_env!r}")
        if ranges < 1 or batch_rows < 1 or statement_timeout_s < 1 or lookback_s < 0:
            raise ValueError("ranges, batch_rows and statement_timeout_s must be >= 1, lookback_s >= 0")
        if (lookback_s or state is not None) and cursor is None:
            raise ValueError("lookback and state need a cursor column")
        select = None if columns is None else columns + ((key,) if key not in columns else ())
        self._src = {
            "schema": schema, "table": table, "key": key, "columns": columns, "select": select, "cursor": cursor,
            "lookback_s": int(lookback_s), "ranges": int(ranges), "dsn_env": dsn_env, "dsn_file": dsn_file,
            "timeout_ms": int(statement_timeout_s) * 1000, "batch_rows": int(batch_rows), "state": None,
        }  # fmt: skip
        if cursor is not None:
            self._src["state"] = check_state(state, _identity(self._src))
        self._state_path = state_path

    def expand(self, pbegin):
        plan = (
            pbegin | "Start" >> beam.Create([None]) | "Plan" >> beam.ParDo(_PlanFn(self._src)).with_output_types(dict)
        )
        tables = (
            plan
            | "Ranges" >> beam.FlatMap(_ranges).with_output_types(tuple)
            | "Spread" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(_ReadRangeFn(self._src)).with_output_types(pa.Table)
        )
        if self._state_path is not None and self._src["cursor"] is not None:
            plan | "WriteState" >> beam.ParDo(_WriteStateFn(self._state_path)).with_output_types(str)
        return tables
