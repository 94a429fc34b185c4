"""The silver table through Apache Iceberg (pyiceberg) and Delta Lake (deltalake), one interface.

``IcebergLake`` and ``DeltaLakeTable`` offer the same operations (write, merge, append, compact,
delete a subject's rows, expire snapshots, remove orphan files, schema evolution, reads) so
``benchmarks.table_formats`` runs the same work on both. What a library lacks is written here:
Iceberg compaction (``compact_iceberg``) and orphan-file removal (``remove_orphan_files``); Delta's
missing column rename and type widening are done by rewriting the table. Delta's writes, merge
and predicate literals are the lakehouse's own (``beam_pipelines.lakehouse.tables``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from beam_pipelines.lakehouse import tables
from beam_pipelines.lakehouse.tables import sql_string

KEY = "event_id"  # the events contract's record key (the pipeline deduplicates on it)
SUBJECT = "user_id"
DAY = "dt"  # the event day (UTC) of ts: Delta partitions by this column, Iceberg by day(ts)
TARGET_FILE_BYTES = 128 * 2**20
S3_KEY, S3_SECRET, S3_REGION = "testing", "testing", "us-east-1"


@dataclass
class Store:
    """A warehouse location: the URI the libraries take, and a pyarrow filesystem to list it."""

    uri: str
    fs: pafs.FileSystem
    root: str  # the location as a path of ``fs``
    options: dict  # Delta's storage options
    iceberg: dict  # pyiceberg's FileIO properties

    def listing(self) -> dict[str, int]:
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        return {f.path: f.size for f in self.fs.get_file_info(selector) if f.type == pafs.FileType.File}


def local_store(path: Path) -> Store:
    path.mkdir(parents=True, exist_ok=True)
    return Store(path.resolve().as_uri(), pafs.LocalFileSystem(), str(path.resolve()), {}, {})


def s3_store(endpoint: str, bucket: str, prefix: str) -> Store:
    """A warehouse in an S3-compatible server (the bucket is created when missing)."""
    scheme, host = endpoint.split("://", 1)
    fs = pafs.S3FileSystem(access_key=S3_KEY, secret_key=S3_SECRET, region=S3_REGION, endpoint_override=host,
                           scheme=scheme, allow_bucket_creation=True)  # fmt: skip
    fs.create_dir(bucket)
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "AWS_REGION": S3_REGION, "AWS_ALLOW_HTTP": "true"}  # fmt: skip
    iceberg = {"s3.endpoint": endpoint, "s3.access-key-id": S3_KEY, "s3.secret-access-key": S3_SECRET,
               "s3.region": S3_REGION}  # fmt: skip
    return Store(f"s3://{bucket}/{prefix}", fs, f"{bucket}/{prefix}", options, iceberg)


# --- Iceberg ---------------------------------------------------------------------------------


class IcebergLake:
    """The table through pyiceberg, its catalog in SQLite (or any SQLAlchemy URL)."""

    fmt = "iceberg"

    def __init__(self, store: Store, catalog_url: str, target_file_bytes: int = TARGET_FILE_BYTES):
        from pyiceberg.catalog.sql import SqlCatalog

        self.store = store
        self.target = target_file_bytes
        self.catalog = SqlCatalog("lake", uri=catalog_url, warehouse=store.uri, **store.iceberg)
        self.table = None

    def write(self, data: pa.Table) -> None:
        from pyiceberg.transforms import DayTransform

        self.catalog.create_namespace_if_not_exists("silver")
        properties = {
            "write.target-file-size-bytes": str(self.target),
            "write.parquet.compression-codec": "zstd",
            # Old metadata JSON files go as new ones are committed (the library does this itself).
            "write.metadata.delete-after-commit.enabled": "true",
            "write.metadata.previous-versions-max": "10",
        }
        self.table = self.catalog.create_table("silver.events", schema=data.schema, properties=properties)
        with self.table.update_spec() as spec:
            spec.add_field("ts", DayTransform(), "ts_day")
        self.table.append(data)

    def merge(self, batch: pa.Table) -> dict:
        result = self.table.upsert(batch, join_cols=[KEY])
        return {"updated": result.rows_updated, "inserted": result.rows_inserted}

    def append(self, batch: pa.Table) -> None:
        self.table.append(batch)

    def compact(self) -> dict:
        return compact_iceberg(self.table)

    def delete_subject(self, value: str) -> None:
        from pyiceberg.expressions import EqualTo

        self.table.delete(EqualTo(SUBJECT, value))

    def expire(self) -> dict:
        before = len(self.table.metadata.snapshots)
        self.table.maintenance.expire_snapshots().older_than(datetime.now(timezone.utc)).commit()
        return {"snapshots_expired": before - len(self.table.metadata.snapshots)}

    def remove_orphans(self) -> dict:
        removed = remove_orphan_files(self.table, self.store, older_than=datetime.now(timezone.utc))
        return {"orphans_removed": len(removed)}

    def add_column(self, name: str) -> None:
        from pyiceberg.types import StringType

        with self.table.update_schema() as update:
            update.add_column(name, StringType())

    def widen(self, name: str) -> None:
        from pyiceberg.types import LongType

        with self.table.update_schema() as update:
            update.update_column(name, LongType())

    def rename(self, old: str, new: str) -> None:
        with self.table.update_schema() as update:
            update.rename_column(old, new)

    def count(self) -> int:
        return self.table.scan().count()

    def live_files(self) -> list[str]:
        return [task.file.file_path for task in self.table.scan().plan_files()]

    def files_per_partition(self) -> dict:
        counts: dict = defaultdict(int)
        for task in self.table.scan().plan_files():
            counts[str(task.file.partition)] += 1
        return dict(counts)

    def read_arrow(self) -> pa.Table:
        return self.table.scan().to_arrow()

    def parquet_files(self) -> list[str]:
        """The current snapshot's data files as local paths, for an engine reading parquet. pyiceberg
        writes no delete files (its deletes are copy-on-write), so these files are the table."""
        tasks = list(self.table.scan().plan_files())
        if any(task.delete_files for task in tasks):
            raise RuntimeError("the table has delete files: reading its parquet files alone would be wrong")
        return [task.file.file_path.removeprefix("file://") for task in tasks]

    def polars(self):
        import polars as pl

        return pl.scan_iceberg(self.table)


def compact_iceberg(table, min_files: int = 2) -> dict:
    """Rewrites the data files of each partition of ``table`` holding ``min_files`` or more into
    files of the table's ``write.target-file-size-bytes``, as one snapshot (pyiceberg has no
    compaction). The commit asserts the snapshot the files were read from, so a writer that
    committed meanwhile makes it fail instead of losing rows.

    One snapshot swapping files directly: pyiceberg's overwrite-by-filter would commit two
    snapshots per partition and copy the whole table metadata on each step of the transaction
    (14 s instead of 2 s for 500 files in 8 partitions). The files are written by pyiceberg's own
    writer (``_dataframe_to_data_files``, what its ``delete`` uses), so names, field ids,
    partitions and metrics are the library's.
    """
    import itertools

    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    by_partition: dict = defaultdict(list)
    for task in table.scan().plan_files():
        if task.delete_files:
            raise ValueError("compact_iceberg rewrites tables without delete files only")
        by_partition[task.file.partition].append(task)
    chosen = [tasks for tasks in by_partition.values() if len(tasks) >= min_files]
    if not chosen:
        return {"partitions": 0, "files_replaced": 0}
    with table.transaction() as tx:
        metadata = tx.table_metadata
        with tx.update_snapshot().overwrite() as rewrite:
            counter = itertools.count(0)
            for tasks in chosen:
                rows = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue()).to_table(tasks)
                for data_file in _dataframe_to_data_files(metadata, rows, table.io, rewrite.commit_uuid, counter):
                    rewrite.append_data_file(data_file)
                for task in tasks:
                    rewrite.delete_data_file(task.file)
    return {"partitions": len(chosen), "files_replaced": sum(len(t) for t in chosen)}


def remove_orphan_files(table, store: Store, older_than: datetime) -> list[str]:
    """Deletes the files under the table's location that no snapshot or metadata file of ``table``
    references and that were last modified before ``older_than`` (so files a writer is still
    committing are left alone); returns their paths. pyiceberg's snapshot expiry only edits the
    metadata: the data files, manifests and manifest lists of the expired snapshots stay on disk.
    """
    io = table.io
    meta = table.metadata
    keep = {table.metadata_location}
    keep.update(entry.metadata_file for entry in meta.metadata_log)
    keep.update(s.statistics_path for s in meta.statistics)
    keep.update(s.statistics_path for s in meta.partition_statistics)
    for snapshot in meta.snapshots:
        keep.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            keep.add(manifest.manifest_path)
            keep.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(io, discard_deleted=True))
    keep = {_fs_path(p) for p in keep}
    location = _fs_path(meta.location)
    selector = pafs.FileSelector(location, recursive=True, allow_not_found=True)
    cutoff = older_than.timestamp()
    orphans = [
        f.path
        for f in store.fs.get_file_info(selector)
        if f.type == pafs.FileType.File and f.path not in keep and f.mtime is not None and f.mtime.timestamp() < cutoff
    ]
    for path in orphans:
        store.fs.delete_file(path)
    return orphans


def _fs_path(uri: str) -> str:
    """A table URI as a path of a pyarrow filesystem (``s3://b/k`` -> ``b/k``, ``file:///p`` -> ``/p``)."""
    for scheme in ("file://", "s3://", "s3a://"):
        if uri.startswith(scheme):
            return uri[len(scheme) :]
    return uri


# --- Delta Lake ------------------------------------------------------------------------------


class DeltaLakeTable:
    """The table through deltalake (delta-rs): its log lives in the table's directory, no catalog."""

    fmt = "delta"

    def __init__(self, store: Store, target_file_bytes: int = TARGET_FILE_BYTES):
        self.store = store
        self.uri = store.uri.rstrip("/") + "/events"
        self.target = target_file_bytes
        self.writer = tables.writer_properties()
        self.dt = None

    def write(self, data: pa.Table) -> None:
        tables.append(self.uri, data, [DAY], storage_options=self.store.options)
        self.dt = tables.open_table(self.uri, self.store.options)

    def merge(self, batch: pa.Table) -> dict:
        metrics = tables.merge(self.dt, batch, KEY)
        return {"updated": metrics["num_target_rows_updated"], "inserted": metrics["num_target_rows_inserted"]}

    def append(self, batch: pa.Table) -> None:
        tables.append(self.dt, batch, [DAY])
        self.dt.update_incremental()

    def compact(self) -> dict:
        metrics = self.dt.optimize.compact(target_size=self.target, writer_properties=self.writer)
        return {"partitions": metrics["partitionsOptimized"], "files_replaced": metrics["numFilesRemoved"]}

    def delete_subject(self, value: str) -> None:
        # deltalake takes predicates as SQL text only: the value goes in as a quoted literal.
        self.dt.delete(f"{SUBJECT} = {sql_string(value)}", writer_properties=self.writer)

    def expire(self) -> dict:
        """Old versions go: vacuum deletes the files they alone reference, then a checkpoint and the
        log cleanup (with the log retention cut to zero) drop their log entries."""
        removed = self.dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        self.dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
        self.dt.create_checkpoint()
        self.dt.cleanup_metadata()
        return {"files_vacuumed": len(removed)}

    def remove_orphans(self) -> None:
        """Files the log never mentioned (a failed writer's) go with a full vacuum."""
        self.dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)

    def add_column(self, name: str) -> None:
        from deltalake.schema import Field, PrimitiveType

        self.dt.alter.add_columns([Field(name, PrimitiveType("string"), nullable=True)])

    def widen(self, name: str) -> None:
        """No type widening in deltalake: the table is rewritten with the wider type."""
        data = self.dt.to_pyarrow_table()
        i = data.schema.get_field_index(name)
        self._rewrite(data.set_column(i, name, data[name].cast(pa.int64())))

    def rename(self, old: str, new: str) -> None:
        """No column rename in deltalake (column mapping is not written): the table is rewritten."""
        data = self.dt.to_pyarrow_table()
        self._rewrite(data.rename_columns([new if c == old else c for c in data.column_names]))

    def _rewrite(self, data: pa.Table) -> None:
        from deltalake import write_deltalake

        write_deltalake(self.dt, data, mode="overwrite", schema_mode="overwrite", partition_by=[DAY],
                        writer_properties=self.writer)  # fmt: skip
        self.dt.update_incremental()

    def count(self) -> int:
        return self.dt.count()

    def live_files(self) -> list[str]:
        return self.dt.file_uris()

    def files_per_partition(self) -> dict:
        counts: dict = defaultdict(int)
        for uri in self.dt.file_uris():
            counts[uri.rsplit("/", 2)[-2]] += 1
        return dict(counts)

    def read_arrow(self) -> pa.Table:
        return self.dt.to_pyarrow_table()

    def parquet_files(self) -> list[str]:
        """The current version's data files (deltalake writes no deletion vectors)."""
        return self.dt.file_uris()

    def polars(self):
        import polars as pl

        return pl.scan_delta(self.uri, storage_options=self.store.options or None)
