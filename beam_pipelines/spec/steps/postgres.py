"""The ReadPostgres spec step: a PostgreSQL table as a batch source, whole or incremental.

Its rows are typed Arrow tables, parsed like parquet's (``Parse`` takes them unchanged) and
validated against the contract like any file's records. The connection string comes from an
environment variable or a secrets file, never from the spec, so it is in no log, report,
lineage event or job graph. An incremental read's cursor is saved in
``<output>/_state/<step name>.json`` and moves only when the run publishes.
"""

from __future__ import annotations

from beam_pipelines.errors import RunError
from beam_pipelines.spec.shape import duration, duration_seconds
from beam_pipelines.spec.steps.base import register
from beam_pipelines.spec.steps.io import Source
from transforms.ingest.pg_sql import IDENTIFIER
from transforms.sinks.files import join_path

__all__ = ["STATE_DIR", "state_file"]

STATE_DIR = "_state"
TYPED_BYTES_PER_ROW = 28  # the launcher's estimate for a typed (parquet) row (main._BYTES_PER_ROW)
_NAME = {"type": "string", "pattern": IDENTIFIER, "description": "A plain SQL name: letters, digits and _."}


def state_file(root: str, step: str) -> str:
    """Where the source step ``step`` keeps its cursor under an output root (or a staging directory)."""
    return join_path(root, STATE_DIR, f"{step}.json")


@register
class ReadPostgres(Source):
    type = "ReadPostgres"
    doc = (
        "Reads a PostgreSQL table in parallel primary-key ranges (ADBC, binary results into Arrow): the whole "
        "table, or incrementally the rows whose cursor column moved since the last published run (with a "
        "lookback for late commits). The connection string comes from dsn_env or dsn_file."
    )
    modes = ("batch",)
    config_schema = {
        "type": "object",
        "properties": {
            "table": _NAME,
            "schema": {**_NAME, "description": "The table's schema. Default: public."},
            "key": {
                **_NAME,
                "description": "An integer NOT NULL column (the primary key): reads are split into ranges of it, "
                "and it breaks ties between rows with the same cursor.",
            },
            "columns": {"type": "array", "minItems": 1, "items": _NAME, "description": "Columns read. Default: all."},
            "cursor": {
                **_NAME,
                "description": "A timestamp NOT NULL column (e.g. updated_at) for incremental reads. Default: "
                "none, the whole table every run.",
            },
            "lookback": duration("Incremental reads also take rows this far before the saved cursor.", minimum=0),
            "ranges": {"type": "integer", "minimum": 1, "description": "Key ranges read in parallel. Default: 8."},
            "statement_timeout": duration("Each statement's time limit. Default: 10m."),
            "dsn_env": {
                "type": "string",
                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "Environment variable holding the connection string (e.g. PG_SOURCE_DSN).",
            },
            "dsn_file": {
                "type": "string",
                "description": "Or a file holding the connection string (a mounted secret).",
            },
        },
        "required": ["table", "key"],
    }

    def columns(self, inputs):
        c = self.config
        if ("dsn_env" in c) == ("dsn_file" in c):
            raise self.error(None, "give the connection string's place: dsn_env or dsn_file (exactly one)")
        if "lookback" in c and "cursor" not in c:
            raise self.error("lookback", "a lookback needs a cursor column")
        cols = c.get("columns")
        if cols is not None and len(set(cols)) != len(cols):
            raise self.error("columns", "columns are listed twice")
        self.ctx.source_format = "parquet"  # typed Arrow tables, parsed as parquet's are
        return None

    def format(self) -> str:
        return "parquet"

    def _table(self) -> str:
        return f"{self.config.get('schema', 'public')}.{self.config['table']}"

    def _dsn(self) -> str:
        from transforms.ingest.pg_sql import resolve_dsn

        return resolve_dsn(self.config.get("dsn_env"), self._dsn_file())

    def _dsn_file(self) -> str | None:
        import os

        f = self.config.get("dsn_file")
        return None if f is None else os.path.join(self.ctx.base_dir, f)

    def input_name(self) -> str:
        """Where the rows come from, without user or password (the run summary and lineage show it)."""
        from transforms.ingest.pg_sql import describe

        try:
            where = describe(self._dsn())
        except ValueError:
            where = "postgresql://"
        return f"{where}/{self._table()}"

    def preflight(self) -> int:
        """Connects and checks the table's columns before any worker starts; returns the size the
        launcher sizes the run by: the planner's row estimate times a typed (parquet) row's bytes,
        since the rows arrive as typed tables (the table's own size on disk, with its text and
        page overhead, made the shuffle four times too wide: 1M rows ran 14.9 s against 27.6 s)."""
        from transforms.ingest import pg_sql
        from transforms.ingest.postgres import _connect, check_columns

        c = self.config
        try:
            conn, dsn = _connect(c.get("dsn_env"), self._dsn_file(), 30_000)
        except (ValueError, ConnectionError) as e:
            raise RunError(
                f"cannot connect to PostgreSQL for {self.name}: {str(e).removeprefix('PostgreSQL: ')}"
            ) from None
        try:
            with conn.cursor() as cur:
                cur.execute(pg_sql.column_query(), (c.get("schema", "public"), c["table"]))
                rows = cur.fetchall()
            check_columns(
                rows, self._table(), c["key"], c.get("cursor"), tuple(c["columns"]) if "columns" in c else None
            )
            with conn.cursor() as cur:
                # reltuples is -1 until the table was first analysed: then a row per 100 bytes.
                cur.execute(
                    "SELECT CASE WHEN reltuples >= 0 THEN reltuples ELSE pg_table_size(oid) / 100 END "
                    "FROM pg_class WHERE oid = to_regclass($1)",
                    (pg_sql.quoted(c.get("schema", "public"), c["table"]),),
                )
                rows = cur.fetchone()[0]
        except ValueError as e:
            raise RunError(f"{self.name}: {e}") from None
        finally:
            conn.close()
        return int((rows or 0) * TYPED_BYTES_PER_ROW)

    def make(self, root: str):
        from transforms.ingest.pg_state import read_state
        from transforms.ingest.postgres import ReadPostgres as Read

        c = self.config
        cursor = c.get("cursor")
        return Read(
            c["table"],
            c["key"],
            schema=c.get("schema", "public"),
            columns=tuple(c["columns"]) if "columns" in c else None,
            cursor=cursor,
            lookback_s=duration_seconds(c["lookback"]) if "lookback" in c else 0,
            state=read_state(state_file(self.ctx.cfg.output, self.name)) if cursor else None,
            state_path=state_file(root, self.name) if cursor else None,
            ranges=c.get("ranges", 8),
            dsn_env=c.get("dsn_env"),
            dsn_file=self._dsn_file(),
            statement_timeout_s=duration_seconds(c["statement_timeout"]) if "statement_timeout" in c else 600,
        )
