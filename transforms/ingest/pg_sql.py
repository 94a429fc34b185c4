"""The PostgreSQL source's SQL, connection string and read plan, as pure functions.

Every statement takes its values as bind parameters (``$1``, ``$2``...: the ADBC driver binds
them server-side); table and column names are checked against ``IDENTIFIER`` and quoted with
psycopg's ``sql.Identifier``. The connection string is read from an environment variable or a
secrets file when a session opens, so it never sits in the job graph, and error messages are
scrubbed of it before they travel.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

__all__ = [
    "IDENTIFIER",
    "KEY_TYPES",
    "CURSOR_TYPES",
    "Window",
    "check_identifier",
    "column_query",
    "key_bounds_query",
    "quoted",
    "read_query",
    "resolve_dsn",
    "scrub",
    "split_ranges",
    "upper_query",
]

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_IDENTIFIER = re.compile(IDENTIFIER)
IDENTIFIER_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_TYPES = ("smallint", "integer", "bigint")
CURSOR_TYPES = ("timestamp with time zone", "timestamp without time zone")


def check_identifier(name: str, what: str) -> str:
    """``name`` when it is a plain SQL name (letters, digits, ``_``; at most 63), else ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} must be a plain SQL name ({IDENTIFIER}), got {name!r}")
    return name


def _q(*names: str) -> str:
    return sql.Identifier(*names).as_string(None)


def quoted(*names: str) -> str:
    """Checked names as one quoted SQL name (``"public"."orders"``), e.g. for ``to_regclass($1)``."""
    return _q(*(check_identifier(n, "name") for n in names))


def resolve_dsn(dsn_env: str | None, dsn_file: str | None) -> str:
    """The connection string from the environment variable ``dsn_env`` or the file ``dsn_file``."""
    if dsn_env:
        value = os.environ.get(dsn_env, "").strip()
        if not value:
            raise ValueError(f"environment variable {dsn_env} (the PostgreSQL connection string) is not set")
        return value
    if dsn_file:
        try:
            with open(dsn_file, encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError as e:
            raise ValueError(f"cannot read the PostgreSQL secrets file {dsn_file}: {e.strerror}") from None
        if not value:
            raise ValueError(f"the PostgreSQL secrets file {dsn_file} is empty")
        return value
    raise ValueError("give dsn_env or dsn_file")


def scrub(message: str, dsn: str) -> str:
    """``message`` on one line, without the connection string or its password (drivers may echo either)."""
    secrets = [dsn]
    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001 - a malformed string has no password to find: hide every piece of it
        password = None
        # libpq names the piece it choked on (``missing "=" after "<piece>"``): a secrets file that
        # holds only a password, or the wrong file, would show it.
        secrets += [piece for piece in re.split(r"[\s=]+", dsn) if len(piece) >= 3]
    if password:
        secrets.append(password)
    for s in sorted(secrets, key=len, reverse=True):
        message = message.replace(s, "***")
    return " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line: libpq adds hints


def describe(dsn: str) -> str:
    """``postgresql://host:port/db``: where a DSN points, without user or password."""
    try:
        d = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - said plainly instead of echoing a malformed secret
        return "postgresql://?"
    return f"postgresql://{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', '')}"


def column_query() -> str:
    """Name, type and NOT NULL of every column of table ($1 schema, $2 table)."""
    return (
        "SELECT a.attname::text, format_type(a.atttypid, NULL), a.attnotnull "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )


def key_bounds_query(schema: str, table: str, key: str) -> str:
    """The key's min and max (two index probes when the key is indexed)."""
    return f"SELECT min({_q(key)}), max({_q(key)}) FROM {_q(schema, table)}"  # names checked and quoted


def upper_query(schema: str, table: str, key: str, cursor: str) -> str:
    """The last row by (cursor, key): the upper end of an incremental window, fixed at planning."""
    return f"SELECT {_q(cursor)}, {_q(key)} FROM {_q(schema, table)} ORDER BY {_q(cursor)} DESC, {_q(key)} DESC LIMIT 1"


@dataclass(frozen=True)
class Window:
    """Which rows of an incremental read: ``(cursor, key)`` after ``lower`` (or, with a lookback,
    cursor at or after ``lower[0]``) and up to ``upper``, both ``(timestamp, key)``; None ends are open."""

    lower: tuple | None
    upper: tuple | None
    lookback: bool = False


def window_for(state: dict | None, upper: tuple | None, lookback_s: int) -> Window:
    """The incremental window after ``state`` (the last published cursor) up to ``upper``."""
    if not state or state.get("cursor") is None:
        return Window(None, upper)
    ts = datetime.fromisoformat(state["cursor"])
    if lookback_s:
        return Window((ts - timedelta(seconds=lookback_s), None), upper, lookback=True)
    return Window((ts, state["cursor_key"]), upper)


def read_query(
    schema: str, table: str, key: str, columns: tuple[str, ...] | None, cursor: str | None, window: Window | None,
    lo: int, hi: int | None,
) -> tuple[str, list]:  # fmt: skip
    """One key range ``[lo, hi)`` (``hi`` None: to the end) of the window: the query and its parameters."""
    names = "*" if columns is None else ", ".join(_q(c) for c in columns)
    where, params = [f"{_q(key)} >= $1"], [lo]
    if hi is not None:
        params.append(hi)
        where.append(f"{_q(key)} < ${len(params)}")
    if cursor is not None and window is not None:
        pair = f"({_q(cursor)}, {_q(key)})"
        if window.lower is not None:
            if window.lookback:
                params.append(window.lower[0])
                where.append(f"{_q(cursor)} >= ${len(params)}")
            else:
                params += list(window.lower)
                where.append(f"{pair} > (${len(params) - 1}, ${len(params)})")
        if window.upper is not None:
            params += list(window.upper)
            where.append(f"{pair} <= (${len(params) - 1}, ${len(params)})")
    return f"SELECT {names} FROM {_q(schema, table)} WHERE {' AND '.join(where)}", params


def split_ranges(lo: int | None, hi: int | None, n: int) -> list[tuple[int, int | None]]:
    """``n`` (or fewer) key ranges ``[start, end)`` that tile ``[lo, hi]``; the last is open-ended
    (``end`` None), so a key at the very top of int64 is read too. Empty when the table is."""
    if lo is None or hi is None:
        return []
    span = hi - lo + 1
    n = max(1, min(n, span))
    step = -(-span // n)
    starts = list(range(lo, hi + 1, step))
    return [(s, starts[i + 1] if i + 1 < len(starts) else None) for i, s in enumerate(starts)]


def as_utc(value: datetime) -> datetime:
    """A cursor value as aware UTC (a ``timestamp without time zone`` column is read as UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
