"""Lakehouse maintenance: retention, compaction, snapshot expiry and orphan files, per table.

    python -m beam_pipelines.lakehouse maintain --pipeline=SPEC --output=OUT [--dry_run]

For each ``WriteLakehouse`` table of the spec, in this order:

1. **Retention**: partitions older than the step's ``retention`` (whole days before today, UTC;
   bronze by ``ingest_date``, silver and gold by ``dt``) are deleted in one commit. Without
   ``retention`` a layer is kept (gold, typically).
2. **Tiering** (a step with ``cold``): partitions older than ``cold.after_days`` move to the
   cold tier, a Delta table at ``cold.location`` written at zstd ``cold.compression_level``
   (``tiers.py``: two commits, safe to repeat when cut off between them).
3. **Compaction**: each partition's small files are joined into files of about
   ``target_file_mb`` (delta-rs ``optimize.compact``; one commit, the rows unchanged).
4. **Vacuum**: files no version younger than ``keep_versions`` refers to are removed: those
   replaced by merges, compaction and retention, and orphans (files in the table's directory that
   no commit names, left by a write that died). Old log entries go the same way.

The cold tier is then maintained the same way (retention, compaction at its level, vacuum).
It takes the output's lease, as a run does, so it never runs beside a run publishing into the
same tables, and appends what it did per table to the output's audit log (``audit_log.py``).
``--dry_run`` lists what each step would do and changes nothing (no lease taken, nothing logged).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa

from beam_pipelines import audit_log, lease, publish
from beam_pipelines.errors import RunError, UsageError, parse_flags
from beam_pipelines.lakehouse import tables, tiers
from beam_pipelines.lakehouse.commit import DAY, INGEST_DATE

__all__ = ["maintain_table", "run"]

USAGE = """usage: python -m beam_pipelines.lakehouse maintain --pipeline=SPEC --output=OUT [--dry_run] [--as_of=YYYY-MM-DD]
       [--wait_for_lock[=S]] [--audit_log=PATH] [--audit_user=NAME]

Maintains the Delta tables a spec's WriteLakehouse steps write under OUT: deletes partitions older than each
step's retention, compacts small files into files of target_file_mb, and vacuums files no version younger than
keep_versions refers to (orphans too). --dry_run lists what would be done and changes nothing. Retention counts
back from --as_of (default: today, UTC). What was done is appended to the audit log (OUT/_audit/log.jsonl unless
--audit_log says otherwise).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.lakehouse maintain", add_help=False,
                                     exit_on_error=False)  # fmt: skip
    parser.add_argument("--pipeline")
    parser.add_argument("--output")
    parser.add_argument("--dry_run", nargs="?", const=True, default=False)
    parser.add_argument("--as_of", type=date.fromisoformat)
    parser.add_argument("--wait_for_lock", nargs="?", const=float("inf"), default=None, type=float)
    parser.add_argument("--audit_log")
    parser.add_argument("--audit_user")
    return parser


def _partition_column(layer: str) -> str:
    return INGEST_DATE if layer == "bronze" else DAY


def _files(table) -> list[dict]:
    """The table's live files: path, bytes and partition value (``YYYY-MM-DD``)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    column = next((k for k in actions.column_names if k.startswith("partition.")), None)
    values = actions.column(column).to_pylist() if column else [None] * actions.num_rows
    return [
        {"path": p, "bytes": b, "partition": None if v is None else str(v)}
        for p, b, v in zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), values)
    ]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


def maintain_table(entry: dict, today: date, dry_run: bool, run_id: str) -> dict:
    """Maintains one table (see the module docstring); returns what was (or would be) done."""
    table = tables.open_table(entry["table"], entry.get("storage_options"))
    if table is None:
        return {"table": entry["table"], "missing": True, "tier": entry.get("tier")}
    column = _partition_column(entry["layer"])
    files = _files(table)
    result = {"table": entry["table"], "layer": entry["layer"], "version": table.version(), "files": len(files),
              "bytes": sum(f["bytes"] for f in files), "tier": entry.get("tier", "hot" if entry.get("cold") else None)}  # fmt: skip

    # 1. Retention.
    expired: dict[str, list[dict]] = {}
    if entry["retention_days"] is not None:
        cutoff = today - timedelta(days=entry["retention_days"])
        for f in files:
            if f["partition"] is not None and f["partition"] < cutoff.isoformat():
                expired.setdefault(f["partition"], []).append(f)
        result["cutoff"] = cutoff.isoformat()
    result["expired"] = {p: sum(f["bytes"] for f in fs) for p, fs in sorted(expired.items())}
    if expired and not dry_run:
        predicate = f"{tables.quote(column)} < {tables.sql_string(result['cutoff'])}"
        metrics = table.delete(predicate, commit_properties=tables.commit_properties(run_id, maintenance="retention"))
        result["rows_deleted"] = metrics.get("num_deleted_rows")

    # 2. Tiering: the partitions before the cold cut-off (and not expired) move to the cold tier.
    moving: list[str] = []
    if entry.get("cold"):
        kept = [f for f in files if f["partition"] not in expired]
        result["tier_cutoff"], moving = tiers.cutoff_days(kept, entry["cold"]["after_days"], today)
        result["cold_table"] = entry["cold"]["table"]
        result["to_move"] = {p: sum(f["bytes"] for f in kept if f["partition"] == p) for p in moving}
        if moving and not dry_run:
            result["moved"] = tiers.move_partitions(table, entry["cold"]["table"], column, moving,
                                                    entry["cold"]["level"], run_id)  # fmt: skip

    # 3. Compaction: partitions with more than one file smaller than the target.
    small: dict[str | None, int] = {}
    gone = set(expired) | set(moving)
    for f in _files(table) if not dry_run else [f for f in files if f["partition"] not in gone]:
        if f["bytes"] < entry["target_bytes"]:
            small[f["partition"]] = small.get(f["partition"], 0) + 1
    result["compactable"] = {p: n for p, n in small.items() if n > 1}
    if result["compactable"] and not dry_run:
        metrics = table.optimize.compact(
            target_size=entry["target_bytes"],
            writer_properties=tables.writer_properties(entry.get("level")),
            commit_properties=tables.commit_properties(run_id, maintenance="compaction"),
        )
        result["compacted"] = (metrics.get("numFilesRemoved", 0), metrics.get("numFilesAdded", 0))

    # 4. Vacuum: replaced, deleted and orphan files older than keep_versions. Full: the directory
    # is listed, so files no commit names (a dead writer's) go too, not only those the log removed.
    def vacuum(dry: bool) -> list[str]:
        return table.vacuum(
            retention_hours=entry["keep_versions_hours"],
            dry_run=dry,
            enforce_retention_duration=False,
            full=True,
            commit_properties=None if dry else tables.commit_properties(run_id, maintenance="vacuum"),
        )

    root = entry["table"].rstrip("/")
    # Sizes are read before the files go. A remove action's file vacuumed earlier is listed again
    # by delta-rs' dry run: only files still there count (on a local disk; an object store's
    # listing is taken as it is, sizes unknown).
    if tiers.is_remote(root):
        found, result["vacuumed"] = vacuum(True), None
    else:
        found = [g for g in vacuum(True) if os.path.exists(os.path.join(root, g))]
        result["vacuumed"] = sum(_size(os.path.join(root, g)) for g in found)
    result["vacuumed_files"] = len(found if dry_run or not found else vacuum(False))
    if not dry_run:
        table.cleanup_metadata()
        table.update_incremental()
        result["version_after"] = table.version()
        result["files_after"] = len(_files(table))
    return result


def _audited(r: dict) -> dict:
    """What the audit log keeps of one table's maintenance."""
    if r.get("missing"):
        return {"table": r["table"], "missing": True}
    keys = ("table", "layer", "tier", "version", "cutoff", "expired", "rows_deleted", "tier_cutoff", "moved",
            "compacted", "vacuumed_files", "vacuumed", "version_after", "files_after")  # fmt: skip
    return {k: r[k] for k in keys if r.get(k) is not None}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _describe(r: dict, dry_run: bool) -> list[str]:
    if r.get("missing"):
        if r.get("tier") == "cold":
            return [f"  {r['table']}: no cold tier yet (no partition has moved there)"]
        return [f"  {r['table']}: no table yet (no run has published into it)"]
    would = "would " if dry_run else ""
    tier = f" ({r['tier']})" if r.get("tier") else ""
    head = f"  {r['table']}  {r['layer']}{tier}  v{r['version']}  {r['files']} files, {_mb(r['bytes'])}"
    lines = [head]
    if "cutoff" not in r:
        lines.append("    retention: kept (no retention)")
    elif r["expired"]:
        parts = ", ".join(f"{p} ({_mb(b)})" for p, b in r["expired"].items())
        deleted = f"; {r['rows_deleted']:,} rows deleted" if r.get("rows_deleted") is not None else ""
        lines.append(f"    retention: {would}delete {len(r['expired'])} partition(s) before {r['cutoff']}: {parts}"
                     f"{deleted}")  # fmt: skip
    else:
        lines.append(f"    retention: nothing before {r['cutoff']}")
    if "tier_cutoff" in r:
        if r["to_move"]:
            parts = ", ".join(f"{p} ({_mb(b)})" for p, b in r["to_move"].items())
            moved = r.get("moved")
            done = f"; {moved['appended']:,} rows appended there, {moved['deleted']:,} deleted here" if moved else ""
            lines.append(f"    tiering: {would}move {len(r['to_move'])} partition(s) before {r['tier_cutoff']} to "
                         f"{r['cold_table']}: {parts}{done}")  # fmt: skip
        else:
            lines.append(f"    tiering: nothing before {r['tier_cutoff']}")
    if r["compactable"]:
        n = sum(r["compactable"].values())
        done = f": {r['compacted'][0]} files -> {r['compacted'][1]}" if r.get("compacted") else ""
        lines.append(f"    compaction: {would}join {n} small files in {len(r['compactable'])} partition(s){done}")
    else:
        lines.append("    compaction: nothing to join")
    size = "" if r["vacuumed"] is None else f" ({_mb(r['vacuumed'])})"
    lines.append(f"    vacuum: {would}remove {r['vacuumed_files']} unreferenced file(s){size}")
    if not dry_run:
        lines.append(f"    now v{r['version_after']}, {r['files_after']} files")
    return lines


def _tables_of(pipeline: str, output: str, plan_for, config) -> list:
    """The spec's sink steps that keep Delta tables: WriteLakehouse in batch, MirrorDelta in
    streaming (a spec without a mode's source has none of its steps)."""
    from beam_pipelines.spec.yamlsrc import SpecError

    found, names = [], set()
    for streaming in (False, True):
        try:
            # Planning only: no source is read and no database reached (a streaming plan wants a DSN).
            flags = {"streaming": True, "pg_dsn": "postgresql://planning-only"} if streaming else {}
            plan = plan_for(config(pipeline=pipeline, output=output, input="-", input_format="jsonl", **flags))
            publish.check_output_paths(output, plan)  # no table reached through a symbolic link
        except SpecError:
            if streaming and not found:
                raise
            continue
        for n in plan.sinks:
            if n.step.type in ("WriteLakehouse", "MirrorDelta") and (n.step.type, n.step.name) not in names:
                names.add((n.step.type, n.step.name))
                found.append(n)
    return found


def run(argv: list[str], clock=lambda: datetime.now(timezone.utc), out=sys.stdout) -> list[dict]:
    """Maintains the tables of one output from CLI flags; returns each table's result."""
    ns = parse_flags(_parser(), argv)
    if not ns.pipeline or not ns.output:
        raise UsageError("--pipeline and --output are required (the spec whose tables, and the output they are under)")
    if not publish.is_local(ns.output):
        raise UsageError(f"Delta tables are kept on local disks only for now; --output is {ns.output}")
    from beam_pipelines.spec import EventsConfig
    from beam_pipelines.spec.build import plan_for

    entries = []
    for n in _tables_of(ns.pipeline, ns.output, plan_for, EventsConfig):
        entry = n.step.maintenance(ns.output)
        entries += [entry] + ([tiers.cold_entry(entry)] if entry.get("cold") else [])
    if not entries:
        raise UsageError(f"{ns.pipeline} has no WriteLakehouse or MirrorDelta step: there is no table to maintain")
    now = clock()
    today = ns.as_of or now.date()
    run_id = "maintain-" + publish.new_run_id(clock)
    out.write(f"lakehouse maintenance of {ns.output} as of {today.isoformat()}{' (dry run)' if ns.dry_run else ''}\n")
    try:
        if ns.dry_run:
            results = [maintain_table(e, today, True, run_id) for e in entries]
        else:
            rec = audit_log.recorder("maintain", ns.output, log_path=ns.audit_log, audit_user=ns.audit_user,
                                     clock=clock, argv=argv)  # fmt: skip
            rec.note(run_id=run_id, output=ns.output, as_of=today.isoformat())
            with rec.recording():
                try:
                    held = lease.acquire(ns.output, run_id, wait_s=ns.wait_for_lock, clock=clock)
                except lease.LeaseError:
                    rec.outcome = "refused"
                    raise
                with held:
                    results = [maintain_table(e, today, False, run_id) for e in entries]
                    rec.end("done", tables=[_audited(r) for r in results])
    except OSError as e:
        raise RunError(f"maintenance of {ns.output} failed: {e}") from e
    for r in results:
        out.write("\n".join(_describe(r, ns.dry_run)) + "\n")
    if ns.dry_run:
        out.write("dry run: nothing was changed\n")
    return results
