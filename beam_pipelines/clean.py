"""Removes what dead runs left under an output: ``python -m beam_pipelines.clean --output=OUT [--dry_run]``.

A run killed before it published leaves its scratch in ``<output>/_staging/<run id>/`` (the
next run on the output removes it too); a run killed while publishing leaves a journal, and
``clean`` completes that publish first. ``clean`` takes the output's lease first, so it never
touches the staging of a live run: with a run in progress it stops with an error naming it.
``--dry_run`` lists what would go, with sizes, and removes nothing. A clean (not a dry run)
appends what it did to the output's audit log (see audit_log.py).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import audit_log, lease, object_stores, publish
from beam_pipelines.errors import UsageError
from beam_pipelines.main import command_main
from transforms.sinks.files import join_path

USAGE = """usage: python -m beam_pipelines.clean --output=OUT [--dry_run] [--wait_for_lock[=SECONDS]]
                                  [--audit_log=PATH] [--audit_user=NAME]

Removes the staging directories (scratch) that runs killed before publishing left under OUT/_staging/,
and completes a publish a crash cut off. What it did is appended to the audit log (OUT/_audit/log.jsonl
unless --audit_log says otherwise; --audit_user names who for, default $BEAM_PIPELINES_AUDIT_USER or the
OS user); --dry_run only lists, and records nothing. Beam filesystem flags (--s3_endpoint_url, ...) are
passed on.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.clean", add_help=False, exit_on_error=False)
    parser.add_argument("--output")
    parser.add_argument("--dry_run", nargs="?", const=True, default=False)
    parser.add_argument("--wait_for_lock", nargs="?", const=float("inf"), default=None, type=float)
    parser.add_argument("--audit_log")
    parser.add_argument("--audit_user")
    return parser


def run(argv: list[str], clock=lambda: datetime.now(timezone.utc), out=sys.stdout) -> dict:
    """Cleans one output from CLI flags; returns what was (or would be) removed: name -> bytes."""
    try:
        ns, rest = _parser().parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from e
    if not ns.output:
        raise UsageError("--output is required (the output root whose abandoned staging is removed)")
    options = PipelineOptions(rest)
    FileSystems.set_options(options)
    object_stores.use_options(options)
    root = join_path(ns.output, "_staging")
    if ns.dry_run:
        holder = lease.holder_of(ns.output, options)
        cut_off = publish.cut_off(ns.output) if holder is None else None
        found = {k: v for k, v in publish.staging_runs(ns.output).items() if holder is None or k != holder.run_id}
        if cut_off:
            out.write(f"would complete the publish of run {cut_off}, cut off by a crash\n")
        busy = f"; {holder.describe()} is running and keeps its own" if holder else ""
        out.write(_listing(found, root, "would remove") + f"dry run: nothing was removed{busy}\n")
        return found
    run_id = "clean-" + publish.new_run_id(clock)
    rec = audit_log.recorder("clean", ns.output, log_path=ns.audit_log, audit_user=ns.audit_user, clock=clock,
                             options=options, argv=argv)  # fmt: skip
    rec.note(run_id=run_id, output=ns.output)
    with rec.recording():
        try:
            held = lease.acquire(ns.output, run_id, wait_s=ns.wait_for_lock, clock=clock, options=options)
        except lease.LeaseError:
            rec.outcome = "refused"
            raise
        with held:
            completed = publish.complete_cut_off(ns.output)
            gone = publish.remove_abandoned(ns.output, run_id)
            rec.end("done", completed_cut_off=completed, removed=gone)
    if completed:
        out.write(f"completed the publish of run {completed}, cut off by a crash\n")
    out.write(_listing(gone, root, "removed"))
    return gone


def _listing(entries: dict[str, int], root: str, verb: str) -> str:
    if not entries:
        return f"nothing to clean under {root}\n"
    lines = [f"  {join_path(root, name):<60} {size / 1e6:>10,.1f} MB" for name, size in entries.items()]
    total = sum(entries.values()) / 1e6
    return "\n".join(lines) + f"\n{verb} {len(entries)} abandoned staging entr{'y' if len(entries) == 1 else 'ies'}, " \
        f"{total:,.1f} MB\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return command_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
