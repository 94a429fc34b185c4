"""Row-level security on the PostgreSQL sink, against a real server (scripts/postgres.sh).

The pipeline runs as a plain role (not the superuser, which bypasses every policy) and writes
through the policies it made; people of two tenants, each granted their tenant's role, connect
and see only their tenant's rows; an application's shared role sees the tenant its session
names. Roles are server-wide, so each test's names are its own.
"""

from __future__ import annotations

import uuid

import apache_beam as beam
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from transforms.sinks.postgres import UpsertPostgres, _UpsertFn
from transforms.sinks.row_security import SETTING, RowSecurity

SCHEMA = pa.schema([("tenant", pa.string()), ("user_id", pa.string()), ("purchases", pa.int64())])
KEYS = ("tenant", "user_id")
# A tenant value made to break out of a quoted literal: it must stay a value.
HOSTILE = "x'); DROP TABLE accounts; --"


def upsert(fn, table, pane_info=None) -> None:
    """A bundle of one element: process() buffers its rows, the bundle's end writes them."""
    fn.start_bundle()
    fn.process(table, pane_info=pane_info)
    fn.finish_bundle()


def rows(*values) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, v)) for v in values], schema=SCHEMA)


def as_role(dsn: str, role: str) -> str:
    """The DSN with another user (the test server trusts local connections)."""
    return dsn.replace("://bp@", f"://{role}@")


@pytest.fixture
def roles(pg_dsn):
    """A plain pipeline role (CREATEROLE, owns what it creates) and login users; dropped after."""
    tag = uuid.uuid4().hex[:8]
    names = {k: f"{k}_{tag}" for k in ("pipe", "alice", "bob", "carol", "acme", "globex", "app", "hostile")}
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(names["pipe"])))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(names["pipe"])))
        for user in ("alice", "bob", "carol"):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(names[user])))
    yield names
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in conn.execute("SELECT tablename FROM pg_tables WHERE tableowner = %s", (names["pipe"],)).fetchall():
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table[0])))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(names["pipe"])))
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def grant(dsn: str, role: str, user: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user)))


def seen(dsn: str, table: str, tenant: str | None = None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if tenant is not None:
            conn.execute("SELECT set_config(%s, %s, false)", (SETTING, tenant))
        return conn.execute(sql.SQL("SELECT tenant, user_id, purchases FROM {} ORDER BY 1, 2").format(
            sql.Identifier(table))).fetchall()  # fmt: skip


def test_each_tenant_sees_only_its_rows_and_the_pipeline_writes_through_the_policies(pipeline, pg_dsn, roles):
    table = f"purchases_{roles['pipe']}"
    security = RowSecurity(
        "tenant", {"acme": roles["acme"], "globex": roles["globex"], HOSTILE: roles["hostile"]}, roles["app"]
    )
    writer = as_role(pg_dsn, roles["pipe"])
    first = rows(("acme", "u1", 1), ("acme", "u2", 2), ("globex", "u1", 7), (HOSTILE, "u9", 9), (None, "u0", 3))
    p = pipeline()
    p | beam.Create([first]) | UpsertPostgres(writer, table, KEYS, SCHEMA, row_security=security)
    p.run().wait_until_finish()

    # The roles were created by the sink; people get them from whoever runs the database.
    grant(pg_dsn, roles["acme"], roles["alice"])
    grant(pg_dsn, roles["globex"], roles["bob"])
    grant(pg_dsn, roles["app"], roles["carol"])
    alice, bob, carol = (as_role(pg_dsn, roles[u]) for u in ("alice", "bob", "carol"))
    assert seen(alice, table) == [("acme", "u1", 1), ("acme", "u2", 2)]
    assert seen(bob, table) == [("globex", "u1", 7)]
    assert seen(carol, table) == []  # no tenant named in the session: nothing
    assert seen(carol, table, "globex") == [("globex", "u1", 7)]
    assert seen(carol, table, HOSTILE) == [(HOSTILE, "u9", 9)]  # the hostile value stayed a value
    with psycopg.connect(alice) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('globex', 'u5', 1)").format(sql.Identifier(table)))

    # The pipeline's role is not a superuser and the table forces row security on its owner: its
    # writes go through its own policy. A second firing updates one tenant's row.
    with psycopg.connect(writer) as conn:
        flags = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
        forced = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", (table,)
        ).fetchone()
    assert flags == (False, False) and forced == (True, True)
    fn = _UpsertFn(writer, table, KEYS, SCHEMA, 30.0, row_security=security)
    fn.setup()  # set up again over the existing table, roles and policies: nothing fails
    try:
        upsert(fn, rows(("globex", "u1", 8)))
    finally:
        fn.teardown()
    assert seen(bob, table) == [("globex", "u1", 8)]
    assert seen(alice, table) == [("acme", "u1", 1), ("acme", "u2", 2)]
    assert len(seen(writer, table)) == 5  # the writer sees every row, the tenantless one too


def test_a_role_that_cannot_create_the_tenant_roles_fails_with_one_clear_error(pg_dsn, roles):
    plain = roles["alice"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(plain)))
    try:
        fn = _UpsertFn(as_role(pg_dsn, plain), f"t_{plain}", KEYS, SCHEMA, 30.0,
                       row_security=RowSecurity("tenant", {"acme": roles["acme"]}))  # fmt: skip
        fn.setup()
        try:
            with pytest.raises(PermissionError, match=f"cannot create role '{roles['acme']}'.*CREATEROLE"):
                upsert(fn, rows(("acme", "u1", 1)))
        finally:
            fn.teardown()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"t_{plain}")))
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(plain)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"column": "purchases"}, "must be a key column"),
        ({"roles": {"acme": 'r"; DROP ROLE x; --'}}, "must match"),
        ({"roles": {"acme": "r1", "globex": "r1"}}, "each role reads one tenant"),
        ({"roles": {}}, "needs roles, a shared_role or both"),
        ({"roles": {"": "r1"}}, "non-empty strings"),
    ],
)
def test_bad_row_security_is_refused_when_the_sink_is_built(kwargs, message):
    args = {"column": "tenant", "roles": {"acme": "r_acme"}, **kwargs}
    with pytest.raises(ValueError, match=message):
        UpsertPostgres("postgresql://x", "t", KEYS, SCHEMA, row_security=RowSecurity(**args))
