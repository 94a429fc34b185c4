"""MirrorDelta: change tables (``ReadPostgresChanges``) applied to a Delta Lake table.

Each element is one MERGE on the key (the last change of each key in the element wins): a
delete removes the row, an insert or update replaces or adds it. The commit carries a Delta
application transaction named after the consumer whose version is the element's last commit
LSN, so the table itself records how far it applied the slot: changes at or before it are
skipped (a redelivery after a crash changes nothing), and the source reads it to confirm the
slot (``change_progress``).
"""

from __future__ import annotations

import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms import faults
from transforms.sinks.postgres_mirror import LSN, last_per_key

__all__ = ["MirrorDelta", "delta_progress"]


_CONFLICT_TRIES = 10


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def delta_progress(uri: str, consumer: str) -> int | None:
    """The last LSN ``consumer`` applied to the Delta table at ``uri`` (None: none yet)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        return None
    return DeltaTable(uri).transaction_version(consumer)


class _MirrorDeltaFn(beam.DoFn):
    def __init__(self, uri: str, keys: tuple[str, ...], columns: tuple[str, ...], consumer: str):
        self._uri, self._keys, self._columns, self._consumer = uri, keys, columns, consumer

    def setup(self):
        self._applied = beam.metrics.Metrics.counter("mirror", "changes_applied")

    def process(self, table: pa.Table):
        from deltalake.exceptions import CommitFailedError

        if table.num_rows == 0:
            return
        for attempt in range(_CONFLICT_TRIES):
            try:
                yield from self._apply(table)
                return
            except CommitFailedError:  # a concurrent commit (compaction by lakehouse maintain): read again
                if attempt == _CONFLICT_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _apply(self, table: pa.Table):
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

        target = DeltaTable(self._uri) if DeltaTable.is_deltatable(self._uri) else None
        done = (target.transaction_version(self._consumer) if target is not None else None) or -1
        fresh = table.filter(pc.greater(table.column(LSN), done)) if done >= 0 else table
        if fresh.num_rows == 0:
            return
        last = last_per_key(fresh, self._keys)
        top = int(pc.max(fresh.column(LSN)).as_py())
        props = CommitProperties(app_transactions=[Transaction(self._consumer, top)])
        cols = [*self._columns, LSN]
        if target is None:
            rows = last.filter(pc.not_equal(last.column("_op"), "delete")).select(cols)
            write_deltalake(self._uri, rows, mode="append", commit_properties=props)
        else:
            on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in self._keys)
            values = {_q(c): f"s.{_q(c)}" for c in cols}
            (
                target.merge(
                    last.select([*cols, "_op"]), on, source_alias="s", target_alias="t", commit_properties=props
                )  # fmt: skip
                .when_matched_delete(predicate="s._op = 'delete'")
                .when_matched_update(updates=values, predicate="s._op <> 'delete'")
                .when_not_matched_insert(updates=values, predicate="s._op <> 'delete'")
                .execute()
            )
        self._applied.inc(fresh.num_rows)
        faults.at("mirror:applied")
        yield {"table": self._uri, "applied": fresh.num_rows, "lsn": top}


class MirrorDelta(beam.PTransform):
    """Applies change tables to a Delta Lake table, exactly once per change across restarts.

    Args:
        uri: The table's directory (created with the first element's rows).
        keys: The key columns.
        columns: The rows' columns written (besides ``_lsn``); the change columns (``_op``,
            ``_lsn``, ``_seq``) must be in every element.
        consumer: The application transaction id recording this table's progress.

    Returns a PCollection of one summary dict per element applied.
    """

    def __init__(self, uri: str, keys: tuple[str, ...], columns: tuple[str, ...], consumer: str,
                 label: str | None = None):  # fmt: skip
        super().__init__(label)
        if not keys or any(k not in columns for k in keys):
            raise ValueError(f"keys {list(keys)} must be columns of the rows ({', '.join(columns)})")
        if not consumer:
            raise ValueError("consumer is required")
        self._fn = _MirrorDeltaFn(uri, tuple(keys), tuple(columns), consumer)

    def expand(self, tables):
        return tables | "Apply" >> beam.ParDo(self._fn).with_input_types(pa.Table).with_output_types(dict)
