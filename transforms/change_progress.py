"""Where a change-data-capture consumer records how far it has durably applied a slot's changes.

A sink that applies changes (``MirrorPostgres``) stores, in the same transaction as the rows,
the commit end LSN of the last change it applied, under a consumer name, in its own database's
``bp_cdc_progress`` table. The source (``ReadPostgresChanges``) reads the lowest LSN over its
consumers and only then confirms it to the replication slot: PostgreSQL may forget a change only
once every sink holds it. On a restart the slot gives again what was not confirmed, and each
sink skips what its own row says it already applied.
"""

from __future__ import annotations

__all__ = ["PROGRESS_TABLE", "create_sql", "read_sql", "write_sql"]

PROGRESS_TABLE = "bp_cdc_progress"


def create_sql() -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} ("
        "consumer text PRIMARY KEY, lsn bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
    )


def read_sql(lock: bool = False) -> str:
    """One parameter: the consumer. Selects its LSN (``FOR UPDATE`` when ``lock``)."""
    return f"SELECT lsn FROM {PROGRESS_TABLE} WHERE consumer = %s" + (" FOR UPDATE" if lock else "")


def write_sql() -> str:
    """Two parameters: the consumer and its new LSN (never moved back)."""
    return (
        f"INSERT INTO {PROGRESS_TABLE} (consumer, lsn) VALUES (%s, %s) ON CONFLICT (consumer) DO UPDATE "
        f"SET lsn = GREATEST({PROGRESS_TABLE}.lsn, EXCLUDED.lsn), updated_at = now()"
    )
