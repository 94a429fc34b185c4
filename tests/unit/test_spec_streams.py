"""The ReadPubSub and ReadKinesis spec sources: their config checked with placed errors, and
the composites they make (window and lateness from the pipeline's windowed aggregate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.build import spec_path
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import load
from transforms.ingest.kinesis import ReadKinesis
from transforms.ingest.pubsub import ReadPubSub

SESSIONS = Path(spec_path("sessions")).read_text()
KAFKA = next(line for line in SESSIONS.splitlines() if "type: ReadKafka" in line)
SUB = "projects/my-project/subscriptions/events"


def spec(source: str) -> str:
    return SESSIONS.replace(KAFKA, f"    - {source}")


def plan_of(text: str, tmp_path: Path, **kw):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    cfg = EventsConfig(**{"input": None, "input_format": "jsonl", "output": str(tmp_path / "out"), "streaming": True,
                          "pg_dsn": "postgresql://x", "allowed_lateness_seconds": 120, **kw})  # fmt: skip
    return compile_spec(load(str(path)), cfg, str(path))


def error_of(text: str, tmp_path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        plan_of(text, tmp_path)
    return info.value


def test_pubsub_source_makes_the_reader_with_the_aggregates_lateness(tmp_path):
    plan = plan_of(
        spec(f"{{name: Read, type: ReadPubSub, mode: streaming, config: {{subscription: {SUB}}}}}"), tmp_path
    )
    step = plan.source.step
    assert step.type == "ReadPubSub" and step.input_name() == f"Pub/Sub subscription {SUB}"
    assert plan.ctx.live and not step.replays
    read = step.make(str(tmp_path))
    assert isinstance(read, ReadPubSub)
    assert read._spec["lateness_seconds"] == 120 and read._spec["idle_seconds"] is None
    bounded = plan_of(spec(f"{{name: Read, type: ReadPubSub, mode: streaming, config: {{subscription: {SUB}, "
                           "emulator_host: '127.0.0.1:8085', stop_after_idle: 2.5}}"), tmp_path)  # fmt: skip
    assert not bounded.ctx.live
    spec_ = bounded.source.step.make(str(tmp_path))._spec
    assert spec_["idle_seconds"] == 2.5 and spec_["emulator_host"] == "127.0.0.1:8085"


def test_kinesis_source_makes_the_reader(tmp_path):
    text = spec("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: clicks, region: eu-west-1, "
                "endpoint_url: 'http://127.0.0.1:4567', stop_at_end: true}}")  # fmt: skip
    plan = plan_of(text, tmp_path)
    step = plan.source.step
    assert step.input_name() == "Kinesis stream clicks" and step.replays and not plan.ctx.live
    read = step.make(str(tmp_path))
    assert isinstance(read, ReadKinesis)
    assert read._spec["region"] == "eu-west-1" and read._spec["stop_at_end"] and read._spec["lateness_seconds"] == 120


@pytest.mark.parametrize(
    "source, place, message",
    [
        ("{name: Read, type: ReadPubSub, mode: streaming, config: {subscription: my-sub}}",
         "config.subscription", "got 'my-sub'"),
        ("{name: Read, type: ReadPubSub, mode: streaming, config: {subscription: projects/ab/subscriptions/s}}",
         "config.subscription", "projects/<project>/subscriptions/<name>"),
        (f"{{name: Read, type: ReadPubSub, mode: streaming, config: {{subscription: {SUB}, stop_after_idle: 0}}}}",
         "config.stop_after_idle", "0.1"),
        (f"{{name: Read, type: ReadPubSub, mode: streaming, config: {{subscription: {SUB}, emulator_host: x}}}}",
         "config.emulator_host", "host:port of a Pub/Sub emulator"),
        ("{name: Read, type: ReadPubSub, mode: streaming, config: {}}", "config", "subscription"),
        ("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: 'a b'}}", "config.stream", "got 'a b'"),
        ("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: s, region: Mars}}",
         "config.region", "AWS region"),
        ("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: s, endpoint_url: 'localhost:4567'}}",
         "config.endpoint_url", "got 'localhost:4567'"),
        ("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: s, shards: 2}}", "config.shards", "unknown key"),
    ],
)  # fmt: skip
def test_a_bad_config_is_an_error_at_its_place(tmp_path, source, place, message):
    text = spec(source)
    e = error_of(text, tmp_path)
    assert e.place.startswith(f"pipeline.transforms[1].{place}"), e
    assert message in e.message
    assert e.line == next(i for i, line in enumerate(text.splitlines(), 1) if source in line)


def test_the_stream_sources_are_streaming_only_and_need_an_event_time(tmp_path):
    text = spec(f"{{name: Read, type: ReadPubSub, config: {{subscription: {SUB}}}}}").replace("mode: batch, ", "")
    with pytest.raises(SpecError, match="streaming"):
        compile_spec(load(str(_write(tmp_path, text))), EventsConfig(input="x.jsonl", input_format="jsonl",
                                                                    output="out"), "spec.yaml")  # fmt: skip
    no_window = spec("{name: Read, type: ReadKinesis, mode: streaming, config: {stream: s}}")
    start = no_window.index("    - name: UserSessions")
    end = no_window.index("    - name: WriteCurated")
    no_window = no_window[:start] + no_window[end:]
    no_window = no_window[: no_window.index("    - name: WriteSessions")] + no_window[no_window.index(
        "    - name: WriteDeadLetters"):]  # fmt: skip
    e = error_of(no_window, tmp_path)
    assert e.place == "pipeline.transforms[1]" and "needs an event time" in e.message


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path
