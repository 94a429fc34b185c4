"""The online store: each entity's latest features, as a streaming EntityFeatures job upserts them.

The job's ``<step>.online`` rows go to a PostgreSQL table keyed by the entity (``UpsertPostgres``
with ``version: _version``): one row per entity, its features as of its latest event, replaced as
events arrive (the newest computation wins). :class:`OnlineStore` reads them: the entity column
is the table's primary key, every other column but the sink's own (``_pane``, ``_version``) is
returned. The values are the feature table's as of the entity's latest event (what
``training-set`` joins to a label at that time or later).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from beam_pipelines.errors import RunError

__all__ = ["OnlineStore", "OnlineStoreError", "lookup"]

_OWN = ("_pane", "_version")  # the sink's columns: which firing or computation wrote the row


class OnlineStoreError(RunError):
    """The store cannot be read: the server is unreachable, or the table is not an online table."""


class OnlineStore:
    """Reads entities' latest features from an online table; one connection, reused.

    Args:
        dsn: PostgreSQL DSN (``postgresql://user@host:port/db``).
        table: The online table (``UpsertPostgres``' table of a streaming EntityFeatures step).
        connect_timeout: Seconds to wait for the server.
    """

    def __init__(self, dsn: str, table: str, connect_timeout: float = 10):
        import psycopg
        from psycopg import sql

        from transforms.sinks.postgres import _check_ident

        try:
            self.table = _check_ident(table, "table")  # the sink's names: to_regclass would fail on others
        except ValueError as e:
            raise OnlineStoreError(str(e)) from None
        try:
            self._conn = psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True)
        except psycopg.Error as e:
            raise OnlineStoreError(f"cannot reach PostgreSQL: {_first_line(e)}") from e
        try:
            self.entity, self._entity_type, self.columns = self._layout(table)
        except BaseException:
            self._conn.close()
            raise
        ident = sql.Identifier
        self._one = sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            sql.SQL(", ").join(map(ident, self.columns)), ident(table), ident(self.entity)
        )
        self._many = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
            sql.SQL(", ").join(map(ident, self.columns)), ident(table), ident(self.entity)
        )

    def _layout(self, table: str) -> tuple[str, str, tuple[str, ...]]:
        found = self._conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()[0]
        if found is None:
            raise OnlineStoreError(f"no table {table!r} in the database (has the streaming job written it yet?)")
        keys = self._conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s AND i.indisprimary",
            (found,),
        ).fetchall()
        if len(keys) != 1:
            raise OnlineStoreError(f"table {table!r} is not an online feature table: its primary key is not one "
                                   "entity column")  # fmt: skip
        columns = self._conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (found,),
        ).fetchall()
        return keys[0][0], keys[0][1], tuple(c for (c,) in columns if c not in _OWN)

    def entity_value(self, text: str):
        """A command-line entity as the key column's type."""
        return int(text) if self._entity_type in ("bigint", "integer", "smallint") else text

    def get(self, entity) -> dict | None:
        """The entity's latest features (column -> value), or None when it has no row."""
        row = self._conn.execute(self._one, (entity,), prepare=True).fetchone()
        return None if row is None else dict(zip(self.columns, row))

    def get_many(self, entities: Iterable) -> dict:
        """Entity -> its latest features, for the entities that have a row (one query)."""
        rows = self._conn.execute(self._many, (list(entities),), prepare=True).fetchall()
        i = self.columns.index(self.entity)
        return {r[i]: dict(zip(self.columns, r)) for r in rows}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lookup(dsn: str, table: str, entities: Iterable) -> dict:
    """Entity -> latest features for each given entity that has a row (one connection, one query)."""
    with OnlineStore(dsn, table) as store:
        return store.get_many(entities)


def json_value(value):
    """A feature value as JSON: times as ISO-8601, decimals as their text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is not None and not isinstance(value, (bool, int, float, str)):
        return str(value)
    return value


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
