"""Spec step type WriteLakehouse: a medallion layer as a Delta Lake table under --output.

The pipeline only stages the layer's rows (parquet under ``<staging>/_lakehouse/<step>/``); the
launcher commits them into the table when the run publishes, after its audit, so a failed or
killed run leaves every table as it was (see ``beam_pipelines/lakehouse/commit.py``).
"""

from __future__ import annotations

from beam_pipelines.lakehouse.tiers import COLD_LEVEL
from beam_pipelines.publish import OUTPUTS, is_local
from beam_pipelines.spec.shape import duration, duration_seconds
from beam_pipelines.spec.steps.base import register
from beam_pipelines.spec.steps.io import _RELATIVE, SCRATCH, Sink
from transforms.sinks.files import join_path

__all__ = ["STAGED"]

STAGED = "_lakehouse"  # under the run's staging directory: each table's rows, by step name
_TAKES = {"bronze": "received", "silver": "curated", "gold": "aggregates"}
_WHAT = {
    "received": "the records as received: give the source step as its input",
    "curated": "the curated records: give the last records step as its input",
    "aggregates": "an aggregate: give a WindowedAggregate step as its input",
}
_SILVER_ONLY = ("key", "order_by", "keep")
_ORDERED = ("timestamp", "integer", "double", "decimal")
_DAY = "dt"
_WINDOW = "window_start"


def _nested(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


@register
class WriteLakehouse(Sink):
    type = "WriteLakehouse"
    modes = ("batch", "streaming")
    doc = (
        "A medallion layer as a Delta Lake table under --output, committed when the run publishes (after its "
        "audit): bronze appends the records as received (by ingest date), silver MERGEs the curated records on "
        "their key (by event day), gold replaces the windows the run computed (by window day)."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "layer": {
                "enum": list(_TAKES),
                "description": "bronze takes the source's records as received; silver the curated records; gold "
                "an aggregate.",
            },
            "path": {
                **_RELATIVE,
                "description": "The table's directory under --output (relative, no '..' or '.' parts, not "
                "starting with '_'; not curated, aggregates or dlq, which are replaced whole).",
            },  # fmt: skip
            "partition_by": {
                "type": "string",
                "description": "silver: the timestamp column whose UTC day (dt) partitions the table (default: the "
                "first WindowedAggregate's time); gold: default window_start. bronze is by ingest_date.",
            },
            "key": {
                "type": "string",
                "description": "silver: the column MERGE matches on. Default: the Deduplicate step's key, the one "
                "column unique in the curated records.",
            },
            "order_by": {
                "type": "string",
                "description": "silver: a stored row is replaced only by a record not older by this column "
                "(see keep). Default: the Deduplicate step's first order_by column.",
            },
            "keep": {
                "enum": ["first", "last"],
                "description": "silver, with order_by: last replaces a row by a record whose order_by is at least "
                "the stored one's (the latest version wins); first by one at most. Default: the Deduplicate step's.",
            },
            "retention": duration(
                "How long partitions are kept (by ingest_date for bronze, dt for silver and gold; whole days): "
                "`python -m beam_pipelines.lakehouse maintain` deletes older ones. Default: kept for ever."
            ),
            "keep_versions": duration(
                "Maintenance: how long replaced and deleted files stay for time travel and readers still on an "
                "older version, before vacuum removes them (orphans too). Default: 7d.",
                minimum=0,
            ),
            "cold": {
                "type": "object",
                "description": "Hot and cold tiers: `python -m beam_pipelines.lakehouse maintain` moves partitions "
                "older than after_days to a Delta table at location, written at a higher zstd level; the table is "
                "the union of both tiers.",
                "properties": {
                    "after_days": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Partitions before this many whole days ago (UTC) move.",
                    },
                    "location": {
                        "type": "string",
                        "pattern": r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?!.*/\.{1,2}(/|$))(/[A-Za-z0-9_.=/-]*)?|(?!/)"
                        r"(?!.*(^|/)\.{1,2}(/|$))(?!.*//)(?!_)[A-Za-z0-9_.=/-]+)$",
                        "description": "The cold table: an s3:// URI (another bucket or prefix; the endpoint and "
                        "credentials from the AWS_* environment) or a directory under --output.",
                    },
                    "compression_level": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 22,
                        "description": "zstd level of the cold tier's files. Default: 19.",
                    },
                },
                "required": ["after_days", "location"],
                "additionalProperties": False,
            },  # fmt: skip
            "target_file_mb": {
                "type": "integer",
                "minimum": 1,
                "description": "Maintenance: compaction joins a partition's small files into files of about "
                "this size. Default: 128.",
            },
        },
        "required": ["layer", "path"],
    }

    def columns(self, inputs):
        c, layer = self.config, self.config["layer"]
        if self.role != _TAKES[layer]:
            raise self.error(None, f"layer {layer} takes {_WHAT[_TAKES[layer]]}")
        for k in _SILVER_ONLY:
            if k in c and layer != "silver":
                raise self.error(k, f"{k} applies to layer silver only")
        if self.ctx.mode == "streaming":
            if layer != "silver":
                raise self.error("layer", f"a stream writes layer silver only (a MERGE per batch); {layer} is "
                                          "written by batch runs")  # fmt: skip
            if "cold" in c:
                raise self.error("cold", "cold tiers are kept by batch runs: give a stream's silver no cold tier")
        if layer == "bronze" and "partition_by" in c:
            raise self.error("partition_by", "bronze is partitioned by the day the records were received "
                                             "(ingest_date): partition_by does not apply")  # fmt: skip
        self._check_path()
        self._check_cold()
        cols = inputs[0]
        if layer == "silver":
            self._silver(cols)
        elif layer == "gold":
            self._partition = c.get("partition_by", _WINDOW)
            self.need(cols, _WINDOW, "partition_by", ("timestamp",), what="the window column")
            self.need(cols, self._partition, "partition_by", ("timestamp",))
            if _DAY in cols:
                raise self.error(None, f"the aggregate has a column {_DAY!r}: the table adds it (the window's day)")
        return None

    def _check_path(self) -> None:
        path = self.config["path"].rstrip("/")
        if path.split("/", 1)[0] in OUTPUTS:
            raise self.error("path", f"{path!r} is under the published output {path.split('/', 1)[0]!r}, which "
                                     "each run replaces whole: give the table a path of its own (e.g. lakehouse/silver)")  # fmt: skip
        for other, step in self.ctx.tables.items():
            if _nested(path, other):
                raise self.error("path", f"{path!r} overlaps table {other!r} of step {step}: each table needs its own "
                                         "directory")  # fmt: skip
        self.ctx.tables[path] = self.name
        output = getattr(self.ctx.cfg, "output", None)
        if output and not is_local(output):
            raise self.error(None, f"Delta tables are written on local disks only for now; --output is {output}")

    def _check_cold(self) -> None:
        cold = self.config.get("cold")
        if cold is None:
            return
        retention = self.config.get("retention")
        if retention is not None and cold["after_days"] * 86_400 >= duration_seconds(retention):
            raise self.error("cold.after_days", f"partitions are deleted after {retention} (retention): moving them "
                                                f"after {cold['after_days']} days would never happen")  # fmt: skip
        location = cold["location"].rstrip("/")
        if not location.startswith("s3://"):
            for other, step in self.ctx.tables.items():
                if _nested(location, other):
                    raise self.error("cold.location", f"{location!r} overlaps table {other!r} of step {step}: the cold "
                                                      "tier needs its own directory")  # fmt: skip
            self.ctx.tables[location] = self.name

    def _cold(self, output: str) -> dict | None:
        cold = self.config.get("cold")
        if cold is None:
            return None
        location = cold["location"].rstrip("/")
        table = location if location.startswith("s3://") else join_path(output, location)
        return {"table": table, "after_days": cold["after_days"], "level": cold.get("compression_level", COLD_LEVEL)}

    def _silver(self, cols) -> None:
        c, ctx = self.config, self.ctx
        if ctx.record_key is None:
            raise self.error(None, "silver is merged on a key unique in the curated records: add a Deduplicate step "
                                   "before it (its key is the table's)")  # fmt: skip
        key = c.get("key", ctx.record_key)
        self.need(cols, key, "key")
        if key != ctx.record_key:
            raise self.error("key", f"silver merges on the Deduplicate step's key {ctx.record_key!r}, the one column "
                                    f"unique in the curated records; got {key!r}")  # fmt: skip
        self._key = key
        time = c.get("partition_by") or (ctx.event_time[0] if ctx.event_time else None)
        if time is None:
            raise self.error(None, "give partition_by: the timestamp column whose UTC day partitions the table")
        self.need(cols, time, "partition_by", ("timestamp",))
        self._partition = time
        order_by, keep = ctx.record_order or ((), "first")
        if "order_by" in c:
            self.need(cols, c["order_by"], "order_by", _ORDERED)
            self._newer = (c["order_by"], c.get("keep", keep))
        else:
            if "keep" in c:
                raise self.error("keep", "keep applies with order_by")
            usable = [o for o in order_by if not o.startswith("_") and o in cols]
            self._newer = (usable[0], keep) if usable else None
        if _DAY in cols:
            raise self.error(None, f"the records have a column {_DAY!r}: the table adds it (the event day)")
        self._columns = self.written(cols)

    def describe(self) -> str:
        return f"{self.role} -> {self.config['layer']} Delta table {self.config['path']}"

    def reads(self):
        if self.config["layer"] != "silver":
            return set()
        return set(self._columns)

    def make(self, root: str):
        from transforms.sinks.bronze import WriteReceived
        from transforms.sinks.files import WriteBundles
        from transforms.sinks.lake import WriteLake

        cfg, layer = self.ctx.cfg, self.config["layer"]
        if self.ctx.mode == "streaming":  # silver: a MERGE per batch, straight into the table
            from beam_pipelines.lakehouse.stream_merge import MergeSilver

            uri = join_path(cfg.output, self.config["path"].rstrip("/"))
            return MergeSilver(uri, self._key, self._newer, self._partition, tuple(self._columns))
        staged = join_path(root, STAGED, self.name)
        spill = join_path(root, SCRATCH, "lakehouse", self.name)
        if layer == "bronze":
            return WriteReceived(staged, cfg.run_time, scratch_dir=spill, run_id=cfg.run_id)
        if layer == "silver":
            # No sort and no shuffle: the publish merges these rows into the table, which sets its own layout.
            return WriteBundles(staged, scratch_dir=spill, columns=tuple(self._columns))
        return WriteLake(staged, sort_by=(_WINDOW,))

    def table_entry(self, output: str, staging: str) -> dict:
        """What the publish commits for this step (see ``lakehouse.commit``)."""
        layer = self.config["layer"]
        entry = {
            "step": self.name,
            "layer": layer,
            "table": join_path(output, self.config["path"].rstrip("/")),
            "staged": join_path(staging, STAGED, self.name),
            "partition_by": None if layer == "bronze" else self._partition,
        }
        cold = self._cold(output)
        if cold is not None:
            entry.update(cold=cold["table"], cold_level=cold["level"])
        if layer == "silver":
            entry.update(key=self._key, newer=list(self._newer) if self._newer else None)
        return entry

    def maintenance(self, output: str) -> dict:
        """What ``lakehouse maintain`` does to this step's table (see ``lakehouse.maintain``)."""
        c = self.config
        retention = c.get("retention")
        entry = {
            "step": self.name,
            "layer": c["layer"],
            "table": join_path(output, c["path"].rstrip("/")),
            "retention_days": None if retention is None else max(1, -(-duration_seconds(retention) // 86_400)),
            "keep_versions_hours": -(-duration_seconds(c.get("keep_versions", "7d")) // 3_600),
            "target_bytes": c.get("target_file_mb", 128) * 1024 * 1024,
        }
        cold = self._cold(output)
        return {**entry, "cold": cold} if cold is not None else entry
