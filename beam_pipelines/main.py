"""CLI entry: ``python -m beam_pipelines.main --pipeline=events --input=... --output=...``.

Thin on purpose: parse and check flags, build the typed config, compose the pipeline with
file IO into a staging directory, run it, publish, and print a summary. Errors are one line
on stderr with a non-zero exit (2 for bad flags, 1 for a failed run); ``--log_level=DEBUG``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

# Read once, when Arrow loads: jemalloc hands freed memory back to the system, where Arrow's usual
# pool (mimalloc) keeps it (5M jsonl rows: the process tree peaked ~300 MB lower, same speed).
# Linux wheels of pyarrow carry jemalloc; elsewhere Arrow would warn about the setting.
if sys.platform == "linux":
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.options.pipeline_options import _BeamArgumentParser as BeamArgumentParser
from google.protobuf import json_format

from beam_pipelines import audit_log, lakehouse, lease, object_stores, publish, streaming, summary
from beam_pipelines.errors import RunError, UsageError
from beam_pipelines.observe import Observer, audit_failure, read_json
from beam_pipelines.options import EventsOptions, RunOptions
from beam_pipelines.runners import (
    RunnerError,
    RunnerUnavailable,
    check_worker_paths,
    direct_workers,
    graph_environment,
    make_runner,
    parallel_direct_runner,
    profile_name,
)
from beam_pipelines.spec import ConfigError, EventsConfig, SpecError
from beam_pipelines.spec import build as spec_build
from beam_pipelines.spec.steps.io import SCRATCH
from beam_pipelines.warm_workers import WarmWorkers
from transforms import faults
from transforms.ingest.files import format_from_path, is_hidden
from transforms.sinks.files import join_path

USAGE = """usage: python -m beam_pipelines.main --pipeline=events|SPEC.yaml --input=PATTERN --output=DIR [options]

Runs a beam-pipelines pipeline: a packaged one ({pipelines}) or a pipeline spec file (YAML; see the
README's Pipeline specs section and `python -m beam_pipelines.spec --help`).

{groups}
Any standard Apache Beam pipeline option (--runner, --project, --flink_master, ...) is accepted
too. Runners: direct (DirectRunner, the default), prism (PrismRunner), flink (FlinkRunner),
spark (SparkRunner), dataflow (DataflowRunner); see the README's Runners section.
"""


def _option_classes():
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    return list(seen.values())


def check_flags(argv: list[str]) -> None:
    """Raises UsageError for a flag no options class declares (Beam only warns)."""
    parser = BeamArgumentParser(allow_abbrev=False)
    for cls in _option_classes():
        cls._add_argparse_args(parser)
    try:
        _, unknown = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse already printed what was wrong with the value
        raise UsageError("invalid flag value (see above)") from e
    if unknown:
        known = [o for a in parser._actions for o in a.option_strings]
        name = unknown[0].split("=", 1)[0]
        hint = difflib.get_close_matches(name, known, n=1)
        raise UsageError(f"unknown flag {name}" + (f" (did you mean {hint[0]}?)" if hint else ""))


def help_text() -> str:
    groups = []
    for cls in (RunOptions, EventsOptions):
        parser = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
        cls._add_argparse_args(parser)
        title = cls.__doc__.strip().splitlines()[0]
        groups.append(title + "\n" + parser.format_help().split("\n", 1)[1])
    return USAGE.format(pipelines=", ".join(spec_build.packaged()), groups="\n".join(groups))


def _resolve_format(pattern: str, given: str | None) -> str:
    if given:
        return given
    fmt = format_from_path(pattern)
    if fmt:
        return fmt
    matched = [m for m in FileSystems.match([pattern])[0].metadata_list if not is_hidden(m.path, pattern)]
    formats = {format_from_path(m.path) for m in matched}
    if len(formats) == 1 and None not in formats:
        return formats.pop()
    raise UsageError(f"cannot tell the input format of {pattern!r}; pass --input_format=jsonl|csv|avro|parquet")


def spec_file(pipeline: str) -> str:
    """The spec file ``--pipeline`` names (UsageError when there is none)."""
    path = spec_build.spec_path(pipeline)
    if not os.path.isfile(path):
        known = ", ".join(spec_build.packaged())
        raise UsageError(f"unknown pipeline {pipeline!r}: not a packaged pipeline ({known}) nor a spec file")
    return path


def events_config(options: PipelineOptions, run_time: datetime | None = None) -> EventsConfig:
    """The run config from flags, with the spec checked against it (SpecError names the place)."""
    run, ev = options.view_as(RunOptions), options.view_as(EventsOptions)
    cfg = _events_config(options, run, ev, run_time or datetime.now(timezone.utc))
    plan = spec_build.plan_for(cfg)  # a bad spec or expectations file fails here, before any data is read
    plan.check_io()
    publish.check_output_paths(cfg.output, plan)
    if not cfg.streaming:  # the source the spec reads, whether or not it came from --input
        source = plan.source.step
        cfg = dataclasses.replace(cfg, input=source.input_name(), input_format=source.format())
    upserts = [n.step for n in plan.sinks if n.step.type == "UpsertPostgres"]
    if upserts:  # the table the spec upserts into (the launcher clears it on a restart and counts it)
        try:
            dsn = upserts[0].dsn()
        except ValueError as e:
            raise UsageError(f"{upserts[0].name}: {e}") from None
        cfg = dataclasses.replace(cfg, pg_dsn=dsn, pg_table=upserts[0].config["table"])
    return cfg


def _events_config(options, run: RunOptions, ev: EventsOptions, run_time: datetime) -> EventsConfig:
    if not run.output:
        raise UsageError("--output is required (the output root directory)")
    fields = config_fields(run, ev, run_time, profile=ev.profile)
    if options.view_as(StandardOptions).streaming:
        return new_config(
            input=None,
            input_format=ev.input_format or "jsonl",
            streaming=True,
            kafka_bootstrap=ev.kafka_bootstrap,
            kafka_topic=ev.kafka_topic,
            kafka_stop_at_end=ev.kafka_stop_at_end,
            pg_dsn=ev.pg_dsn,
            pg_table=ev.pg_table,
            early_firing_seconds=ev.early_firing_seconds,
            dlq_topic=ev.dlq_topic,
            **fields,
        )
    # Without --input the spec's own source path applies (a spec needing --input says so).
    fmt = _resolve_format(ev.input, ev.input_format) if ev.input else ev.input_format
    return new_config(input=ev.input, input_format=fmt, **fields, **batch_fields(ev))


def config_fields(run: RunOptions, ev: EventsOptions, run_time: datetime, *, profile: bool) -> dict:
    """The run config's fields that every kind of run (batch, streaming, redrive) takes from its flags."""
    return {
        "output": run.output,
        "schema_policy": ev.schema_policy,
        "window_seconds": ev.window_seconds,
        "allowed_lateness_seconds": ev.allowed_lateness,
        "shuffle_partitions": DEFAULT_PARTITIONS if ev.shuffle_partitions is None else ev.shuffle_partitions,
        "expectations": ev.expectations,
        "profile": profile,
        "run_time": run_time,
        "pipeline": spec_file(run.pipeline),
        "python_modules": tuple(m.strip() for m in run.python_modules.split(",") if m.strip()),
    }


def batch_fields(ev: EventsOptions) -> dict:
    """The run config's fields of batch runs only: file layout and read size."""
    return {
        "curated_buckets": 1 if ev.curated_buckets is None else ev.curated_buckets,
        "dlq_shards": ev.dlq_shards,
        "chunk_bytes": ev.read_chunk_kb * 1024,
    }


def new_config(**fields) -> EventsConfig:
    """An EventsConfig; a value it refuses is a usage error (exit 2)."""
    try:
        return EventsConfig(**fields)
    except ConfigError as e:
        raise UsageError(str(e)) from e


DEFAULT_PARTITIONS = 8
# Rows one dedup merge holds (all columns and the raw text): ~100 MB. Every worker process merges
# one partition at a time, so this, not the input size, sets a worker's peak memory.
ROWS_PER_PARTITION = 200_000
# Bytes per record of the generated events in each format, to estimate rows from the input's size.
_BYTES_PER_ROW = {"parquet": 28, "avro": 60, "csv": 120, "jsonl": 165}


def estimated_rows(cfg: EventsConfig, input_bytes: int) -> float:
    """Records in the input, estimated from its size in bytes."""
    return input_bytes / _BYTES_PER_ROW[cfg.input_format]


def sized(cfg: EventsConfig, ev: EventsOptions, input_bytes: int) -> EventsConfig:
    """Partitions and buckets from the input's size, where the flags leave them open: memory per
    merge and per written file then stays about the same as the input grows."""
    rows = estimated_rows(cfg, input_bytes)
    changes = {}
    if ev.shuffle_partitions is None:
        changes["shuffle_partitions"] = min(256, max(DEFAULT_PARTITIONS, math.ceil(rows / ROWS_PER_PARTITION)))
    if ev.curated_buckets is None:
        changes["curated_buckets"] = min(64, max(1, math.ceil(rows / 2_500_000)))
    return dataclasses.replace(cfg, **changes)


def preflight(cfg: EventsConfig) -> int:
    """Checks what can be checked before any worker starts; returns the input size in bytes."""
    try:  # a database or API source checks itself
        size = spec_build.plan_for(cfg).source.step.preflight()
    except OSError as e:
        raise RunError(str(e)) from e
    if size is not None:
        try:
            publish.check_writable(cfg.output)
        except OSError as e:
            raise RunError(str(e)) from e
        return size
    try:
        listed = FileSystems.match([cfg.input])[0].metadata_list
    except Exception as e:  # each filesystem raises its own error type
        raise RunError(f"cannot list --input={cfg.input}: {object_stores.plain_error(e)}") from e
    matched = [m for m in listed if not is_hidden(m.path, cfg.input)]
    if not matched:
        hidden = f" ({len(listed)} hidden file(s) named _* or .* are not data)" if listed else ""
        raise RunError(f"no file matches --input={cfg.input}{hidden}")
    try:
        publish.check_writable(cfg.output)
    except OSError as e:
        raise RunError(str(e)) from e
    return sum(m.size_in_bytes for m in matched)


def dry_run(module, cfg: EventsConfig, options: PipelineOptions, runner, staging: str, out=sys.stdout,
            io=None) -> dict:  # fmt: skip
    """Builds the pipeline and writes its Runner API graph as JSON; runs and submits nothing."""
    p = beam.Pipeline(runner=runner, options=options)
    # Data keys are made (so a missing master key shows) but not stored: nothing runs on them.
    module.build(p, cfg, dataclasses.replace(io or module.file_io(cfg, staging), store_keys=False))
    graph = p.to_runner_api(default_environment=graph_environment(runner, options))
    path = options.view_as(RunOptions).dry_run_out or join_path(cfg.output, "_run", "pipeline.json")
    try:
        if publish.is_local(path):
            os.makedirs(os.path.dirname(os.path.abspath(path.removeprefix("file://"))), exist_ok=True)
        with FileSystems.create(path, mime_type="application/json") as fh:
            fh.write(json_format.MessageToJson(graph, sort_keys=True).encode() + b"\n")
    except Exception as e:  # each filesystem raises its own error type
        raise RunError(f"cannot write the dry-run graph to {path}: {e}") from e
    runner_name = options.view_as(StandardOptions).runner or "DirectRunner"
    transforms = len(graph.components.transforms)
    plan = module.plan_for(cfg)
    what = cfg.input_format
    if cfg.streaming:
        source = plan.source.step
        what = f"kafka topic {cfg.kafka_topic}" if source.type == "ReadKafka" else source.input_name()
    name = plan.name
    out.write(f"dry run: {what} {name} pipeline for {runner_name}, {transforms} transforms, "
              f"graph written to {path}; nothing was run or submitted\n")  # fmt: skip
    return {"dry_run": True, "runner": runner_name, "graph": path, "transforms": transforms}


def _normalize_flags(argv: list[str]) -> list[str]:
    # Beam re-parses the flags with its own TestOptions, where --dry_run takes a value.
    return ["--dry_run=true" if a == "--dry_run" else a for a in argv]


def run(argv: list[str], clock=lambda: datetime.now(timezone.utc), out=sys.stdout) -> dict:
    """Runs one pipeline from CLI flags; returns the run summary dict."""
    faults.arm()
    check_flags(argv)
    options = PipelineOptions(_normalize_flags(argv))
    # Preflight and publish use FileSystems before (and after) the Pipeline sets these; without
    # them s3:// ignores --s3_endpoint_url and the credential flags.
    FileSystems.set_options(options)
    object_stores.use_options(options)
    run_opts = options.view_as(RunOptions)
    module = spec_build
    try:
        profile = profile_name(options.view_as(StandardOptions).runner)
    except (ValueError, RunnerError) as e:
        raise UsageError(str(e)) from e
    cfg = events_config(options, clock())
    try:
        # Before anything is written: a misconfigured runner leaves no trace.
        runner = make_runner(options, check_artifacts=not run_opts.dry_run)
        check_worker_paths(profile, {"--input": cfg.input})
    except RunnerUnavailable as e:
        raise RunError(str(e)) from e
    except RunnerError as e:
        raise UsageError(str(e)) from e
    run_id = publish.new_run_id(clock)
    staging = publish.staging_dir(cfg.output, run_id)
    if run_opts.dry_run:
        io = module.stream_io(cfg, cfg.output) if cfg.streaming else None
        return dry_run(module, cfg, options, runner, cfg.output if cfg.streaming else staging, out, io)
    rec = recorder("run", cfg.output, options, clock, argv)
    rec.redact.hide(cfg.pg_dsn)
    rec.note(run_id=run_id, pipeline=module.pipeline_name(cfg), spec_sha256=audit_log.file_sha256(cfg.pipeline),
             input=cfg.input, output=cfg.output, streaming=cfg.streaming or None,
             kafka_topic=cfg.kafka_topic if cfg.streaming else None,
             runner=options.view_as(StandardOptions).runner or "DirectRunner")  # fmt: skip
    with rec.recording(), take_lease(cfg.output, run_id, options, clock, rec) as held:
        rec.start()
        completed = publish.complete_cut_off(cfg.output)  # before the cut-off run's staging counts as abandoned
        abandoned = publish.remove_abandoned(cfg.output, run_id)
        rec.note(completed_cut_off=completed, abandoned_removed=abandoned or None)
        if cfg.streaming:
            result = streaming.run(module, cfg, options, runner, run_id, out)
            rec.end("finished", **audit_log.run_fields(result), source=result["source"],
                    aggregate_rows=result["aggregate_rows"], pg_table=result["pg_table"])  # fmt: skip
            return result
        return _run_batch(module, cfg, options, runner, run_id, staging, clock, out, held, abandoned, rec)


def recorder(action: str, output: str, options, clock, argv: list[str]) -> audit_log.Recorder:
    """The audit log's Recorder of one command on ``output`` (see audit_log.py)."""
    run_opts = options.view_as(RunOptions)
    return audit_log.recorder(action, output, log_path=run_opts.audit_log, audit_user=run_opts.audit_user,
                              clock=clock, options=options, argv=argv)  # fmt: skip


def take_lease(output: str, run_id: str, options, clock, rec: audit_log.Recorder | None = None) -> lease.Lease:
    """The output's lease for this run (see lease.py); LeaseError when another live run holds it
    (the audit log's end entry then says ``refused``)."""
    try:
        return lease.acquire(output, run_id, wait_s=options.view_as(RunOptions).wait_for_lock, clock=clock,
                             options=options)  # fmt: skip
    except lease.LeaseError:
        if rec is not None:
            rec.outcome = "refused"
        raise


def _observer(cfg: EventsConfig, run_opts: RunOptions) -> Observer:
    try:
        return Observer(output=cfg.output, input=cfg.input, history=run_opts.history,
                        history_runs=run_opts.history_runs, alert_webhook=run_opts.alert_webhook,
                        lineage=run_opts.lineage, pushgateway=run_opts.pushgateway)  # fmt: skip
    except ValueError as e:  # a malformed URL or target
        raise UsageError(str(e)) from e


def _run_batch(module, cfg: EventsConfig, options, runner, run_id: str, staging: str, clock, out,
               held: lease.Lease, abandoned: dict, rec: audit_log.Recorder) -> dict:  # fmt: skip
    """Runs into staging, audits, publishes (while this run still holds the output's lease),
    then records and reports (see observe.py) and appends the outcome to the audit log."""
    input_bytes = preflight(cfg)
    cfg = dataclasses.replace(sized(cfg, options.view_as(EventsOptions), input_bytes), run_id=run_id)
    workers = direct_workers(options, estimated_rows(cfg, input_bytes))  # None: not this launcher's choice
    parallel = workers is not None and workers > 1
    worker_log = stderr = None
    pool = contextlib.nullcontext()
    if parallel:
        worker_log = os.path.join(tempfile.gettempdir(), f"beam_pipelines-{run_id}-workers.log")
        stderr = None if options.view_as(RunOptions).log_level == "DEBUG" else worker_log
        pool = WarmWorkers(workers, stderr)
    with held.fork_safe(pool):
        if parallel:  # the workers are forked (entering the pool) before the runner exists
            runner = parallel_direct_runner(options, workers, stderr, pool.command())
        observer = _observer(cfg, options.view_as(RunOptions))
        started_at = clock()
        observer.started(run_id, started_at)
        started = time.monotonic()
        try:
            p = beam.Pipeline(runner=runner, options=options)
            module.build(p, cfg, module.file_io(cfg, staging))
            # The launcher's heap (Beam, Arrow, the built pipeline) is left out of garbage
            # collection while the runner works: each full collection walked all of it.
            gc.freeze()
            beam_result = p.run()
            beam_result.wait_until_finish()
        except Exception as e:
            publish.discard(staging)
            observer.failed(run_id, e, clock())
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            where = f" (worker log: {worker_log})" if worker_log and os.path.exists(worker_log) else ""
            if "No space left on device" in first:
                where += f"; the disk holding {cfg.output} is full: this run's staging was removed, the published outputs are as they were"
            raise RunError(f"pipeline failed: {first}{where}") from e
    if worker_log and os.path.exists(worker_log):
        os.remove(worker_log)
    elapsed = time.monotonic() - started
    staged_run = join_path(staging, "_run")
    reason = audit_failure(read_json(join_path(staged_run, "report.json")) or {})
    if reason:
        report = read_json(join_path(staged_run, "report.json"))
        staged = summary.make_summary(run_id, cfg, options, report, publish.count_published(staging), elapsed,
                                      input_bytes, started_at)  # fmt: skip
        if getattr(module.plan_for(cfg), "pii", None) is not None:
            # The shuffle spills hold records as they were before the sinks protected them: a
            # staging kept for inspection keeps the protected outputs only.
            publish.discard(join_path(staging, SCRATCH))
        observer.audit_failed(staged, staged_run, reason)
        observer.failed(run_id, f"audit failed: {reason}", clock())
        observer.close()
        rec.outcome = "audit_failed"
        rec.note(counts=report["counts"], staging=staging)
        raise RunError(f"audit failed, nothing published: {reason} (staged outputs and report.html kept "
                       f"in {staging} until the next run on this output)")  # fmt: skip
    scratch = publish.staging_runs(cfg.output).get(run_id, 0)
    faults.at("before_publish")
    try:
        held.check()
    except lease.LeaseError as e:
        publish.discard(staging)
        observer.failed(run_id, e, clock())
        observer.close()
        raise
    try:
        tables = lakehouse.table_entries(module.plan_for(cfg), cfg.output, staging, run_id)
        cleanup = publish.publish(staging, cfg.output, tables)
    except OSError as e:  # NotPublished or PublishCutOff: each says what stands
        if isinstance(e, publish.NotPublished):
            publish.discard(staging)
        else:
            rec.outcome = "cut_off"  # committed: the next holder of the output completes it
        observer.failed(run_id, e, clock())
        observer.close()
        raise RunError(str(e)) from e
    rec.outcome = "published"  # from here on, an error is recorded with this outcome
    try:
        run_dir = join_path(cfg.output, "_run")
        report = read_json(join_path(run_dir, "report.json"))
        published = publish.count_published(cfg.output)
        result = summary.make_summary(run_id, cfg, options, report, published, elapsed, input_bytes, started_at)
        if workers:
            result["workers"] = workers
        if tables:
            result.update(summary.lakehouse_summary(tables, result["counts"]))
        result["scratch"] = {"staged_bytes": scratch, "abandoned_removed": abandoned}
        faults.at("report")
        doc = observer.finished(run_id, clock(), result, beam_result.metrics().query(), run_dir)
        observer.close()
        result.update(summary.quality_summary(doc, observer.deliveries, join_path(run_dir, "report.html")))
        with FileSystems.create(join_path(run_dir, "summary.json")) as fh:
            fh.write(json.dumps(result, indent=2, sort_keys=True).encode() + b"\n")
        out.write(summary.render(result))
        out.flush()
        problem = None
        if not result["conservation_ok"]:
            problem = ("conservation check failed: read != curated + dead_lettered + duplicates + late "
                       f"(see {join_path(cfg.output, '_run', 'report.json')})")  # fmt: skip
        elif not result["files_match"]:
            problem = "published files do not hold the counted rows (see _run/summary.json)"
        elif not result.get("tables_match", True):
            problem = "the lakehouse tables did not take the counted rows (see _run/summary.json)"
        rec.end("published", **audit_log.run_fields(result), error=problem)
        if problem:
            raise RunError(problem)
    finally:
        if cleanup is not None:
            cleanup.join()
    return result


def _not_runner_noise(record: logging.LogRecord) -> bool:
    """False for what runners relay that the one-line error already says or a user cannot act
    on: a worker process's error with its traceback (the direct runner), and prism's own
    warnings about the job graph (relayed under the name PrismRunner)."""
    if record.levelno >= logging.ERROR and record.module == "worker_handlers":
        return False
    return not (record.name == "PrismRunner" and record.levelno < logging.ERROR)


def quiet_logging(argv: list[str]) -> bool:
    """Logging at ``--log_level`` (WARNING by default), with the runners' repeats of a failure
    silenced unless DEBUG or INFO; returns whether tracebacks are wanted (DEBUG)."""
    debug = any(a in ("--log_level=DEBUG", "DEBUG") for a in argv)
    level = next((a.split("=", 1)[1] for a in argv if a.startswith("--log_level=")), "WARNING")
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING), format="%(levelname)s %(name)s: %(message)s"
    )
    if level.upper() not in ("DEBUG", "INFO"):
        # A failing step is reported once, as the one-line error; Beam would also log it with a
        # traceback from the runner and worker.
        for name in (
            "apache_beam.runners.common",
            "apache_beam.runners.worker",
            "apache_beam.runners.portability",
            "apache_beam.utils.subprocess_server",  # "Really starting service" for each job server
        ):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # Worker processes' and prism's log records are re-logged by the runner on the root logger.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_not_runner_noise)
    return debug


def command_main(command, usage: str, argv: list[str] | None = None) -> int:
    """The entry point of a command-line tool: ``--help`` prints ``usage``; otherwise runs
    ``command(argv)`` with logging set from the flags, and returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return 0
    return exit_status(command, argv, quiet_logging(argv))


def exit_status(command, argv: list[str], debug: bool) -> int:
    """Runs ``command(argv)``; a failure is one ``error:`` line and its exit status (2 for bad
    flags or a bad spec, 1 for a failed run, 130 when interrupted)."""
    try:
        command(argv)
    except (UsageError, SpecError) as e:
        if debug:
            logging.exception("usage error")
        print(f"error: {e}" + ("  (see --help)" if isinstance(e, UsageError) else ""), file=sys.stderr)
        return 2
    except (RunError, RunnerError) as e:
        if debug:
            logging.exception("run failed")
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    return exit_status(run, argv, quiet_logging(argv))


if __name__ == "__main__":
    sys.exit(main())
