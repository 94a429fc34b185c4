"""The streaming launch: check Kafka and PostgreSQL, run until the stream ends, summarise.

A streaming run writes straight into ``--output`` (curated and dead-letter files appear as
data arrives, ``_run/report.json`` is rewritten with the counts so far) and upserts the
aggregates into PostgreSQL; there is no staging directory to publish, because a stream has no
end to wait for. With ``--kafka_stop_at_end`` the stream ends at the topic's end offsets as of
the start, and the run ends with a summary like a batch run's.

Restarts (after a crash or a stop) replay the topic from its earliest retained offsets and
rebuild the outputs: the files and aggregate rows of the previous attempt are removed first,
then every window is recomputed from the same records in the same per-partition order (so the
same records are judged late) and each aggregate firing upserts its PostgreSQL row. The
results after a restart are those of one uninterrupted run: nothing lost, nothing counted
twice. The price is re-reading the retained topic (see the README's Streaming section).
Kinesis streams replay the same way (from the start of their retention, per shard in
sequence order). A Pub/Sub subscription cannot replay what it has acknowledged: a stream from
one starts only over an empty output and an empty aggregate table, never over an earlier
attempt's (rebuilding them would lose the acknowledged records, keeping them would mix a
partial recomputation into complete windows).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import threading
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from beam_pipelines import publish
from beam_pipelines.errors import RunError
from beam_pipelines.spec import EventsConfig
from transforms.sinks.files import join_path

__all__ = ["preflight", "run"]

CONNECT_TIMEOUT_S = 15
STREAM_OUTPUTS = ("curated", "dlq", "_run")


def preflight(cfg: EventsConfig, source=None) -> None:
    """Fails with one line when the source (broker and topic, subscription, stream), the
    dead-letter topic or the database cannot be reached."""
    kafka = source is None or source.type == "ReadKafka"
    if kafka or (cfg.dlq_topic and cfg.kafka_bootstrap):
        _kafka_preflight(cfg, kafka)
    if not kafka:
        try:
            source.preflight()
        except OSError as e:
            raise RunError(str(e)) from e
    import psycopg

    try:
        psycopg.connect(cfg.pg_dsn, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"cannot reach PostgreSQL at --pg_dsn: {first}") from e


def _kafka_preflight(cfg: EventsConfig, source: bool) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # librdkafka would print every failed connection attempt on stderr: the one-line error says it.
    quiet = logging.getLogger(__name__ + ".kafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient(
        {"bootstrap.servers": cfg.kafka_bootstrap, "socket.timeout.ms": CONNECT_TIMEOUT_S * 1000, "logger": quiet}
    )
    try:
        meta = admin.list_topics(timeout=CONNECT_TIMEOUT_S)
    except KafkaException as e:
        raise RunError(f"cannot reach Kafka at --kafka_bootstrap={cfg.kafka_bootstrap}: {e.args[0]}") from e
    topics = (("--kafka_topic", cfg.kafka_topic),) if source else ()
    for flag, topic in (*topics, ("--dlq_topic", cfg.dlq_topic)):
        if topic is not None and topic not in meta.topics:
            raise RunError(f"Kafka topic {topic!r} ({flag}) does not exist on {cfg.kafka_bootstrap}")


def _fresh_start(cfg: EventsConfig, source) -> None:
    """A source that cannot replay starts only where no earlier attempt left outputs."""
    held = [name for name in STREAM_OUTPUTS if FileSystems.exists(join_path(cfg.output, name))]
    rows = _aggregate_rows(cfg)
    if held or rows:
        what = f"{', '.join(held)} under --output" if held else ""
        what += (" and " if held else "") + (f"{rows:,} rows in PostgreSQL table {cfg.pg_table}" if rows else "")
        raise RunError(
            f"{what} hold an earlier run's results, and the {source.input_name()} cannot replay what it acknowledged "
            "to rebuild them: give a new --output and an empty aggregate table (messages not yet acknowledged are "
            "delivered to the next run)"
        )


def _clear_aggregates(cfg: EventsConfig) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(cfg.pg_dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (cfg.pg_table,)).fetchone()[0]
        if exists is not None:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(cfg.pg_table)))


def _aggregate_rows(cfg: EventsConfig) -> int:
    import psycopg
    from psycopg import sql

    with psycopg.connect(cfg.pg_dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        if conn.execute("SELECT to_regclass(%s)", (cfg.pg_table,)).fetchone()[0] is None:
            return 0  # no firing yet: the table is created by the first upsert
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(cfg.pg_table))
        return conn.execute(query).fetchone()[0]


def _show_progress(out) -> None:
    """Prints the source's progress lines ("streaming: consuming Kafka topic T partition P from
    offset O", once a worker reads each partition) on ``out``: the sign the job is consuming."""
    from transforms.ingest.kafka import PROGRESS_LOGGER

    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("streaming: %(message)s"))
    progress.handlers[:] = [handler]


def failure_line(e: Exception) -> str:
    """The line that says why a job failed: a worker's exception arrives as its traceback's last
    line ("pkg.module.SomeError: what", shown as "SomeError: what"); a gRPC error ends in ">" and
    says it in its ``details``."""
    text = str(e).strip()
    details = re.search(r'details = "([^"]*)"', text)
    if details and text.endswith(">"):
        return f"{type(e).__name__}: {details.group(1)}"
    first = (text.splitlines() or [type(e).__name__])[-1]
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", first)


@contextlib.contextmanager
def _stopped_quietly():
    """Ctrl-C (SIGINT) ends a streaming job with ``error: interrupted`` (exit 130).

    Beam's own SIGINT handler stops the job server, even in a background job that ignores
    SIGINT, and then calls the handler it replaced: this one, which raises KeyboardInterrupt.
    Beam's threads then fail on the closed connections; their tracebacks and log lines about it
    say nothing more, so they are not shown once the stop has begun (nor a thread's gRPC stream
    cut by a closed channel).
    """
    stopping = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    hook = threading.excepthook

    def interrupted(signum, frame):
        stopping.set()
        logging.disable(logging.CRITICAL)
        raise KeyboardInterrupt

    def thread_failed(args):
        # Beam's handler closes the job server before this module's runs, and a Ctrl-C in a
        # terminal stops prism too: Beam's threads fail on the closed channels (CANCELLED,
        # UNAVAILABLE) first. A job that fails says so in the main thread's error line.
        code = getattr(args.exc_value, "code", None)
        if stopping.is_set() or (callable(code) and getattr(code(), "name", "") in ("CANCELLED", "UNAVAILABLE")):
            return
        hook(args)

    previous = signal.signal(signal.SIGINT, interrupted)
    threading.excepthook = thread_failed
    try:
        yield stopping
    finally:
        signal.signal(signal.SIGINT, previous)
        if not stopping.is_set():  # once stopping, Beam's threads may still be failing
            threading.excepthook = hook


def render(s: dict) -> str:
    c = s["counts"]
    lines = [
        f"{s['pipeline']} (streaming) on {s['runner']}: {c['read']:,} records from {s['source']} "
        f"in {s['elapsed_s']:.1f} s",
        "",
    ]
    lines += [f"  {name:<14}{c[name]:>12,}" for name in ("read", "curated", "dead_lettered", "duplicates", "late")]
    if s["aggregate_rows"] is not None:
        lines.append(f"  {'aggregate rows':<14}{s['aggregate_rows']:>12,}  in PostgreSQL table {s['pg_table']}")
    if s["dead_letter_reasons"]:
        lines += [
            "",
            "  dead letters by reason: " + ", ".join(f"{k} {v:,}" for k, v in s["dead_letter_reasons"].items()),
        ]
    check = "OK" if s["conservation_ok"] else "FAILED"
    lines += [
        "",
        f"  conservation {check}: read {c['read']:,} = curated {c['curated']:,} + dead_lettered "
        f"{c['dead_lettered']:,} + duplicates {c['duplicates']:,} + late {c['late']:,}",
        "  outputs: "
        + ", ".join(
            [join_path(s["output"], "curated")] * s.get("has_curated", True)
            + [f"{join_path(s['output'], 'dlq')} (late records too)", join_path(s["output"], "_run", "report.json")]
        ),
    ]
    return "\n".join(lines) + "\n"


def run(module, cfg: EventsConfig, options, runner, run_id: str, out) -> dict:
    """Runs the streaming pipeline until its source ends (or the process is stopped)."""
    plan = module.plan_for(cfg)
    source = plan.source.step
    preflight(cfg, source)
    if getattr(source, "resumes", False):
        pass  # goes on from where its sinks are (see ReadPostgresChanges): the outputs stay
    elif getattr(source, "replays", True):
        # Rebuilt by the replay; see the module docstring.
        for name in STREAM_OUTPUTS:
            publish.discard(join_path(cfg.output, name))
        _clear_aggregates(cfg)
    else:
        _fresh_start(cfg, source)
    _show_progress(out)
    started = time.monotonic()
    with _stopped_quietly() as stopping:
        try:
            with beam.Pipeline(runner=runner, options=options) as p:
                module.build(p, cfg, module.stream_io(cfg, cfg.output))
        except Exception as e:
            if stopping.is_set():  # the job server was stopped by the interrupt, not by a failure
                raise KeyboardInterrupt from e
            raise RunError(f"streaming pipeline failed: {failure_line(e)}") from e
    elapsed = time.monotonic() - started
    path = join_path(cfg.output, "_run", "report.json")
    if FileSystems.exists(path):
        with FileSystems.open(path) as fh:
            report = json.loads(fh.read())
    else:  # nothing came: no count ever fired
        report = module.make_report({})
        with FileSystems.create(path) as fh:
            fh.write(json.dumps(report, indent=2, sort_keys=True).encode() + b"\n")
    result = {
        "run_id": run_id,
        "pipeline": module.pipeline_name(cfg),
        "streaming": True,
        "runner": options.view_as(StandardOptions).runner,
        "topic": cfg.kafka_topic if source.type == "ReadKafka" else None,
        "source": f"Kafka topic {cfg.kafka_topic}" if source.type == "ReadKafka" else source.input_name(),
        "output": cfg.output,
        "pg_table": cfg.pg_table,
        "elapsed_s": round(elapsed, 3),
        "counts": report["counts"],
        "dead_letter_reasons": report["dead_letter_reasons"],
        "quality": report["quality"],
        "conservation_ok": report["conservation_ok"],
        "aggregate_rows": _aggregate_rows(cfg) if plan.aggregates else None,
        "has_curated": FileSystems.exists(join_path(cfg.output, "curated")),
    }
    with FileSystems.create(join_path(cfg.output, "_run", "summary.json")) as fh:
        fh.write(json.dumps(result, indent=2, sort_keys=True).encode() + b"\n")
    out.write(render(result))
    out.flush()
    if not result["conservation_ok"]:
        raise RunError("conservation check failed: read != curated + dead_lettered + duplicates + late")
    return result
