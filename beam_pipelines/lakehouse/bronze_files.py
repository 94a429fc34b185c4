"""Bronze's staged files committed into its Delta table as they were written (no rewrite).

A launched run stages bronze's rows with every column the table holds in its files (``record``,
``source``, ``ingest_time``, ``run_id``: ``WriteReceived`` with the run's id), one ingest day per
run. The publish then hard-links each staged file into its ``ingest_date=`` partition of the table
(a copy where a link cannot be made) and commits their add actions, with statistics computed from
the file's small columns (the record text gets its null count only), in one commit carrying the
entry's application transaction. A cut-off publish completed again links the files again under
new names: the names the earlier try left, never committed, are orphans that ``lakehouse
maintain``'s vacuum removes.

``commit`` says False, committing nothing, where this does not apply (staged files of another
shape, as a run without an id stages, or a table with table features, of another schema or on a
remote store); ``commit.py`` then appends the rows through delta-rs, reading and writing them.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.lakehouse import arrow_merge

__all__ = ["commit"]

INGEST_DATE = "ingest_date"
_SMALL = ("source", "ingest_time", "run_id")  # the columns statistics are computed from (record: null count only)
SCHEMA = pa.schema(
    [
        pa.field("record", pa.string()),
        pa.field("source", pa.string()),
        pa.field("ingest_time", pa.timestamp("us", tz="UTC")),
        pa.field("run_id", pa.string()),
    ]
)


def _local(uri: str) -> str | None:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri if "://" not in uri else None


def _fits(table) -> bool:
    protocol = table.protocol()
    if protocol.reader_features or protocol.writer_features or protocol.min_writer_version > 2:
        return False
    if table.metadata().partition_columns != [INGEST_DATE]:
        return False
    held = arrow_merge.table_schema(table)
    return {f.name: f.type for f in held} == {**{f.name: f.type for f in SCHEMA}, INGEST_DATE: pa.date32()}


def _shape(path: str, run_id: str):
    """(rows, ingest day, statistics JSON) of a staged file, or None when it cannot be committed as written."""
    f = pq.ParquetFile(path)
    if [(x.name, x.type) for x in f.schema_arrow] != [(x.name, x.type) for x in SCHEMA]:
        return None
    small = f.read(columns=list(_SMALL))
    runs = pc.unique(small.column("run_id")).to_pylist()
    days = pc.unique(pc.cast(small.column("ingest_time"), pa.date32())).to_pylist()
    if runs != [run_id] or len(days) != 1 or days[0] is None:
        return None
    nulls = 0 if not f.schema_arrow.field("record").nullable else _null_count(f.metadata, "record")
    if nulls is None:
        return None
    return small.num_rows, days[0].isoformat(), arrow_merge.file_stats(small, extra_nulls={"record": nulls})


def _null_count(meta, column: str) -> int | None:
    i = meta.schema.names.index(column)
    stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
    if any(st is None or not st.has_null_count for st in stats):
        return None
    return sum(st.null_count for st in stats)


def commit(entry: dict, table, props, staged: list[str]) -> bool:
    """Commits the staged files ``staged`` (paths) into bronze's table as written (creating it when
    ``table`` is None); False, with nothing committed, where that does not apply."""
    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    root = _local(entry["table"]) if table is None else arrow_merge.local_root(table)
    if root is None or (table is not None and not _fits(table)):
        return False
    shapes = [_shape(p, entry["run_id"]) for p in staged]
    if any(s is None for s in shapes):
        return False
    adds = []
    now = int(time.time() * 1000)
    for path, (_, day, stats) in zip(staged, shapes):
        rel = f"{INGEST_DATE}={day}/part-{uuid.uuid4()}-c000.zstd.parquet"
        dst = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(path, dst)
        except OSError:  # another filesystem, or links not supported
            shutil.copyfile(path, dst)
        adds.append(AddAction(rel, os.path.getsize(dst), {INGEST_DATE: day}, now, True, stats))
    if table is None:
        # The columns in the order of a table delta-rs creates from the rows commit.py adds them to.
        schema = Schema.from_arrow(
            pa.schema([*list(SCHEMA)[:3], pa.field(INGEST_DATE, pa.date32()), SCHEMA.field("run_id")])
        )
        create_table_with_add_actions(root, schema, adds, mode="append", partition_by=[INGEST_DATE],
                                      commit_properties=props)  # fmt: skip
    else:
        table.create_write_transaction(adds, "append", table.schema(), partition_by=[INGEST_DATE],
                                       commit_properties=props)  # fmt: skip
    return True
