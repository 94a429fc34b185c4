"""``python -m beam_pipelines.erase``: a data subject's records out of every layer of an output.

    python -m beam_pipelines.erase --pipeline=SPEC --output=OUT --subject customer_id=c-000123
        [--identifier=jo@example.com ...] [--dry_run]

With the output's lease held (as a run and ``lakehouse maintain`` hold it), in this order:

1. **silver** (both tiers): the rows whose subject column holds the value, deleted; the windows
   of the spec's aggregate they fell in noted first.
2. **gold**: those windows recomputed from silver and replaced (``lakehouse/erasure.py``).
3. **bronze** (both tiers): the records as received that hold the value, or one of the
   ``--identifier`` values (an email, a name: what else in a record names the subject), as a
   whole word.
4. **dead letters** (the spec's WriteDeadLetters paths): the lines that hold one of them.
5. **plain outputs**: rows of the parquet files (``curated``) with the value in the subject
   column; the plain aggregates' windows recomputed from them as gold's are.
6. **reports, profiles, lineage** (``_run``, ``_lineage``, other text files): each occurrence of
   the values replaced by ``[erased]`` (a profile's top values and min/max name customers).
7. **snapshots**: each table's earlier versions and their files expired (``erasure.expire``).

Then it writes a receipt, ``OUT/_erasure/<id>.json``: what was removed where, how many rows,
when, and by whom. Neither the receipt nor the audit log entry holds the value: the subject is
named by a salted SHA-256 (``sha256(salt + column + '=' + value)``) that whoever knows the value
can check. The audit log (``audit_log.py``) gets an ``erasure`` entry with the receipt's
summary and hash. A second erasure of the same subject finds nothing and changes nothing but
the log. Repeated after a crash, it completes: each step finds only what is left.
``--dry_run`` counts what would go and changes nothing (no lease, nothing logged).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sqlite3
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake.exceptions import DeltaError

from beam_pipelines import audit_log, lease, publish
from beam_pipelines.errors import RunError, UsageError, parse_flags
from beam_pipelines.lakehouse import erasure, tables, tiers
from transforms import faults
from transforms.sinks.files import join_path

__all__ = ["USAGE", "run"]

USAGE = """usage: python -m beam_pipelines.erase --pipeline=SPEC --output=OUT --subject COLUMN=VALUE [--identifier=V ...]
       [--dry_run] [--wait_for_lock[=S]] [--audit_log=PATH] [--audit_user=NAME]

Removes one data subject from the output's bronze, silver and gold Delta tables (both tiers; gold's windows the
subject was in recomputed from silver), the dead letters, the plain outputs and the reports, expires the tables'
earlier versions, and writes a receipt to OUT/_erasure/. COLUMN is a column of the curated records (silver) that
identifies the subject, e.g. customer_id; --identifier gives other values that name the subject in records and
reports (an email, a name), repeatable. --dry_run counts what would go and changes nothing.
"""

ERASED = "[erased]"
RECEIPTS = "_erasure"
_TEXT = (".json", ".jsonl", ".html", ".prom", ".txt", ".log", ".csv", ".md", ".yaml")
_SKIP = ("_audit", RECEIPTS, lease.LEASE_FILE)  # the hash-chained log and receipts hold no value; the lease no data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.erase", add_help=False, exit_on_error=False)
    parser.add_argument("--pipeline")
    parser.add_argument("--output")
    parser.add_argument("--subject")
    parser.add_argument("--identifier", action="append", default=[])
    parser.add_argument("--dry_run", nargs="?", const=True, default=False)
    parser.add_argument("--wait_for_lock", nargs="?", const=float("inf"), default=None, type=float)
    parser.add_argument("--audit_log")
    parser.add_argument("--audit_user")
    return parser


def _subject(text: str | None) -> tuple[str, str]:
    if not text or "=" not in text:
        raise UsageError("--subject=COLUMN=VALUE is required (e.g. --subject customer_id=c-000123)")
    column, value = text.split("=", 1)
    try:
        tables.quote(column)
        tables.sql_string(value)
    except ValueError as e:
        raise UsageError(f"--subject: {e}") from e
    if len(value) < 3:
        raise UsageError("--subject: a value of fewer than 3 characters would match words in unrelated records")
    return column, value


def _plan(ns, column: str) -> dict:
    """What the spec says is where: the layers' tables, the aggregate behind gold, the paths."""
    from beam_pipelines.spec import EventsConfig
    from beam_pipelines.spec.build import plan_for
    from transforms.windows import WindowedAggregate

    plan = plan_for(EventsConfig(pipeline=ns.pipeline, output=ns.output, input="-", input_format="jsonl"))
    publish.check_output_paths(ns.output, plan)
    nodes = {n.step.name: n for n in plan.nodes}
    layers: dict[str, list] = {}
    for n in plan.sinks:
        if n.step.type == "WriteLakehouse":
            layers.setdefault(n.step.config["layer"], []).append(n)
    silver = layers.get("silver", [])
    if not silver:
        raise UsageError(
            f"{ns.pipeline} has no silver WriteLakehouse step: erasure finds a subject by its column there"
        )
    silver_input = silver[0].inputs[0][0]
    if column not in (silver[0].columns or {}) and column not in silver[0].step._columns:
        raise UsageError(f"--subject: {column!r} is not a column of the curated records (silver): "
                         f"{', '.join(silver[0].step._columns)}")  # fmt: skip
    out = {"silver": [_tiered(n, ns.output) for n in silver], "bronze": [_tiered(n, ns.output) for n in layers.get("bronze", [])],
           "gold": [], "plain": [], "dlq": []}  # fmt: skip
    for n in layers.get("gold", []):
        agg = nodes[n.inputs[0][0]]
        step = agg.step
        if agg.inputs[0][0] != silver_input or step.config.get("derive") or step.window()[0] != "fixed":
            raise UsageError(f"gold table {n.step.config['path']}: its aggregate {step.name} is not a fixed-window "
                             "aggregate of silver's records, so its windows cannot be recomputed from silver")  # fmt: skip
        shape = step._legacy() or step._general()
        spec = WindowedAggregate(time_field=step.config["time"], group_by=tuple(step.config["group_by"]), **shape)._spec
        out["gold"].append({**_tiered(n, ns.output), "spec": spec, "aggregate": step.name})
    for n in plan.sinks:
        path = n.step.config.get("path")
        if n.step.type == "WriteDeadLetters" and path:
            out["dlq"].append(join_path(ns.output, path))
        elif n.step.type == "WriteLake" and path:
            source = n.inputs[0][0]
            agg = next((g for g in out["gold"] if g["aggregate"] == source), None)
            out["plain"].append({"path": join_path(ns.output, path), "role": n.step.role, "input": source,
                                 "spec": agg["spec"] if agg else None})  # fmt: skip
    out["silver_input"] = silver_input
    return out


def _tiered(n, output: str) -> dict:
    entry = n.step.maintenance(output)
    return {"step": n.step.name, "layer": entry["layer"], "table": entry["table"],
            "cold": (entry.get("cold") or {}).get("table")}  # fmt: skip


# -- files outside the tables ---------------------------------------------------------------------


def _replace(path: str, data: bytes) -> None:
    tmp = f"{path}.erasing"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _dead_letters(root: str, pattern: re.Pattern, dry_run: bool) -> dict:
    """Drops the dead-letter lines holding the value."""
    rows = files = 0
    for path in _walk(root):
        if not path.endswith(".jsonl"):
            continue
        with open(path, "rb") as fh:
            lines = fh.read().splitlines(keepends=True)
        kept = [ln for ln in lines if not pattern.search(ln.decode("utf-8", "replace"))]
        if len(kept) != len(lines):
            rows += len(lines) - len(kept)
            files += 1
            if not dry_run:
                _replace(path, b"".join(kept))
    return {"path": root, "rows_deleted": rows, "files_rewritten": files}


def _plain_rows(root: str, column: str, value: str, dry_run: bool) -> tuple[dict, pa.Table | None]:
    """Drops the subject's rows from a directory of parquet files; returns what was done and
    the subject's rows (their windows)."""
    rows = files = 0
    theirs = []
    for path in _walk(root):
        if not path.endswith(".parquet"):
            continue
        pf = pq.ParquetFile(path)
        if column not in pf.schema_arrow.names:
            continue
        data = pf.read()
        hit = pc.fill_null(pc.equal(data.column(column), pa.scalar(value)), False)
        n = pc.sum(hit).as_py() or 0
        if not n:
            continue
        rows, files = rows + n, files + 1
        theirs.append(data.filter(hit))
        if not dry_run:
            _write_parquet(path, data.filter(pc.invert(hit)), pf)
    return {"path": root, "rows_deleted": rows, "files_rewritten": files}, pa.concat_tables(theirs) if theirs else None


def _write_parquet(path: str, data: pa.Table, like: pq.ParquetFile | None = None) -> None:
    tmp = f"{path}.erasing"
    pq.write_table(data, tmp, compression="zstd")
    os.replace(tmp, path)


def _plain_aggregates(root: str, curated: str, spec, column: str, value: str, dry_run: bool) -> dict:
    """The plain aggregates' windows that the subject's curated records fell in, recomputed from
    the other curated records."""
    paths = [p for p in _walk(root) if p.endswith(".parquet")]
    records = [pq.read_table(p) for p in _walk(curated) if p.endswith(".parquet")]
    records = [r.drop_columns([c for c in r.column_names if c == "dt"]) for r in records]
    source = pa.concat_tables(records, promote_options="permissive") if records else None
    if source is None or column not in source.column_names or not paths:
        return {"path": root, "windows": 0}
    hit = pc.fill_null(pc.equal(source.column(column), pa.scalar(value)), False)
    windows = erasure.windows_of_rows(source.filter(hit), spec.time, spec.size_us)
    if not windows:
        return {"path": root, "windows": 0}
    fresh = erasure.aggregate_windows(source.filter(pc.invert(hit)), spec, windows)
    stamps = pa.array(windows, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    written = False
    for path in paths:
        data = pq.read_table(path)
        inside = pc.is_in(data.column("window_start"), value_set=stamps.cast(data.column("window_start").type))
        if not pc.any(inside).as_py() and written:
            continue
        kept = data.filter(pc.invert(inside))
        if not written and fresh is not None:
            kept = pa.concat_tables([kept, fresh.select(kept.column_names).cast(kept.schema)])
            kept = kept.sort_by([("window_start", "ascending"), *[(k, "ascending") for k in spec.keys]])
            written = True
        if not dry_run:
            _write_parquet(path, kept)
    return {"path": root, "windows": len(windows)}


def _walk(root: str):
    for base, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "_delta_log")
        for name in sorted(names):
            yield os.path.join(base, name)


def _scrub_text(output: str, skip: list[str], values: list[str], dry_run: bool) -> dict:
    """Replaces each occurrence of the values in the output's other text files (reports,
    profiles, lineage, metrics) and SQLite files by ``[erased]``."""
    patterns = []
    for v in values:
        for form in {v, json.dumps(v)[1:-1], v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}:
            patterns.append(re.compile(f"(?<![{erasure._WORD}]){re.escape(form)}(?![{erasure._WORD}])"))
    changed: dict[str, int] = {}
    skip = [os.path.normpath(s) + os.sep for s in skip]
    for path in _walk(output):
        rel = os.path.relpath(path, output)
        if rel.split(os.sep)[0] in _SKIP or any(os.path.normpath(path).startswith(s) for s in skip):
            continue
        if path.endswith(_TEXT):
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read()
            n = 0
            for p in patterns:
                text, k = p.subn(ERASED, text)
                n += k
            if n:
                changed[rel] = n
                if not dry_run:
                    _replace(path, text.encode("utf-8", "surrogateescape"))
        elif path.endswith((".sqlite", ".db")):
            n = _scrub_sqlite(path, values, dry_run)
            if n:
                changed[rel] = n
    return changed


def _sqlite_name(name: str) -> str:
    """A table or column name read from an SQLite file under the output, quoted (any name a file
    holds, quotes included, stays one name)."""
    return '"' + name.replace('"', '""') + '"'


def _scrub_sqlite(path: str, values: list[str], dry_run: bool) -> int:
    con = sqlite3.connect(path)
    try:
        n = 0
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            table = _sqlite_name(name)
            cols = [r[1] for r in con.execute("SELECT * FROM pragma_table_info(?)", (name,)).fetchall()]
            for col in map(_sqlite_name, cols):
                for v in values:
                    like = f"%{v}%"
                    k = con.execute(
                        f"SELECT count(*) FROM {table} WHERE CAST({col} AS TEXT) LIKE ?", (like,)
                    ).fetchone()[0]
                    if k and not dry_run:
                        con.execute(f"UPDATE {table} SET {col} = replace(CAST({col} AS TEXT), ?, ?) "
                                    f"WHERE CAST({col} AS TEXT) LIKE ?", (v, ERASED, like))  # fmt: skip
                    n += k
        if n and not dry_run:
            con.commit()
            con.execute("VACUUM")  # the old values stay in free pages otherwise
        return n
    finally:
        con.close()


# -- the command ----------------------------------------------------------------------------------


def _count(uri: str | None, where: str) -> int:
    table = tables.open_table(uri, tiers.storage_options(uri)) if uri else None
    if table is None:
        return 0
    return len(tiers.query(table, f"SELECT 1 FROM t WHERE {where}"))


def _erase(ns, plan: dict, column: str, value: str, erasure_id: str, dry_run: bool) -> dict:
    values = [value, *ns.identifier]
    pattern = re.compile("|".join(f"(?:{erasure.word_pattern(v)})" for v in values))
    receipt: dict = {"tables": [], "files": []}
    by_subject = erasure.subject_predicate(column, value)
    # 1. gold: the windows of the subject's silver rows recomputed from silver without them. Before
    # silver's delete, so an erasure cut off in between finds the subject's rows, and so its
    # windows, again.
    silver = plan["silver"][0]
    theirs = tiers.read(silver["table"], silver["cold"], where=by_subject)
    for g in plan["gold"]:
        spec = g["spec"]
        ws = erasure.windows_of_rows(theirs, spec.time, spec.size_us)
        if dry_run or not ws:
            receipt["tables"].append({"layer": "gold", "table": g["table"], "how": "windows recomputed from silver",
                                      "windows": len(ws)})  # fmt: skip
            continue
        lo, hi = erasure._us(ws[0]), erasure._us(ws[-1] + spec.size_us)
        time = tables.quote(spec.time)
        where = (f"{time} >= {tables.sql_timestamp(lo)} AND {time} < {tables.sql_timestamp(hi)} AND "
                 f"NOT ({by_subject})")  # fmt: skip
        rows = tiers.read(silver["table"], silver["cold"], where=where)
        done = erasure.recompute_windows(g["table"], g["cold"], rows, spec, ws, erasure_id)
        receipt["tables"].append({"layer": "gold", "how": "windows recomputed from silver", **done})
    faults.at("erase:gold")
    # 2. silver, both tiers.
    for s in plan["silver"]:
        for tier, uri in (("hot", s["table"]), ("cold", s["cold"])):
            if uri is None:
                continue
            done = (
                {"table": uri, "rows_deleted": _count(uri, by_subject)}
                if dry_run
                else erasure.delete(uri, by_subject, erasure_id)
            )
            if done is not None:
                receipt["tables"].append(
                    {"layer": "silver", "tier": tier, "how": "rows deleted (Delta DELETE)", **done}
                )
    faults.at("erase:silver")
    # 3. bronze, both tiers: records as received holding the value.
    raw = erasure.raw_predicate(values)
    for b in plan["bronze"]:
        for tier, uri in (("hot", b["table"]), ("cold", b["cold"])):
            if uri is None:
                continue
            done = {"table": uri, "rows_deleted": _count(uri, raw)} if dry_run else erasure.delete(uri, raw, erasure_id)
            if done is not None:
                receipt["tables"].append(
                    {"layer": "bronze", "tier": tier, "how": "records deleted (Delta DELETE)", **done}
                )
    faults.at("erase:bronze")
    # 4. dead letters.
    for root in plan["dlq"]:
        receipt["files"].append(
            {"what": "dead letters", "how": "lines deleted", **_dead_letters(root, pattern, dry_run)}
        )
    # 5. plain outputs: the aggregates' windows recomputed from the curated records without the
    # subject's (first, as for gold), then those records deleted.
    curated = next((c for c in plan["plain"] if c["role"] == "curated" and c["input"] == plan["silver_input"]), None)
    for p in plan["plain"]:
        if p["role"] == "aggregates" and p["spec"] is not None and curated is not None:
            done = _plain_aggregates(p["path"], curated["path"], p["spec"], column, value, dry_run)
            receipt["files"].append(
                {"what": "aggregates", "how": "windows recomputed from the curated records", **done}
            )
    for p in plan["plain"]:
        if p["role"] == "curated":
            done, _ = _plain_rows(p["path"], column, value, dry_run)
            receipt["files"].append({"what": "curated records", "how": "rows deleted", **done})
    # 6. reports, profiles, lineage.
    skip = [*plan["dlq"], *(t["table"] for layer in ("silver", "bronze", "gold") for t in plan[layer])]
    skip += [t["cold"] for layer in ("silver", "bronze", "gold") for t in plan[layer] if t["cold"]]
    redacted = _scrub_text(ns.output, skip, values, dry_run)
    receipt["files"].append({"what": "reports, profiles, lineage", "how": f"value replaced by {ERASED}",
                             "occurrences": sum(redacted.values()), "paths": sorted(redacted)})  # fmt: skip
    # 7. snapshots: every table's earlier versions.
    if not dry_run:
        expired = {}
        for layer in ("silver", "gold", "bronze"):
            for t in plan[layer]:
                for uri in (t["table"], t["cold"]):
                    if uri:
                        expired[uri] = erasure.expire(uri, erasure_id)
        for row in receipt["tables"]:
            e = expired.get(row["table"], {})
            row.update({k: e[k] for k in ("files_vacuumed", "log_entries_removed", "version_after") if k in e})
    return receipt


def _hidden(argv: list[str], token: str) -> list[str]:
    """``argv`` with the subject's values replaced (``--subject=V`` or ``--subject V``, and
    ``--identifier`` likewise)."""
    shown, after = [], None
    for a in argv:
        flag = a.split("=", 1)[0]
        hidden = {"--subject": token, "--identifier": "<hidden>"}
        if after:
            shown.append(hidden[after])
        elif flag in hidden and "=" in a:
            shown.append(f"{flag}={hidden[flag]}")
        else:
            shown.append(a)
        after = a if a in hidden else None
    return shown


def subject_digest(column: str, value: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}{column}={value}".encode()).hexdigest()


def run(argv: list[str], clock=lambda: datetime.now(timezone.utc), out=sys.stdout) -> dict:
    """Erases one subject from one output from CLI flags; returns the receipt."""
    ns = parse_flags(_parser(), argv)
    if not ns.pipeline or not ns.output:
        raise UsageError("--pipeline and --output are required (the spec whose tables, and the output they are under)")
    column, value = _subject(ns.subject)
    for v in ns.identifier:
        _subject(f"{column}={v}")  # the same checks
    if not publish.is_local(ns.output):
        raise UsageError(f"erasure works on outputs on local disks for now; --output is {ns.output}")
    if os.path.exists(os.path.join(ns.output, "_publishing.json")):
        raise UsageError(f"{ns.output} has a publish cut off by a crash: complete it first "
                         f"(python -m beam_pipelines.clean --output={ns.output})")  # fmt: skip
    plan = _plan(ns, column)
    now = clock()
    erasure_id = "erase-" + publish.new_run_id(clock)
    salt = secrets.token_hex(16)
    subject = {"column": column, "sha256": subject_digest(column, value, salt), "salt": salt,
               "identifiers": [subject_digest("", v, salt) for v in ns.identifier]}  # fmt: skip
    shown = _hidden(argv, f"{column}=<sha256:{subject['sha256'][:12]}>")
    head = f"erasure {erasure_id} of {column}=<sha256 {subject['sha256'][:12]}> from {ns.output}"
    out.write(head + (" (dry run)\n" if ns.dry_run else "\n"))
    try:
        if ns.dry_run:
            found = _erase(ns, plan, column, value, erasure_id, True)
        else:
            rec = audit_log.recorder("erasure", ns.output, log_path=ns.audit_log, audit_user=ns.audit_user,
                                     clock=clock, argv=shown)  # fmt: skip
            rec.note(erasure_id=erasure_id, output=ns.output, subject=subject)
            with rec.recording():
                try:
                    held = lease.acquire(ns.output, erasure_id, wait_s=ns.wait_for_lock, clock=clock)
                except lease.LeaseError:
                    rec.outcome = "refused"
                    raise
                with held:
                    found = _erase(ns, plan, column, value, erasure_id, False)
                    receipt = {"erasure_id": erasure_id, "time": now.isoformat(timespec="milliseconds"),
                               "finished": clock().isoformat(timespec="milliseconds"), "who": audit_log.who(ns.audit_user),
                               "pipeline": ns.pipeline, "output": ns.output, "subject": subject,
                               "crypto_shredding": "not used: every layer is rewritten", **found}  # fmt: skip
                    path = _write_receipt(ns.output, erasure_id, receipt)
                    rows = sum(t.get("rows_deleted", 0) for t in receipt["tables"] + receipt["files"])
                    rec.end("done", receipt=path, receipt_sha256=audit_log.file_sha256(path), rows_deleted=rows)
            found = receipt
    except (OSError, DeltaError, pa.ArrowException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"erasure from {ns.output} failed (run it again to complete it): {first}") from e
    out.write("\n".join(_describe(found, ns.dry_run)) + "\n")
    return found


def _write_receipt(output: str, erasure_id: str, receipt: dict) -> str:
    folder = os.path.join(output, RECEIPTS)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{erasure_id}.json")
    _replace(path, (json.dumps(receipt, indent=2, sort_keys=True, default=str) + "\n").encode())
    return path


def _describe(r: dict, dry_run: bool) -> list[str]:
    would = "would " if dry_run else ""
    lines = []
    for t in r["tables"]:
        tier = " (cold)" if t.get("tier") == "cold" else ""
        if t["layer"] == "gold":
            what = f"{would}recompute {t.get('windows', 0)} window(s) from silver"
            if t.get("rows_before") is not None:
                what += f": {t['rows_before']} rows -> {t['rows_after']}"
        else:
            what = f"{would}delete {t.get('rows_deleted', 0):,} row(s)"
            if t.get("files_rewritten") is not None:
                what += f", {t['files_rewritten']} file(s) rewritten"
        if t.get("version_after") is not None:
            what += f"; earlier versions expired ({t.get('files_vacuumed', 0)} files, {t.get('log_entries_removed', 0)} log entries), now v{t['version_after']}"
        lines.append(f"  {t['layer'] + tier:<13} {t['table']}: {what}")
    for f in r["files"]:
        if "occurrences" in f:
            lines.append(f"  {f['what']}: {would}replace {f['occurrences']} occurrence(s) in {len(f['paths'])} file(s)"
                         + (f" ({', '.join(f['paths'])})" if f["paths"] else ""))  # fmt: skip
        elif "windows" in f:
            lines.append(f"  {f['what']} {f['path']}: {would}recompute {f['windows']} window(s)")
        else:
            lines.append(
                f"  {f['what']} {f['path']}: {would}delete {f['rows_deleted']:,} row(s) in {f['files_rewritten']} file(s)"
            )
    if dry_run:
        lines.append("dry run: nothing was changed")
    elif r.get("erasure_id"):
        lines.append(f"receipt: {os.path.join(r['output'], RECEIPTS, r['erasure_id'] + '.json')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from beam_pipelines.main import command_main

    return command_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
