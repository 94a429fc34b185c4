"""Change data capture spec steps: ``ReadPostgresChanges`` (a table's changes from a logical
replication slot), ``MirrorPostgres`` and ``MirrorDelta`` (those changes applied to a PostgreSQL
or a Delta Lake table, deletes as deletes).

The changes are typed tables, parsed like parquet's and validated against the contract; the
change columns (``_op``, ``_lsn``, ``_seq``, ``_commit_time``, ``_before``) ride along. A column
added to the source table (``ALTER TABLE ... ADD COLUMN``) reaches Validate as an undeclared
field: the contract's evolution rules say what it does (kept in ``extras``, a dead letter, or a
stopped run). The source confirms the slot only up to what every mirror of the pipeline
applied (``transforms.change_progress``), so a restart goes on where the sinks are.
"""

from __future__ import annotations

import os

import pyarrow as pa

from beam_pipelines.spec.steps.base import register
from beam_pipelines.spec.steps.io import _RELATIVE, Sink, Source, _password_in
from transforms.ingest.pg_sql import IDENTIFIER
from transforms.records import CHANGE_COLUMNS
from transforms.sinks.files import join_path

__all__ = []

_NAME = {"type": "string", "pattern": IDENTIFIER, "description": "A plain SQL name: letters, digits and _."}
_CHANGE_TYPES = {
    "_op": pa.string(),
    "_lsn": pa.int64(),
    "_seq": pa.int32(),
    "_commit_time": pa.timestamp("us", tz="UTC"),
    "_before": pa.string(),
}
_APPLIED = ("_op", "_lsn", "_seq")


@register
class ReadPostgresChanges(Source):
    type = "ReadPostgresChanges"
    doc = (
        "Streams a PostgreSQL table's inserts, updates and deletes in commit order from a logical replication slot "
        "(pgoutput; slot and publication created when missing; wal_level = logical). The slot is confirmed only up "
        "to what every MirrorPostgres step applied, so a restart loses and repeats nothing. The connection string "
        "comes from dsn_env or dsn_file."
    )
    modes = ("streaming",)
    replays = False
    # A restart goes on from the slot's confirmed position over the same outputs (the sinks skip
    # what they applied): neither a replay from scratch nor a fresh start.
    resumes = True
    config_schema = {
        "type": "object",
        "properties": {
            "table": _NAME,
            "schema": {**_NAME, "description": "The table's schema. Default: public."},
            "slot": {**_NAME, "description": "The replication slot (one reader per slot)."},
            "publication": {**_NAME, "description": "The publication. Default: the slot's name."},
            "dsn_env": {
                "type": "string",
                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "Environment variable holding the connection string (a role with REPLICATION).",
            },
            "dsn_file": {"type": "string", "description": "Or a file holding the connection string."},
            "poll_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "How long an idle reader waits before reading again. Default: 0.5.",
            },
            "stop_at_end": {
                "type": ["boolean", "string"],
                "description": "Finish once the changes committed before the start are applied (a bounded read). "
                "Default: false.",
            },
        },
        "required": ["table", "slot"],
    }

    def columns(self, inputs):
        c = self.config
        if ("dsn_env" in c) == ("dsn_file" in c):
            raise self.error(None, "give the connection string's place: dsn_env or dsn_file (exactly one)")
        self.ctx.source_format = "parquet"  # typed change tables
        self.ctx.change_source = self
        self.ctx.live = not self.bounded()
        return None

    def bounded(self) -> bool:
        v = self.config.get("stop_at_end", False)
        return v if isinstance(v, bool) else str(v).lower() in ("true", "1", "yes")

    def format(self) -> str:
        return "parquet"

    def _dsn_file(self) -> str | None:
        import os

        f = self.config.get("dsn_file")
        return None if f is None else os.path.join(self.ctx.base_dir, f)

    def _table(self) -> str:
        return f"{self.config.get('schema', 'public')}.{self.config['table']}"

    def input_name(self) -> str:
        from transforms.ingest.pg_sql import describe, resolve_dsn

        try:
            where = describe(resolve_dsn(self.config.get("dsn_env"), self._dsn_file()))
        except ValueError:
            where = "postgresql://"
        return f"changes of {where}/{self._table()} (slot {self.config['slot']})"

    def preflight(self) -> None:
        """OSError with one line when the server, table, slot or publication cannot be used."""
        from transforms.ingest.pg_sql import resolve_dsn
        from transforms.ingest.postgres_cdc import CdcSourceError, _connect, prepare_slot

        c = self.config
        try:
            conn = _connect(resolve_dsn(c.get("dsn_env"), self._dsn_file()), 30.0)
        except (ValueError, CdcSourceError) as e:
            raise OSError(f"{self.name}: {e}") from None
        try:
            prepare_slot(conn, c.get("schema", "public"), c["table"], c["slot"], c.get("publication", c["slot"]))
        except CdcSourceError as e:
            raise OSError(f"{self.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a privilege or server error, said in one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OSError(f"{self.name}: {first}") from None
        finally:
            conn.close()

    def make(self, root: str):
        from transforms.ingest.postgres_cdc import ReadPostgresChanges as Read

        c = self.config
        return Read(
            c["table"],
            c["slot"],
            consumers=tuple(self.ctx.change_consumers),
            schema=c.get("schema", "public"),
            publication=c.get("publication"),
            dsn_env=c.get("dsn_env"),
            dsn_file=self._dsn_file(),
            poll_seconds=c.get("poll_seconds", 0.5),
            stop_at_end=self.bounded(),
        )

    def build(self, inputs, io):
        from beam_pipelines.spec.steps.base import Outputs

        out = inputs[0] | self.name >> io.source_for(self)
        if isinstance(out, dict):
            return Outputs(out["records"], extra={"rejected": out["dead_letters"]})
        return Outputs(out)


@register
class MirrorPostgres(Sink):
    type = "MirrorPostgres"
    doc = (
        "Applies a ReadPostgresChanges stream to a PostgreSQL table (created when missing): inserts and updates as "
        "upserts by key, deletes as deletes, each change exactly once across restarts."
    )
    modes = ("streaming",)
    config_schema = {
        "type": "object",
        "properties": {
            "dsn": {
                "type": "string",
                "description": "postgresql://user@host:port/db (e.g. ${pg_dsn}), without a password: it travels in "
                "the job graph. The password goes in PGPASSWORD or PGPASSFILE on the workers.",
            },
            "table": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]{0,62}$", "description": "A plain SQL name."},
            "keys": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "retry_for_seconds": {
                "type": "number",
                "minimum": 1,
                "description": "How long a write is retried while PostgreSQL is unreachable. Default: 300.",
            },
        },
        "required": ["dsn", "table", "keys"],
    }

    def columns(self, inputs):
        source = _change_sink_checks(self, inputs)
        if _password_in(self.config["dsn"]):
            raise self.error("dsn", "holds a password, which would travel in the job graph: give the password by "
                                    "PGPASSWORD or PGPASSFILE on the workers")  # fmt: skip
        self._schema = pa.schema([(c, t) for c, t in inputs[0].items() if not c.startswith("_")])
        self.consumer = f"{source.config['slot']}/{self.config['table']}"
        self.ctx.change_consumers.append(("postgres", self.config["dsn"], self.consumer))
        return None

    def reads(self):
        return set(self._schema.names) | set(_APPLIED)

    def make(self, root: str):
        from transforms.sinks.postgres_mirror import MirrorPostgres as Mirror

        c = self.config
        return Mirror(c["dsn"], c["table"], tuple(c["keys"]), self._schema, self.consumer,
                      retry_for_s=c.get("retry_for_seconds", 300.0))  # fmt: skip


@register
class MirrorDelta(Sink):
    type = "MirrorDelta"
    doc = (
        "Applies a ReadPostgresChanges stream to a Delta Lake table under --output (created with the first "
        "changes): one MERGE per batch, deletes as deletes, each change exactly once across restarts (the table's "
        "own application transaction records the last LSN applied)."
    )
    modes = ("streaming",)
    config_schema = {
        "type": "object",
        "properties": {
            "path": {**_RELATIVE, "description": "The table's directory under --output (e.g. lakehouse/orders)."},
            "keys": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        },
        "required": ["path", "keys"],
    }

    def columns(self, inputs):
        source = _change_sink_checks(self, inputs)
        output = self.ctx.cfg.output
        if output and "://" in output:
            raise self.error(None, "MirrorDelta writes under a local --output (object-store tables are not built yet)")
        self._columns = tuple(c for c in inputs[0] if not c.startswith("_"))
        self.consumer = f"{source.config['slot']}/{self.config['path']}"
        self._uri = join_path(output or ".", self.config["path"])
        self.ctx.change_consumers.append(("delta", os.path.abspath(self._uri), self.consumer))
        return None

    def reads(self):
        return set(self._columns) | set(_APPLIED)

    def maintenance(self, output: str) -> dict:
        """What ``lakehouse maintain`` does to the table: compaction of the small files each batch's
        MERGE leaves, and vacuum after 7 days (no retention: a mirror holds the source's rows)."""
        return {"step": self.name, "layer": "mirror", "table": join_path(output, self.config["path"].rstrip("/")),
                "retention_days": None, "keep_versions_hours": 168, "target_bytes": 128 * 1024 * 1024}  # fmt: skip

    def make(self, root: str):
        from transforms.sinks.lake_mirror import MirrorDelta as Mirror

        return Mirror(os.path.abspath(self._uri), tuple(self.config["keys"]), self._columns, self.consumer)


def _change_sink_checks(step: Sink, inputs) -> Source:
    """A mirror's checks: a change stream reaches it with its change columns and its keys; returns
    the stream's source step."""
    Sink.columns(step, inputs)
    source = step.ctx.change_source
    if source is None:
        raise step.error(None, f"{step.type} applies a change stream: the source must be ReadPostgresChanges")
    for col in _APPLIED:
        if col not in inputs[0]:
            raise step.error(None, f"the change column {col} does not reach this step: take the validated records "
                                   "(a Select must keep _op, _lsn and _seq)")  # fmt: skip
    for i, k in enumerate(step.config["keys"]):
        step.need(inputs[0], k, f"keys.{i}")
    return source


def change_columns() -> dict:
    """The change columns and their types, as Validate passes them on."""
    return {c: _CHANGE_TYPES[c] for c in CHANGE_COLUMNS}
