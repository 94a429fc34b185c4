"""Checks a published partition, or whether an input exists; run with the project's Python by the
DAG's tasks (any Beam filesystem: local, gs://, s3://, azfs://).

    python -m beam_pipelines.orchestrate.audit --output=LAKE/events/date=2024-01-02
    python -m beam_pipelines.orchestrate.audit --exists='gs://b/in/2024-01-02/*.jsonl'

The audit passes when the partition holds a published run (``_run/summary.json``) whose rows were
all accounted for (read = curated + dead letters + duplicates), whose files hold the counted rows,
and whose error-severity expectations passed. Exit 0: passed (one summary line); 1: failed (an
``error:`` line); 3: ``--exists`` matched nothing.
"""

from __future__ import annotations

import argparse
import sys

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.observe import audit_failure, read_json
from transforms.ingest.files import is_hidden
from transforms.sinks.files import join_path

__all__ = ["audit", "main"]


def audit(output: str) -> str:
    """One line describing the published partition; ValueError naming what is wrong."""
    run_dir = join_path(output, "_run")
    summary = read_json(join_path(run_dir, "summary.json"))
    if summary is None:
        raise ValueError(f"nothing published at {output} (no _run/summary.json)")
    report = read_json(join_path(run_dir, "report.json")) or {}
    if not summary.get("conservation_ok"):
        raise ValueError(f"{output}: read != curated + dead_lettered + duplicates (see _run/report.json)")
    if not summary.get("files_match"):
        raise ValueError(f"{output}: published files do not hold the counted rows")
    reason = audit_failure(report)
    if reason:
        raise ValueError(f"{output}: {reason}")
    counts = summary.get("counts") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if isinstance(v, int))
    return f"audit passed: {output} run {summary.get('run_id')} ({shown})"


def exists(pattern: str) -> int:
    """Data files matching ``pattern`` (hidden names are not data)."""
    listed = FileSystems.match([pattern])[0].metadata_list
    return sum(1 for m in listed if not is_hidden(m.path, pattern))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.orchestrate.audit", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--output", help="the published partition to audit")
    group.add_argument("--exists", help="an input pattern: exit 0 when it matches a data file, 3 when not")
    args = parser.parse_args(argv)
    if args.exists is not None:
        n = exists(args.exists)
        print(f"{args.exists}: {n} file(s)")
        return 0 if n else 3
    try:
        print(audit(args.output))
    except ValueError as e:
        print(f"error: audit failed: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
