"""CLI: replay dead letters through the current spec after a fix.

    python -m beam_pipelines.redrive --pipeline=SPEC_OR_NAME --dlq=OUT/dlq [--reason=R ...] [--field=F ...]
        --output=OUT [--runner=...] [--dry_run]

Letters that now pass join the curated output and the aggregates they belong to; those that
still fail stay dead letters; ``_run/report.json`` accounts for both (see ``replay``). Errors are
one ``error:`` line: exit 2 for bad flags or a spec a redrive cannot run, 1 for unreadable dead
letters or outputs and for a failed redrive.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines import audit_log, object_stores, publish
from beam_pipelines.errors import RunError, UsageError
from beam_pipelines.main import (
    batch_fields,
    check_flags,
    command_main,
    config_fields,
    new_config,
    recorder,
    take_lease,
)
from beam_pipelines.options import EventsOptions, RunOptions
from beam_pipelines.replay.letters import Selection
from beam_pipelines.replay.run import Request, redrive
from beam_pipelines.runners import RunnerError, RunnerUnavailable, make_runner, profile_name

USAGE = """usage: python -m beam_pipelines.redrive --pipeline=events|SPEC.yaml --dlq=OUT/dlq --output=OUT
                                    [--reason=R ...] [--field=F ...] [--runner=...] [--dry_run]

Replays dead letters through the pipeline's current spec (after a fix to it or its contract):
letters that now pass join the curated output and the aggregates they belong to, those that
still fail stay dead letters (with their new stage, reason and error), and _run/report.json
accounts for both, so read = curated + dead_lettered + duplicates + late still holds. The same
redrive run again changes nothing. History: _run/redrives.jsonl.

  --pipeline     the spec to replay through: a packaged pipeline or a spec file (default: events)
  --dlq          the dead letters to read (any Beam filesystem), usually OUT/dlq
  --output       the published run's output root; rewritten through _staging/<run id>/ and
                 published only when the redrive finished and its counts check out
  --reason R     replay letters with this reason (repeatable); default: every reason but late
  --field F      replay letters naming this field (repeatable); default: any field
  --runner       direct (default), prism, flink, spark, dataflow
  --dry_run      say what would be replayed; run and write nothing

The spec's own flags (--window_seconds, --schema_policy, --expectations, --python_modules, ...)
must be those of the original run. --curated_buckets and --dlq_shards default to the published
files' counts.
"""

_REFUSED = {
    "--input": "a redrive reads --dlq, not --input",
    "--input_format": "a redrive reads the dead letters' own record text; drop --input_format",
    "--streaming": "a redrive runs in batch mode: drop --streaming",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--dlq")
    parser.add_argument("--reason", action="append", default=[])
    parser.add_argument("--field", action="append", default=[])
    return parser


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def request_from(argv: list[str], clock=lambda: datetime.now(timezone.utc)):
    """Flags -> (run config, Request, PipelineOptions); UsageError for a bad flag."""
    try:
        ns, rest = _parser().parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from e
    for flag, why in _REFUSED.items():
        if _given(rest, flag):
            raise UsageError(why)
    check_flags(rest)
    rest = ["--dry_run=true" if a == "--dry_run" else a for a in rest]
    options = PipelineOptions(rest)
    # Reading the letters and publishing use FileSystems before the pipeline sets these (s3 endpoints, ...).
    FileSystems.set_options(options)
    object_stores.use_options(options)
    run, ev = options.view_as(RunOptions), options.view_as(EventsOptions)
    if not ns.dlq:
        raise UsageError("--dlq is required (the dead-letter directory, e.g. OUT/dlq)")
    if not run.output:
        raise UsageError("--output is required (the published run's output root)")
    try:
        selection = Selection(tuple(ns.reason), tuple(ns.field))
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        runner = profile_name(options.view_as(StandardOptions).runner)
    except RunnerError as e:
        raise UsageError(str(e)) from e
    cfg = new_config(
        input=None, input_format=None, **config_fields(run, ev, clock(), profile=False), **batch_fields(ev)
    )
    request = Request(
        dlq=ns.dlq.rstrip("/") or ns.dlq,
        selection=selection,
        runner=options.view_as(StandardOptions).runner or "DirectRunner",
        dry_run=bool(run.dry_run),
        buckets_given=ev.curated_buckets is not None,
        shards_given=_given(rest, "--dlq_shards"),
    )
    return cfg, request, options, runner


def run(argv: list[str], clock=lambda: datetime.now(timezone.utc), out=sys.stdout) -> dict:
    """Runs one redrive from CLI flags; returns its summary (or what a dry run would replay)."""
    cfg, request, options, _ = request_from(argv, clock)
    try:
        runner = make_runner(options, check_artifacts=not request.dry_run)
    except RunnerUnavailable as e:
        raise RunError(str(e)) from e
    except RunnerError as e:
        raise UsageError(str(e)) from e
    run_id = publish.new_run_id(clock)
    if request.dry_run:
        return redrive(cfg, request, options, runner, run_id, clock, out)
    rec = recorder("redrive", cfg.output, options, clock, argv)
    rec.note(run_id=run_id, spec_sha256=audit_log.file_sha256(cfg.pipeline), dlq=request.dlq,
             filters=request.selection.describe(), output=cfg.output, runner=request.runner)  # fmt: skip
    with rec.recording(), take_lease(cfg.output, run_id, options, clock, rec) as held:
        rec.start()
        completed = publish.complete_cut_off(cfg.output)
        abandoned = publish.remove_abandoned(cfg.output, run_id)
        rec.note(completed_cut_off=completed, abandoned_removed=abandoned or None)
        result = redrive(cfg, request, options, runner, run_id, clock, out, held=held, audit=rec)
        if "last_redrive" not in result:  # nothing was selected
            rec.end("unchanged", letters=result["letters"], selected=0)
            return result
        done = result["last_redrive"]
        picked = ("letters", "selected", "passed", "duplicates", "still_failing", "still_failing_reasons", "elapsed_s")
        fields = audit_log.run_fields({k: result.get(k) for k in ("counts", "published", "lakehouse")})
        rec.end("published", **fields, redrive={k: done[k] for k in picked if k in done})
        return result


def main(argv: list[str] | None = None) -> int:
    return command_main(run, USAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
