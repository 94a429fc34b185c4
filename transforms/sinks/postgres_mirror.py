"""MirrorPostgres: change tables (``ReadPostgresChanges``) applied to a PostgreSQL table.

Each element is applied in one transaction: inserts and updates as upserts by key, deletes as
deletes (the last change of each key in the element wins, by commit LSN and place in its
transaction), and the consumer's progress row (``change_progress``) moved to the element's last
LSN. Changes at or before the LSN the progress row already holds are skipped: the slot gives
them again after a crash, and applying them twice would bring back a deleted row or an older
value. Rows travel as CSV through ``COPY`` into a temporary table, then one ``INSERT ... ON
CONFLICT`` and one ``DELETE ... USING``: no Python per row.

The table is created when missing, keyed by the keys, with the rows' columns plus ``_lsn`` (the
commit that wrote each row).
"""

from __future__ import annotations

import io
import logging

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms import change_progress, faults
from transforms.sinks.postgres import PostgresUnavailable, RetryBudget, _check_ident, connect, pg_type

__all__ = ["LSN", "MirrorPostgres", "last_per_key"]

_LOG = logging.getLogger(__name__)
LSN = "_lsn"


class _MirrorFn(beam.DoFn):
    def __init__(self, dsn: str, table: str, keys: tuple[str, ...], schema: pa.Schema, consumer: str,
                 retry_for_s: float):  # fmt: skip
        self._dsn, self._table, self._keys = dsn, table, keys
        self._schema, self._consumer, self._retry_for_s = schema, consumer, retry_for_s

    def setup(self):
        self._conn = None
        self._applied = beam.metrics.Metrics.counter("mirror", "changes_applied")
        self._skipped = beam.metrics.Metrics.counter("mirror", "changes_skipped")
        self._sql = _statements(self._table, [*self._schema.names, LSN], self._keys)

    def teardown(self):
        if self._conn is not None:
            self._conn.close()

    def _db(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, RetryBudget(self._retry_for_s))
            self._prepare(self._conn)
        return self._conn

    def _prepare(self, conn) -> None:
        from psycopg import sql

        defs = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f.type))) for f in self._schema]
        keys = sql.SQL(", ").join(map(sql.Identifier, self._keys))
        lsn = sql.SQL("{} bigint NOT NULL").format(sql.Identifier(LSN))
        every = sql.SQL(", ").join([*defs, lsn])
        with conn.transaction():
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                sql.Identifier(self._table), every, keys))  # fmt: skip
            conn.execute(change_progress.create_sql())
        key_defs = sql.SQL(", ").join(d for d, f in zip(defs, self._schema) if f.name in self._keys)
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS bp_mirror_up ({}) ON COMMIT DELETE ROWS").format(every))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS bp_mirror_del ({}) ON COMMIT DELETE ROWS").format(key_defs)
        )
        conn.commit()

    def process(self, table: pa.Table):
        import psycopg

        if table.num_rows == 0:
            return
        retry = RetryBudget(self._retry_for_s)
        while True:
            try:
                yield from self._apply(self._db(), table)
                return
            except psycopg.OperationalError as e:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                _LOG.warning("mirror into %s: PostgreSQL not reachable (try %d): %s", self._table, retry.tries, e)
                if not retry.wait():
                    raise PostgresUnavailable(
                        f"mirror into {self._table}: PostgreSQL not reachable for {retry.budget_s:.0f}s "
                        f"({retry.tries} tries)"
                    ) from e

    def _apply(self, conn, table: pa.Table):
        with conn.transaction():
            row = conn.execute(change_progress.read_sql(lock=True), (self._consumer,)).fetchone()
            done = -1 if row is None else int(row[0])
            lsn = table.column(LSN)
            fresh = table.filter(pc.greater(lsn, done)) if done >= 0 else table
            self._skipped.inc(table.num_rows - fresh.num_rows)
            if fresh.num_rows == 0:
                return
            last = last_per_key(fresh, self._keys)
            deleting = pc.equal(last.column("_op"), "delete")
            ups = last.filter(pc.invert(deleting)).select([*self._schema.names, LSN])
            dels = last.filter(deleting).select(list(self._keys))
            with conn.cursor() as cur:
                if ups.num_rows:
                    _copy(cur, self._sql["copy_up"], ups)
                    cur.execute(self._sql["upsert"])
                if dels.num_rows:
                    _copy(cur, self._sql["copy_del"], dels)
                    cur.execute(self._sql["delete"])
                top = int(pc.max(fresh.column(LSN)).as_py())
                cur.execute(change_progress.write_sql(), (self._consumer, top))
        self._applied.inc(fresh.num_rows)
        faults.at("mirror:applied")
        yield {"table": self._table, "applied": fresh.num_rows, "upserts": ups.num_rows, "deletes": dels.num_rows,
               "lsn": top}  # fmt: skip


def _statements(table: str, cols: list[str], keys: tuple[str, ...]) -> dict:
    """The apply statements, names quoted by psycopg (they are checked plain names too)."""
    from psycopg import sql

    name = sql.Identifier
    col_list = sql.SQL(", ").join(map(name, cols))
    key_list = sql.SQL(", ").join(map(name, keys))
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=name(c)) for c in cols if c not in keys]
    action = sql.SQL("UPDATE SET ") + sql.SQL(", ").join(sets) if sets else sql.SQL("NOTHING")
    return {
        "upsert": sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM bp_mirror_up ON CONFLICT ({k}) DO ").format(
            t=name(table), c=col_list, k=key_list
        )
        + action,  # fmt: skip
        "delete": sql.SQL("DELETE FROM {t} t USING bp_mirror_del d WHERE ").format(t=name(table))
        + sql.SQL(" AND ").join(sql.SQL("t.{k} = d.{k}").format(k=name(k)) for k in keys),
        "copy_up": sql.SQL("COPY bp_mirror_up ({c}) FROM STDIN (FORMAT csv)").format(c=col_list),
        "copy_del": sql.SQL("COPY bp_mirror_del ({k}) FROM STDIN (FORMAT csv)").format(k=key_list),
    }


def last_per_key(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Each key's last change, by commit LSN then place in the transaction."""
    ordered = table.sort_by([(LSN, "ascending"), ("_seq", "ascending")])
    ordered = ordered.append_column("_i", pa.array(np.arange(ordered.num_rows, dtype=np.int64)))
    picked = ordered.group_by(list(keys), use_threads=False).aggregate([("_i", "max")])
    return ordered.take(pa.array(np.sort(picked.column("_i_max").to_numpy())))


def _copy(cur, statement: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    with cur.copy(statement) as cp:
        cp.write(buf.getbuffer())


class MirrorPostgres(beam.PTransform):
    """Applies change tables to a PostgreSQL table, exactly once per change across restarts.

    Args:
        dsn: Connection string of the target database.
        table: Target table (a plain SQL name); created when missing.
        keys: Its key columns (the source table's primary key).
        schema: The rows' columns (Arrow types) written to the table; the change columns
            (``_op``, ``_lsn``, ``_seq``) must be in every element besides them.
        consumer: This sink's name in ``bp_cdc_progress`` (the source confirms the slot up to it).
        retry_for_s: How long an element is retried while PostgreSQL is unreachable.

    Returns a PCollection of one summary dict per element applied.
    """

    def __init__(self, dsn: str, table: str, keys: tuple[str, ...], schema: pa.Schema, consumer: str,
                 retry_for_s: float = 300.0, label: str | None = None):  # fmt: skip
        super().__init__(label)
        _check_ident(table, "table")
        if not keys:
            raise ValueError("keys are required")
        for k in keys:
            if k not in schema.names:
                raise ValueError(f"key {k!r} is not a column of the rows ({', '.join(schema.names)})")
        for f in schema:
            _check_ident(f.name, "column")
            pg_type(f.type)
        if LSN in schema.names:
            raise ValueError(f"{LSN} is the mirror's own column")
        if not consumer:
            raise ValueError("consumer is required")
        self._fn = _MirrorFn(dsn, table, tuple(keys), schema, consumer, float(retry_for_s))

    def expand(self, tables):
        return tables | "Apply" >> beam.ParDo(self._fn).with_input_types(pa.Table).with_output_types(dict)
