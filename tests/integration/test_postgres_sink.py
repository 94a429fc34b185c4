"""UpsertPostgres against a real PostgreSQL server (scripts/postgres.sh; fails if it cannot start)."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone

import apache_beam as beam
import psycopg
import pyarrow as pa
import pytest

from beam_pipelines.pipelines.events import AGGREGATE_KEYS, AGGREGATE_SCHEMA
from tests.services import free_port, start_postgres, stop_postgres
from transforms.sinks.postgres import PostgresUnavailable, UpsertPostgres, _UpsertFn

W0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
W1 = datetime(2024, 1, 1, 1, tzinfo=timezone.utc)


def pane(index: int):
    """An early firing's pane info."""
    from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

    return PaneInfo(index == 0, False, PaneInfoTiming.EARLY, index, -1)


def upsert(fn, table, pane_info=None) -> None:
    """A bundle of one element: process() buffers its rows, the bundle's end writes them."""
    fn.start_bundle()
    fn.process(table, pane_info=pane_info)
    fn.finish_bundle()


def firing(rows) -> pa.Table:
    return pa.Table.from_pylist(
        [
            dict(zip(AGGREGATE_SCHEMA.names, (start, start.replace(hour=start.hour + 1), et, c, n, u, amt)))
            for start, et, c, n, u, amt in rows
        ],
        schema=AGGREGATE_SCHEMA,
    )


def table_rows(dsn, table):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f'SELECT window_start, event_type, country, events, users, amount_sum FROM "{table}" '  # noqa: S608 - fixed name
            "ORDER BY window_start, event_type, country"
        ).fetchall()


def test_each_firing_replaces_the_rows_of_its_keys(pipeline, pg_dsn):
    on_time = firing([(W0, "view", "US", 2, 2, 0.0), (W0, "view", None, 1, 1, 0.0), (W1, "click", "DE", 5, 3, 0.0)])
    late = firing([(W0, "view", "US", 3, 3, 1.5), (W0, "view", None, 2, 1, 0.0)])  # complete values so far
    for i, tables in enumerate(([on_time], [late], [late])):  # the last: a retried firing changes nothing
        p = pipeline()
        p | f"Firing{i}" >> beam.Create(tables) | UpsertPostgres(pg_dsn, "agg_test", AGGREGATE_KEYS, AGGREGATE_SCHEMA)
        p.run().wait_until_finish()
    assert table_rows(pg_dsn, "agg_test") == [
        (W0, "view", "", 2, 1, 0.0),  # a null country is stored as '' (keys cannot be null)
        (W0, "view", "US", 3, 3, 1.5),
        (W1, "click", "DE", 5, 3, 0.0),
    ]


def test_identifiers_are_checked_at_build():
    with pytest.raises(ValueError, match="table"):
        UpsertPostgres("postgresql://x", 'agg"; DROP TABLE x; --', AGGREGATE_KEYS, AGGREGATE_SCHEMA)
    with pytest.raises(ValueError, match="keys"):
        UpsertPostgres("postgresql://x", "agg", ("nope",), AGGREGATE_SCHEMA)
    with pytest.raises(ValueError, match="PostgreSQL type"):
        UpsertPostgres("postgresql://x", "agg", ("a",), pa.schema([("a", pa.list_(pa.int64()))]))
    with pytest.raises(ValueError, match="'_pane' is the sink's own"):
        UpsertPostgres("postgresql://x", "agg", ("_pane",), pa.schema([("_pane", pa.int64())]))
    with pytest.raises(ValueError, match="retry_for_s"):
        UpsertPostgres("postgresql://x", "agg", AGGREGATE_KEYS, AGGREGATE_SCHEMA, retry_for_s=0)


def test_workers_creating_the_table_at_once_do_not_fail(pg_dsn):
    fns = [_UpsertFn(pg_dsn, "agg_race", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 5.0) for _ in range(6)]
    errors = []

    def set_up(fn):
        try:
            fn.setup()
        except psycopg.Error as e:  # what the race raised before the fix
            errors.append(e)

    threads = [threading.Thread(target=set_up, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for fn in fns:
        upsert(fn, firing([(W0, "view", "US", 1, 1, 0.0)]))
        fn.teardown()
    assert table_rows(pg_dsn, "agg_race") == [(W0, "view", "US", 1, 1, 0.0)]


@pytest.fixture
def own_pg():
    """A server of this test's own, to stop and start: (port, dsn)."""
    port = free_port()
    dsn = start_postgres(port, owner_pid=os.getpid())
    yield port, dsn
    stop_postgres(port)


def test_an_upsert_rides_out_a_server_restart(own_pg):
    port, dsn = own_pg
    fn = _UpsertFn(dsn, "agg_restart", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 120.0)
    fn.setup()
    upsert(fn, firing([(W0, "view", "US", 1, 1, 0.0)]))
    stop_postgres(port, keep_data=True)
    # Down for longer than the sink's old budget of a few tries (about 7 s): the budget is in time now.
    restart = threading.Timer(12.0, start_postgres, args=(port, os.getpid()))
    restart.start()
    try:
        upsert(fn, firing([(W0, "view", "US", 2, 2, 0.0), (W1, "click", "DE", 1, 1, 0.0)]))
    finally:
        restart.join()
        fn.teardown()
    assert table_rows(dsn, "agg_restart") == [(W0, "view", "US", 2, 2, 0.0), (W1, "click", "DE", 1, 1, 0.0)]


def test_an_outage_longer_than_the_budget_is_one_clear_error_without_the_password(own_pg):
    port, dsn = own_pg
    # Trust authentication ignores the password, so it can stand for a secret in the DSN.
    secret_dsn = dsn.replace("bp@", "bp:canary-secret-7@")
    fn = _UpsertFn(secret_dsn, "agg_outage", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 2.0)
    fn.setup()
    stop_postgres(port, keep_data=True)
    try:
        with pytest.raises(PostgresUnavailable, match=r"upsert into agg_outage: PostgreSQL not reachable for 2s") as e:
            upsert(fn, firing([(W0, "view", "US", 1, 1, 0.0)]))
        assert "canary-secret-7" not in str(e.value)
    finally:
        fn.teardown()
        start_postgres(port, owner_pid=os.getpid())


def test_an_older_firing_delivered_after_a_newer_one_does_not_replace_it(pg_dsn):
    fn = _UpsertFn(pg_dsn, "agg_panes", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 5.0)
    fn.setup()
    try:
        newer = firing([(W0, "view", "US", 5, 4, 2.5), (W0, "click", "US", 1, 1, 0.0)])
        older = firing([(W0, "view", "US", 3, 3, 1.5), (W0, "click", "DE", 2, 2, 0.0)])
        upsert(fn, newer, pane(2))
        upsert(fn, older, pane(1))  # a retried bundle of the earlier firing
        upsert(fn, newer, pane(2))  # the same firing again changes nothing
    finally:
        fn.teardown()
    assert table_rows(pg_dsn, "agg_panes") == [
        (W0, "click", "DE", 2, 2, 0.0),  # a key only the older firing has is still written
        (W0, "click", "US", 1, 1, 0.0),
        (W0, "view", "US", 5, 4, 2.5),
    ]
    with psycopg.connect(pg_dsn) as conn:
        panes = conn.execute("SELECT event_type, country, _pane FROM agg_panes ORDER BY 1, 2").fetchall()
    assert panes == [("click", "DE", 1), ("click", "US", 2), ("view", "US", 2)]


def test_a_bundle_of_several_firings_writes_each_key_newest_in_one_transaction(pg_dsn):
    fn = _UpsertFn(pg_dsn, "agg_bundle", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 5.0)
    fn.setup()
    try:
        fn.start_bundle()
        # A catch-up bundle: firings 1 and 3 of one window, firing 2 after 3 (out of order).
        fn.process(firing([(W0, "view", "US", 1, 1, 0.5)]), pane_info=pane(1))
        fn.process(firing([(W0, "view", "US", 3, 2, 1.5), (W1, "click", "DE", 1, 1, 0.0)]), pane_info=pane(3))
        fn.process(firing([(W0, "view", "US", 2, 2, 1.0)]), pane_info=pane(2))
        with psycopg.connect(pg_dsn) as conn:  # nothing is written before the bundle ends
            assert conn.execute("SELECT to_regclass('agg_bundle')").fetchone() == (None,)
        fn.finish_bundle()
    finally:
        fn.teardown()
    assert table_rows(pg_dsn, "agg_bundle") == [(W0, "view", "US", 3, 2, 1.5), (W1, "click", "DE", 1, 1, 0.0)]


def test_a_table_made_before_the_pane_column_gets_it(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "CREATE TABLE agg_old (window_start timestamptz, window_end timestamptz, event_type text, country text, "
            "events bigint, users bigint, amount_sum double precision, PRIMARY KEY (window_start, event_type, country))"
        )
        conn.execute("INSERT INTO agg_old VALUES (%s, %s, 'view', 'US', 1, 1, 0.0)", (W0, W1))
    fn = _UpsertFn(pg_dsn, "agg_old", AGGREGATE_KEYS, AGGREGATE_SCHEMA, 5.0)
    fn.setup()
    try:
        upsert(fn, firing([(W0, "view", "US", 2, 2, 0.0)]), pane_info=None)
    finally:
        fn.teardown()
    assert table_rows(pg_dsn, "agg_old") == [(W0, "view", "US", 2, 2, 0.0)]
