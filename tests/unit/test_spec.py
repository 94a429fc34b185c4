"""The spec loader and checker: a case per kind of mistake, each one SpecError naming the file,
the line and the place; and the events spec compiling to the pipeline's composites."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from beam_pipelines.pipelines import events
from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.__main__ import main as spec_main
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.contract_rules import rules_for
from beam_pipelines.spec.jsonschema import spec_schema
from beam_pipelines.spec.yamlsrc import load, load_text

EVENTS = Path(events.__file__).with_name("events.yaml")
TEXT = EVENTS.read_text()


def cfg(**kw):
    return EventsConfig(**{"input": "in/*.jsonl", "input_format": "jsonl", "output": "out", **kw})


def compile_text(text: str, tmp_path: Path, **kw):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    # Relative paths (the expectations file) resolve beside the packaged spec.
    (tmp_path / "events.expectations.yaml").write_text(EVENTS.with_name("events.expectations.yaml").read_text())
    return compile_spec(load(str(path)), cfg(**kw), str(path))


def error_of(text: str, tmp_path: Path, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path, **kw)
    return info.value


def edited(old: str, new: str) -> str:
    assert TEXT.count(old) == 1, old
    return TEXT.replace(old, new)


def line_with(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_events_spec_compiles_to_the_pipelines_rules_and_columns(tmp_path):
    plan = compile_text(TEXT, tmp_path)
    assert rules_for(plan.ctx.contract) == events.RULES
    assert [n.step.name for n in plan.chain] == [
        "Read", "ParseRecords", "ValidateSchema", "Cleanse", "Deduplicate", "AddFeatures", "CheckExpectations",
        "SelectCurated",
    ]  # fmt: skip
    assert [(n.step.name, n.step.role) for n in plan.sinks] == [
        ("WriteCurated", "curated"), ("WriteAggregates", "aggregates"), ("WriteDeadLetters", "dead_letters")
    ]  # fmt: skip
    streaming = compile_text(
        TEXT, tmp_path, streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x"
    )
    assert [n.step.type for n in streaming.sinks] == ["WriteLake", "UpsertPostgres", "WriteDeadLetters"]
    assert streaming.ctx.event_time == ("ts", 3600, 600)


@pytest.mark.parametrize(
    "old, new, place, message",
    [
        ("type: Deduplicate", "type: Deduplicat", "pipeline.transforms[5].type", "did you mean 'Deduplicate'?"),
        ("{key: event_id, order_by", "{kye: event_id, order_by", "pipeline.transforms[5].config.kye",
         "unknown key (did you mean 'key'?)"),
        ("config: {key: event_id, order_by: [ts, _raw]}", "config: {order_by: [ts, _raw]}",
         "pipeline.transforms[5].config", "missing required key 'key'"),
        ("{key: event_id, order_by", "{key: evnt_id, order_by", "pipeline.transforms[5].config.key",
         "no column 'evnt_id' reaches this step (did you mean 'event_id'?)"),
        ("{column: country, rule: country_code}", "{column: ts, rule: country_code}",
         "pipeline.transforms[4].config.rules[1].column", "column 'ts' must be string, but it is timestamp"),
        ("        time: ts\n", "        time: event_type\n", "pipeline.transforms[9].config.time",
         "the window's time column 'event_type' must be timestamp, but it is string"),
        ('size: "${window_seconds}"', "size: 1x", "pipeline.transforms[9].config.window.size",
         "Seconds, or a string like 90s"),
        ('{type: fixed, size: "${window_seconds}"}', "{type: sliding, size: 1h, period: 7m}",
         "pipeline.transforms[9].config.window.period", "must divide the size (3600s) into whole periods"),
        ("users: {fn: count_distinct, column: user_id}", "users: {fn: sum, column: user_id}",
         "pipeline.transforms[9].config.measures.users.column", "sum of 'user_id' must be integer or double"),
        ("users: {fn: count_distinct, column: user_id}", "users: {fn: median, column: user_id}",
         "pipeline.transforms[9].config.measures.users.fn", "must be one of count, count_distinct"),
        ("input: [ParseRecords.dead_letters, ValidateSchema.dead_letters, CheckExpectations.dead_letters]",
         "input: [ParseRecords.dead_letters, CheckExpectations.dead_letters]",
         "pipeline.transforms[3].config.error_handling.output", "error output ValidateSchema.dead_letters is not consumed"),
        ("input: [ParseRecords.dead_letters,", "input: [ParseRecord.dead_letters,",
         "pipeline.transforms[13].input", "no step named 'ParseRecord' in batch mode (did you mean 'ParseRecords'?)"),
        ("ValidateSchema.dead_letters, CheckExpectations", "ValidateSchema.dead_letter, CheckExpectations",
         "pipeline.transforms[13].input", "ValidateSchema has no output 'dead_letter' (did you mean 'dead_letters'?)"),
        ("      input: SelectCurated\n      config:\n        time", "      input: WriteCurated\n      config:\n        time",
         "pipeline.transforms[9].input", "'WriteCurated' comes later in the file"),
        ("      input: SelectCurated\n      config:\n        time", "      input: Cleanse\n      config:\n        time",
         "pipeline.transforms[9].input", "takes the final records (SelectCurated)"),
        ('unknown_fields: "${schema_policy}"', 'unknown_fields: "${schema_polcy}"',
         "pipeline.transforms[3].config.unknown_fields", "unknown parameter ${schema_polcy} (did you mean 'schema_policy'?)"),
        ("{path: curated, partition_by: ts,", "{path: ../curated, partition_by: ts,",
         "pipeline.transforms[10].config.path", "A directory under --output"),
        ("contract: events@1", "contract: evnts@1", "pipeline.contract", "no contract 'evnts' in"),
        ("    - name: Cleanse\n      type: Cleanse\n", "    - name: Deduplicate\n      type: Cleanse\n",
         "pipeline.transforms[5].name", "step name 'Deduplicate' is already used by transforms[4]"),
    ],
)  # fmt: skip
def test_each_mistake_is_one_error_naming_its_place_and_line(tmp_path, old, new, place, message):
    text = edited(old, new)
    e = error_of(text, tmp_path)
    assert e.place == place, str(e)
    assert message in e.message, str(e)
    assert e.file.endswith("spec.yaml") and e.line > 0
    assert str(e).startswith(f"{e.file}:{e.line}: {place}: ")


def test_the_line_is_the_culprits_line(tmp_path):
    text = edited("{key: event_id, order_by", "{key: evnt_id, order_by")
    assert error_of(text, tmp_path).line == line_with(text, "evnt_id")
    text = edited("type: Deduplicate", "type: Deduplicat")
    assert error_of(text, tmp_path).line == line_with(text, "type: Deduplicat")


def test_a_missing_flag_is_named(tmp_path):
    text = edited('size: "${window_seconds}"', "size: 7s")
    e = error_of(text, tmp_path, streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    assert e.place == "pipeline.transforms[9].config.window.size" and "must divide a day when streaming" in e.message
    plan = compile_text(TEXT, tmp_path, input=None)
    with pytest.raises(SpecError, match=r"pipeline.transforms\[0\].config.path: --input is required"):
        plan.check_io()


def test_yaml_is_read_safely_and_strictly():
    with pytest.raises(SpecError, match=r"<spec>:2: malformed YAML"):
        load_text("a: 1\nb: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match=r"<spec>:2: duplicate key 'a'"):
        load_text("a: 1\na: 2\n")
    with pytest.raises(SpecError, match=r"<spec>:2: malformed YAML"):
        load_text("a: [1, 2\n")


def test_streaming_only_and_batch_only_steps_need_a_mode(tmp_path):
    text = edited("      type: ReadFiles\n      mode: batch\n", "      type: ReadFiles\n")
    e = error_of(text, tmp_path, streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    assert e.place == "pipeline.transforms[0].type" and "runs in batch mode only" in e.message


def test_the_published_json_schema_accepts_the_spec_and_refuses_mistakes():
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = yaml.safe_load(TEXT)
    jsonschema.validate(doc, schema)
    for path, value in [(("config", "kye"), 1), (("config", "key"), 3), (("confg",), {})]:
        bad = yaml.safe_load(TEXT)
        node = bad["pipeline"]["transforms"][5]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_packaged_specs_point_editors_at_a_current_json_schema():
    """templates/spec.schema.json is what `python -m beam_pipelines.spec schema` writes today
    (`make spec-schema` refreshes it), so the packaged specs' modelines validate against it."""
    root = Path(__file__).resolve().parents[2]
    assert json.loads((root / "templates" / "spec.schema.json").read_text()) == json.loads(json.dumps(spec_schema()))
    for name in ("events", "orders", "sessions"):
        text = (root / "beam_pipelines" / "pipelines" / f"{name}.yaml").read_text()
        assert "# yaml-language-server: $schema=../../templates/spec.schema.json" in text


def test_spec_cli_schema_check_and_types(tmp_path, capsys):
    assert spec_main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "beam-pipelines pipeline spec"
    assert spec_main(["check", "events"]) == 0
    out = capsys.readouterr().out
    assert "pipeline events (batch)" in out and "pipeline events (streaming)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEXT.replace("type: Deduplicate", "type: Dedupe"))
    assert spec_main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:") and "did you mean 'Deduplicate'?" in err
    assert spec_main(["types"]) == 0
    assert "WindowedAggregate (aggregate; batch/streaming)" in capsys.readouterr().out


def test_the_postgres_sinks_retry_budget_is_set_in_the_spec(tmp_path):
    keys = "keys: [window_start, event_type, country]}"
    kw = dict(streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    plan = compile_text(edited(keys, keys[:-1] + ", retry_for_seconds: 45}"), tmp_path, **kw)
    (sink,) = [n.step for n in plan.sinks if n.step.type == "UpsertPostgres"]
    assert sink.make(str(tmp_path))._args[-1] == 45.0
    default = compile_text(TEXT, tmp_path, **kw)
    (sink,) = [n.step for n in default.sinks if n.step.type == "UpsertPostgres"]
    assert sink.make(str(tmp_path))._args[-1] == 300.0
    error = error_of(edited(keys, keys[:-1] + ", retry_for_seconds: 0}"), tmp_path, **kw)
    assert "retry_for_seconds" in str(error)


def test_the_postgres_sinks_row_security_is_set_and_checked_in_the_spec(tmp_path):
    keys = "keys: [window_start, event_type, country]}"
    kw = dict(streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    rls = ", row_security: {column: country, roles: {US: us_readers, DE: de_readers}, shared_role: app}}"
    plan = compile_text(edited(keys, keys[:-1] + rls), tmp_path, **kw)
    (sink,) = [n.step for n in plan.sinks if n.step.type == "UpsertPostgres"]
    security = sink.make(str(tmp_path))._row_security
    assert (security.column, security.roles, security.shared_role) == (
        "country", {"US": "us_readers", "DE": "de_readers"}, "app")  # fmt: skip
    not_a_key = error_of(edited(keys, keys[:-1] + rls.replace("column: country", "column: users")), tmp_path, **kw)
    assert "must be one of keys" in str(not_a_key) and "row_security.column" in str(not_a_key)
    twice = error_of(edited(keys, keys[:-1] + rls.replace("de_readers", "us_readers")), tmp_path, **kw)
    assert "each role reads one tenant" in str(twice)
    hostile = error_of(edited(keys, keys[:-1] + rls.replace("app}", '"app; DROP ROLE x"}')), tmp_path, **kw)
    assert "shared_role" in str(hostile)
