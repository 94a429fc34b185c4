"""Every flag of beam-pipelines, with help text (the CLI help and Flex Template metadata
are generated from these classes)."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["EventsOptions", "RunOptions"]


def _true(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


class RunOptions(PipelineOptions):
    """Flags of the launch layer, for every pipeline.

    Args:
        pipeline: Name of the pipeline to run (see ``--help``).
        output: Output root directory on any Beam filesystem.
        log_level: Logging level; DEBUG also prints tracebacks on errors.
        dry_run: Build the pipeline for the chosen runner and write its graph, without running it.
        dry_run_out: Where ``--dry_run`` writes the graph (Runner API proto as JSON).
        wait_for_lock: Seconds to wait for another run's lease on the output (None: refuse at once).
        history: Metrics history store (SQLite file or PostgreSQL DSN).
        history_runs: How many earlier runs anomalies are judged against.
        alert_webhook: Slack-compatible webhook for anomalies and failed expectations.
        lineage: OpenLineage target (a file of JSON lines, or an http(s) URL).
        pushgateway: Prometheus Pushgateway URL the run's metrics are pushed to.
        python_modules: Modules a spec's PythonFunction steps may import from.
        local_workers: Worker processes of the direct runner (``auto`` or a number).
        audit_log: The audit log this run appends to (any Beam filesystem).
        audit_user: Who the audit log names as running this command.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--pipeline",
            default=os.environ.get("BEAM_PIPELINES_PIPELINE", "events"),
            help="Pipeline to run: a packaged pipeline's name (events) or a pipeline spec file (YAML). Default: "
            "events (or $BEAM_PIPELINES_PIPELINE, which a Flex Template image sets).",
        )
        parser.add_argument(
            "--output",
            default=None,
            help="Output root directory (local, s3://, gs://, azfs://): curated/, aggregates/, dlq/, _run/.",
        )
        parser.add_argument(
            "--log_level",
            default="WARNING",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="Logging level. DEBUG also prints tracebacks on errors. Default: WARNING.",
        )
        # Beam's TestOptions declares --dry_run too (a string, for its runner tests); this boolean
        # replaces it wherever both are parsed, so that `--dry_run` alone works.
        beams = parser._option_string_actions.get("--dry_run")
        if beams is not None:
            parser._handle_conflict_resolve(None, [("--dry_run", beams)])
        parser.add_argument(
            "--dry_run",
            nargs="?",
            const=True,
            default=False,
            type=_true,
            help="Build the pipeline for the chosen runner's options, write its graph (Runner API proto as "
            "JSON) and exit without running or submitting anything; needs no runner artifact or cloud credentials.",
        )
        parser.add_argument(
            "--wait_for_lock",
            nargs="?",
            const=float("inf"),
            default=None,
            type=float,
            metavar="SECONDS",
            help="When another run holds the output's lease, wait for it (at most SECONDS; no limit when none is "
            "given) instead of stopping with an error. Default: stop.",
        )
        parser.add_argument(
            "--dry_run_out",
            default=None,
            help="File the --dry_run graph is written to (any Beam filesystem). Default: <output>/_run/pipeline.json.",
        )
        parser.add_argument(
            "--history",
            default=None,
            help="Where each run's metrics are kept and compared with earlier runs' (anomaly detection): an SQLite "
            "file path or a postgresql:// DSN; 'none' keeps no history. Default: <output>/_history/metrics.sqlite "
            "for a local --output, none otherwise.",
        )
        parser.add_argument(
            "--local_workers",
            default="auto",
            help="Worker processes of the direct runner (batch): a number, or auto = one per core (up to 4) when the "
            "input holds about 100k records or more, else 1. Beam's "
            "--direct_num_workers/--direct_running_mode, when given, win. Default: auto.",
        )
        parser.add_argument(
            "--history_runs",
            type=int,
            default=20,
            help="How many earlier runs a metric is compared with (median and MAD; needs 5). Default: 20.",
        )
        parser.add_argument(
            "--alert_webhook",
            default=None,
            help="Slack-compatible webhook URL: anomalies and failed expectations are posted there. Default: none.",
        )
        parser.add_argument(
            "--lineage",
            default=None,
            help="OpenLineage run events (START, COMPLETE, FAIL): a file (JSON lines, appended) or an http(s) URL "
            "of an OpenLineage endpoint; 'none' sends nothing. Default: <output>/_lineage/events.jsonl for a local "
            "--output, none otherwise.",
        )
        parser.add_argument(
            "--python_modules",
            default="",
            help="Comma-separated Python modules a pipeline spec's PythonFunction steps may import from (a "
            "package allows its submodules). A spec can run no Python code of its own otherwise. Default: none.",
        )
        parser.add_argument(
            "--audit_log",
            default=None,
            help="The audit log (hash-chained JSON lines, any Beam filesystem) to which every run, redrive and clean "
            "on this output appends who did what to which data, and when. Default: <output>/_audit/log.jsonl. Checked "
            "with `python -m beam_pipelines.audit_log verify`.",
        )
        parser.add_argument(
            "--audit_user",
            default=None,
            help="Who the audit log names as running this command (e.g. the person or service an orchestrator runs "
            "it for); the OS user and host are recorded beside it. Default: $BEAM_PIPELINES_AUDIT_USER, else the OS "
            "user.",
        )
        parser.add_argument(
            "--pushgateway",
            default=None,
            help="Prometheus Pushgateway URL the run's metrics (also in <output>/_run/metrics.prom) are pushed to. "
            "Default: none.",
        )


class EventsOptions(PipelineOptions):
    """Flags of the ``events`` pipeline.

    Args:
        input: Input file pattern.
        input_format: jsonl, csv, avro or parquet; taken from the extension when omitted.
        schema_policy: additive, strict, discard or freeze.
        window_seconds: Aggregation window size.
        allowed_lateness: Allowed lateness in seconds.
        shuffle_partitions: Dedup shuffle partitions.
        curated_buckets: Files per curated date partition.
        dlq_shards: Dead-letter files.
        read_chunk_kb: Read batch size for text inputs.
        kafka_bootstrap: Kafka bootstrap servers (streaming).
        kafka_topic: Kafka topic to read (streaming).
        kafka_stop_at_end: Stop at the topic's end offsets as of the start (a bounded stream).
        pg_dsn: PostgreSQL DSN the streaming aggregates are upserted into.
        pg_table: PostgreSQL table of the streaming aggregates.
        early_firing_seconds: Early aggregate firings every N seconds of processing time.
        dlq_topic: Kafka topic for the dead letters instead of files (streaming).
        expectations: Data-quality expectations YAML, or none.
        profile: Profile the curated columns.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            default=None,
            help="Input file pattern on any Beam filesystem, e.g. 'data/in/*.jsonl' or 's3://bucket/in/*.parquet'.",
        )
        parser.add_argument(
            "--input_format",
            default=None,
            help="One of jsonl, csv, avro, parquet. Default: taken from the input's file extension.",
        )
        parser.add_argument(
            "--schema_policy",
            default="additive",
            help="Undeclared fields: 'additive' keeps them as JSON in 'extras'; 'strict' dead-letters "
            "the record (reason unknown_field); 'discard' drops them (counted); 'freeze' fails the run. Default: "
            "additive.",
        )
        parser.add_argument(
            "--window_seconds", type=int, default=3600, help="Event-time window size in seconds. Default: 3600."
        )
        parser.add_argument(
            "--allowed_lateness",
            type=int,
            default=600,
            help="Allowed lateness in seconds for event-time windows (streaming). Default: 600.",
        )
        parser.add_argument(
            "--shuffle_partitions",
            type=int,
            default=None,
            help="Hash partitions of the deduplication and aggregation shuffles. Default: from the input's size "
            "(8, and one more per ~200,000 rows beyond 1.6M), so each partition's merge holds about the same rows at "
            "any size.",
        )
        parser.add_argument(
            "--curated_buckets",
            type=int,
            default=None,
            help="Parquet files per dt= partition of the curated output. Default: from the input's size (1 per "
            "~2,500,000 rows), so each file's rows held at once stay about the same at any size.",
        )
        parser.add_argument("--dlq_shards", type=int, default=1, help="Dead-letter JSON-lines files. Default: 1.")
        parser.add_argument(
            "--read_chunk_kb",
            type=int,
            default=8192,
            help="Kilobytes read per batch from text inputs (jsonl, csv, avro). Default: 8192.",
        )
        parser.add_argument(
            "--kafka_bootstrap",
            default=None,
            help="With --streaming: Kafka bootstrap servers (host:port[,host:port]) to read events from.",
        )
        parser.add_argument("--kafka_topic", default=None, help="With --streaming: the Kafka topic of the events.")
        parser.add_argument(
            "--kafka_stop_at_end",
            nargs="?",
            const=True,
            default=False,
            type=_true,
            help="With --streaming: stop at the end offsets the topic has when the job starts (a bounded stream: "
            "every window fires and the job ends). Default: read forever.",
        )
        parser.add_argument(
            "--pg_dsn",
            default=None,
            help="With --streaming: PostgreSQL DSN (postgresql://user@host:port/db) the hourly aggregates are "
            "upserted into (events: keyed by window_start, event_type, country).",
        )
        parser.add_argument(
            "--pg_table",
            default=None,
            help="With --streaming: the aggregates table (created when missing). Default: the spec's "
            "(events: events_aggregates).",
        )
        parser.add_argument(
            "--early_firing_seconds",
            type=int,
            default=None,
            help="With --streaming: also fire aggregates every N seconds of processing time before the "
            "watermark closes a window. Default: no early firings.",
        )
        parser.add_argument(
            "--dlq_topic",
            default=None,
            help="With --streaming: produce the dead letters (late records too) as JSON messages to this "
            "existing Kafka topic instead of writing dlq/ files. Default: files.",
        )
        parser.add_argument(
            "--expectations",
            default=None,
            help="Data-quality expectations (YAML, see README) checked on the curated records; an error-severity "
            "failure stops the publish. 'none' checks nothing. Default: the pipeline's own "
            "beam_pipelines/pipelines/events.expectations.yaml.",
        )
        parser.add_argument(
            "--profile",
            nargs="?",
            const=True,
            default=True,
            type=_true,
            help="Profile every curated column (counts, nulls, distinct, quantiles, top values) into "
            "<output>/_run/profile.json. Default: true.",
        )
