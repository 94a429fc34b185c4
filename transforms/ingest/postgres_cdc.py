"""ReadPostgresChanges: a PostgreSQL table's inserts, updates and deletes, in commit order,
from a logical replication slot (``pgoutput``).

One reader per slot (a splittable DoFn with a :class:`StreamSpan` restriction, as the Kinesis
and Pub/Sub readers), one table per slot. Each bundle reads the transactions that committed
since the last one it handed on, through ``pg_logical_slot_peek_binary_changes`` up to a WAL
budget past its position (whole transactions only), and emits them as one Arrow table per
relation version (``pgoutput.ChangeDecoder``) with a ``_source`` of ``TABLE@LSN/SEQ``.

Confirming. Peeking does not consume. Before each read, the reader takes the lowest LSN its
consumers (the sinks applying the changes, ``change_progress``) have durably applied and
advances the slot to it: PostgreSQL forgets a change only once every sink holds it. After a
crash (kill -9) a new job reads the slot from there again; each sink skips what it applied
(its progress row is written in the same transaction as its rows), so nothing is lost or
applied twice.

A change that cannot be represented (a TRUNCATE; an unchanged TOASTed value without a full old
image) is a dead letter (stage ``ingest``, reason ``unsupported_change``); CDC goes on.
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import change_progress
from transforms.ingest import pg_sql
from transforms.ingest.pgoutput import ChangeDecoder, format_lsn
from transforms.ingest.stream_read import END, STAGE, SpanProvider, check_seconds
from transforms.records import dead_letters

__all__ = ["CdcSourceError", "ReadPostgresChanges", "prepare_slot"]

_log = logging.getLogger(__name__)
DEAD = "dead_letters"
UNSUPPORTED = "unsupported_change"
_WAL_BUDGET = 16 << 20  # bytes of WAL past the position one read decodes (doubled while it finds nothing)
_MAX_LAG = 1 << 30  # read no further while this much WAL read is not yet confirmed by every consumer


class CdcSourceError(RuntimeError):
    """The slot, publication or table cannot be used (one plain line, no secrets)."""


def _connect(dsn: str, timeout_s: float):
    import psycopg

    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.Error as e:
        raise CdcSourceError(f"cannot connect to PostgreSQL: {pg_sql.scrub(str(e), dsn)}") from None
    conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout_s * 1000)),))
    return conn


def prepare_slot(conn, schema: str, table: str, slot: str, publication: str) -> None:
    """Checks ``wal_level``, creates the publication (for the table) and the slot when missing."""
    for name, what in ((schema, "schema"), (table, "table"), (slot, "slot"), (publication, "publication")):
        pg_sql.check_identifier(name, what)  # before anything is created: a bad slot name leaves no publication
    level = conn.execute("SHOW wal_level").fetchone()[0]
    if level != "logical":
        raise CdcSourceError(f"wal_level is {level!r}: change data capture needs wal_level = logical on the server")
    if conn.execute("SELECT to_regclass(%s)", (pg_sql.quoted(schema, table),)).fetchone()[0] is None:
        raise CdcSourceError(f"table {schema}.{table} does not exist")
    from psycopg import sql

    have = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    if have is None:
        _doing(conn, f"create publication {publication} for {schema}.{table} (needs the table's owner)",
               sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication),
                                                                    sql.Identifier(schema, table)))  # fmt: skip
    else:
        listed = conn.execute(
            "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s",
            (publication, schema, table),
        ).fetchone()
        if listed is None:
            raise CdcSourceError(f"publication {publication} does not publish {schema}.{table}")
    row = conn.execute(
        "SELECT plugin, database, database = current_database() FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        _doing(conn, f"create replication slot {slot} (needs the REPLICATION attribute)",
               "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))  # fmt: skip
    elif not row[2]:
        raise CdcSourceError(f"replication slot {slot} belongs to database {row[1]}: give another slot name")
    elif row[0] != "pgoutput":
        raise CdcSourceError(f"replication slot {slot} decodes with {row[0]}, not pgoutput")


def _doing(conn, what: str, statement, params=()) -> None:
    """Runs ``statement``; a server error becomes one line saying what could not be done and why."""
    import psycopg

    try:
        conn.execute(statement, params)
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CdcSourceError(f"cannot {what}: {first}") from None


class _ReadChangesFn(beam.DoFn):
    """slot -> change tables (main) and dead letters; one read per bundle, then a checkpoint."""

    def __init__(self, s: dict, clock=time.monotonic):
        self._s = s
        self._clock = clock

    def setup(self):
        self._conn = None
        self._budget = _WAL_BUDGET
        self._decoder: ChangeDecoder | None = None
        self._stop_at: int | None = None
        self._read = beam.metrics.Metrics.counter("cdc", "changes")
        self._confirmed = beam.metrics.Metrics.gauge("cdc", "confirmed_lsn")

    def teardown(self):
        if self._conn is not None:
            self._conn.close()

    def _db(self):
        if self._conn is None or self._conn.closed:
            dsn = pg_sql.resolve_dsn(self._s["dsn_env"], self._s["dsn_file"]) if self._s["dsn"] is None else self._s[
                "dsn"]  # fmt: skip
            self._conn = _connect(dsn, self._s["timeout_s"])
            prepare_slot(self._conn, self._s["schema"], self._s["table"], self._s["slot"], self._s["publication"])
        return self._conn

    def _confirm(self, conn) -> int:
        """Advances the slot to what every consumer applied; returns the slot's confirmed LSN."""
        from transforms.ingest.pgoutput import parse_lsn

        lowest = None
        for kind, where, consumer in self._s["consumers"]:
            got = _progress(kind, where, consumer, self._s["timeout_s"])
            if got is None:
                lowest = None
                break
            lowest = got if lowest is None else min(lowest, got)
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (self._s["slot"],)
        ).fetchone()
        confirmed = parse_lsn(row[0]) if row and row[0] else 0
        if lowest is not None and lowest > confirmed:
            conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self._s["slot"], format_lsn(lowest)))
            confirmed = lowest
        self._confirmed.set(confirmed)
        return confirmed

    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(False, None)),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(tracker, watermark)

    def _process(self, tracker, watermark):
        from transforms.ingest.pgoutput import parse_lsn

        span = tracker.current_restriction()
        after = span.after or 0
        if self._decoder is None or self._decoder.after != after:
            self._decoder = ChangeDecoder(after)
        conn = self._db()
        s = self._s
        while True:
            confirmed = self._confirm(conn)
            written, inserted = (
                parse_lsn(v)
                for v in conn.execute("SELECT pg_current_wal_lsn()::text, pg_current_wal_insert_lsn()::text").fetchone()
            )
            if self._stop_at is None and span.bounded:
                # What committed before the start, even if not yet written (synchronous_commit = off).
                self._stop_at = inserted
            start = max(after, confirmed)
            if after - confirmed > _MAX_LAG:  # the consumers are behind: wait for them
                tracker.defer_remainder(Duration.of(s["poll_s"]))
                return
            upto = start + self._budget
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version', '1', "
                "'publication_names', %s)",
                (s["slot"], format_lsn(upto), s["publication"]),
            ).fetchall()
            got = self._decoder.decode(rows)
            if got.transactions == 0 and not got.problems:
                if upto < written:  # a transaction larger than the budget, or other tables' WAL
                    self._budget *= 2
                    continue
                self._budget = _WAL_BUDGET
                if span.bounded and self._stop_at is not None and min(upto, written) >= self._stop_at:
                    tracker.try_claim(END)
                    return
                tracker.defer_remainder(Duration.of(s["poll_s"]))
                return
            self._budget = _WAL_BUDGET
            if not tracker.try_claim((got.last_lsn, None)):
                self._decoder = None  # the runner checkpointed first: read these again from the span
                return
            yield from self._emit(got, watermark)
            tracker.defer_remainder()
            return

    def _emit(self, got, watermark):
        name = f"{self._s['schema']}.{self._s['table']}"
        latest = None
        for t in got.changes:
            source = pc.binary_join_element_wise(
                pa.array([name] * t.num_rows, pa.string()), "@", t.column("_lsn").cast(pa.string()), "/",
                t.column("_seq").cast(pa.string()), "")  # fmt: skip
            t = t.append_column("_source", source)
            self._read.inc(t.num_rows)
            stamp = int(pc.max(t.column("_commit_time")).value)  # microseconds
            latest = stamp if latest is None or stamp > latest else latest
            yield TimestampedValue(t, Timestamp(micros=stamp))
        if got.problems:
            lsn, seq, table, error, raw = zip(*got.problems)
            sources = pa.array([f"{t or name}@{a}/{b}" for t, a, b in zip(table, lsn, seq)], pa.string())
            letters = dead_letters(STAGE, UNSUPPORTED, None, pa.array(error, pa.string()),
                                   pa.array(raw, pa.string()), sources)  # fmt: skip
            yield beam.pvalue.TaggedOutput(DEAD, letters)
        if latest is not None:
            current = watermark.current_watermark()
            if current is None or current.micros < latest:
                watermark.set_watermark(Timestamp(micros=latest))


class _ReadBoundedChangesFn(_ReadChangesFn):
    def process(
        self,
        element,
        tracker=beam.DoFn.RestrictionParam(SpanProvider(True, None)),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        return self._process(tracker, watermark)


def _progress(kind: str, where: str, consumer: str, timeout_s: float) -> int | None:
    """A consumer's applied LSN (None while it has applied nothing, or its table is not there yet):
    a PostgreSQL database's progress row, or a Delta table's application transaction."""
    import psycopg

    if kind == "delta":
        from transforms.sinks.lake_mirror import delta_progress

        return delta_progress(where, consumer)
    dsn = where
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout_s * 1000)),))
        if conn.execute("SELECT to_regclass(%s)", (change_progress.PROGRESS_TABLE,)).fetchone()[0] is None:
            return None
        row = conn.execute(change_progress.read_sql(), (consumer,)).fetchone()
    return None if row is None else int(row[0])


class ReadPostgresChanges(beam.PTransform):
    """A PostgreSQL table's changes from a logical replication slot, in commit order.

    Args:
        table: The table (a plain SQL name).
        slot: The replication slot (created with ``pgoutput`` when missing).
        consumers: Every sink applying the changes, as ``(dsn, consumer)`` or ``("postgres", dsn,
            consumer)`` (``MirrorPostgres``) or ``("delta", table uri, consumer)`` (``MirrorDelta``):
            the slot is confirmed up to the lowest LSN they record. Empty: never confirmed.
        schema: The table's schema.
        publication: The publication (created for the table when missing). Default: the slot's name.
        dsn: The connection string; or ``dsn_env`` / ``dsn_file`` to resolve it on the worker.
        poll_seconds: How long an idle reader waits before reading again.
        stop_at_end: Finish once the changes committed before the read began are read (a
            bounded read, for tests and backfills).
        statement_timeout_seconds: Each statement's time limit.

    Returns a dict: ``records`` (typed change tables; see ``pgoutput``) and ``dead_letters``
    (changes that cannot be represented).
    """

    def __init__(self, table: str, slot: str, consumers=(), schema: str = "public", publication: str | None = None,
                 dsn: str | None = None, dsn_env: str | None = None, dsn_file: str | None = None,
                 poll_seconds: float = 0.5, stop_at_end: bool = False, statement_timeout_seconds: float = 60.0,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        for name, what in ((table, "table"), (slot, "slot"), (schema, "schema"), (publication or slot, "publication")):
            pg_sql.check_identifier(name, what)
        if (dsn is None) == (dsn_env is None and dsn_file is None):
            raise ValueError("give the connection string: dsn, or dsn_env or dsn_file")
        self._s = {
            "table": table, "slot": slot, "schema": schema, "publication": publication or slot,
            "consumers": tuple(("postgres", *c) if len(c) == 2 else tuple(c) for c in consumers),
            "dsn": dsn, "dsn_env": dsn_env, "dsn_file": dsn_file,
            "poll_s": check_seconds("poll_seconds", poll_seconds),
            "timeout_s": check_seconds("statement_timeout_seconds", statement_timeout_seconds),
        }  # fmt: skip
        self._bounded = bool(stop_at_end)

    def expand(self, pbegin):
        fn = _ReadBoundedChangesFn(self._s) if self._bounded else _ReadChangesFn(self._s)
        out = (
            pbegin
            | "Slot" >> beam.Create([self._s["slot"]])
            | "ReadSlot" >> beam.ParDo(fn).with_outputs(DEAD, main="records")
        )
        return {"records": out.records, "dead_letters": out[DEAD]}
