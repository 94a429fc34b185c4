"""The EntityFeatures spec step: the packaged user_features spec compiles to its columns and
FeatureSet, and each mistake in a feature definition is one SpecError naming its place and line."""

from pathlib import Path

import pyarrow as pa
import pytest

from beam_pipelines.spec import EventsConfig, SpecError
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.yamlsrc import load
from transforms.feature_defs import Ratio, SessionFeature, Trailing

SPEC = Path(__file__).resolve().parents[2] / "beam_pipelines" / "pipelines" / "user_features.yaml"
TEXT = SPEC.read_text()


def cfg(**kw):
    return EventsConfig(**{"input": "in/*.jsonl", "input_format": "jsonl", "output": "out", **kw})


def compile_text(text: str, tmp_path: Path, **kw):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return compile_spec(load(str(path)), cfg(**kw), str(path))


def edited(old: str, new: str) -> str:
    assert TEXT.count(old) == 1, old
    return TEXT.replace(old, new)


def test_the_user_features_spec_compiles_to_its_feature_set_and_columns(tmp_path):
    plan = compile_text(TEXT, tmp_path)
    assert [n.step.name for n in plan.chain] == [
        "Read",
        "ParseRecords",
        "ValidateSchema",
        "Deduplicate",
        "UserFeatures",
    ]
    fs = plan.node("UserFeatures").step.feature_set()
    assert (fs.entity, fs.time, fs.keep) == ("user_id", "ts", ("event_id",))
    assert fs.features[0] == Trailing("events_1h", "count", 3600)
    assert fs.features[4] == Trailing("revenue_7d", "sum", 604800, "amount", decimals=2)
    assert fs.features[9] == SessionFeature("session_converted", "session_converted", 1800, "action == 'purchase'")
    assert fs.features[10] == Ratio("purchase_rate_7d", "purchases_7d", "events_7d")
    cols = plan.curated.columns
    assert list(cols)[:4] == ["user_id", "ts", "event_id", "events_1h"]
    assert cols["last_action"] == pa.string() and cols["session_converted"] == pa.bool_()
    assert cols["revenue_7d"] == pa.float64() and cols["purchase_rate_7d"] == pa.float64()
    assert ("UserFeatures", "dead_letters") in plan.errors
    # The later steps read the columns it needs (Deduplicate keeps them).
    assert {"user_id", "ts", "event_id", "amount", "page", "action"} <= plan.node("Deduplicate").step.later_reads


F = "pipeline.transforms[5].config"


@pytest.mark.parametrize(
    "old, new, place, message",
    [
        ("entity: user_id", "entity: usr_id", f"{F}.entity", "no column 'usr_id' reaches this step (did you mean 'user_id'?)"),
        ("        time: ts\n", "        time: page\n", f"{F}.time", "the time column 'page' must be timestamp, but it is string"),
        ("entity: user_id", "entity: amount", f"{F}.entity", "the entity column 'amount' must be string or integer"),
        ("keep: [event_id]", "keep: [user_id]", f"{F}.keep[0]", "'user_id' is already the entity column"),
        ("events_1h: {fn: count, range: 1h}", "events_1h: {fn: counts, range: 1h}", f"{F}.features.events_1h.fn",
         "must be one of count, sum"),
        ("events_1h: {fn: count, range: 1h}", "events_1h: {fn: count, range: 1x}", f"{F}.features.events_1h.range",
         "Seconds, or 90s, 1h, 7d"),
        ("events_1h: {fn: count, range: 1h}", "events_1h: {fn: count}", f"{F}.features.events_1h",
         "count needs a range"),
        ("events_1h: {fn: count, range: 1h}", "events_1h: {fn: count, range: 1h, column: page}",
         f"{F}.features.events_1h.column", "count counts events: it takes no column"),
        ("events_1h: {fn: count, range: 1h}", "events_1h: {fn: count, range: 1h, gap: 5m}",
         f"{F}.features.events_1h.gap", "count takes no gap"),
        ("range: 7d, decimals: 2}", "range: 7d}", f"{F}.features.revenue_7d", "needs decimals"),
        ("{fn: sum, column: amount,", "{fn: sum, column: page,", f"{F}.features.revenue_7d.column",
         "sum of 'page' must be integer or boolean or double or decimal, but it is string"),
        ("{fn: count_distinct, column: page,", "{fn: count_distinct, column: pages,",
         f"{F}.features.pages_24h.column", "no column 'pages' reaches this step (did you mean 'page'?)"),
        ("where: \"action == 'purchase'\"}\n          revenue", "where: \"acton == 'purchase'\"}\n          revenue",
         f"{F}.features.purchases_7d.where", "no column 'acton' reaches this step (did you mean 'action'?)"),
        ("where: \"action == 'purchase'\"}\n          revenue", "where: \"amount * 2\"}\n          revenue",
         f"{F}.features.purchases_7d.where", "must be a condition (true or false), not double"),
        ("where: \"action == 'purchase'\"}\n          revenue", "where: \"action ==\"}\n          revenue",
         f"{F}.features.purchases_7d.where", "syntax"),
        ("session_converted: {fn: session_converted, gap: 30m, where: \"action == 'purchase'\"}",
         "session_converted: {fn: session_converted, gap: 30m}", f"{F}.features.session_converted", "needs where"),
        ("{fn: session_length, gap: 30m}", "{fn: session_length, gap: 0}", f"{F}.features.session_length_s.gap",
         "e.g. 30m; got 0"),
        ("numerator: purchases_7d", "numerator: purchase_7d", f"{F}.features.purchase_rate_7d.numerator",
         "no feature 'purchase_7d' before it"),
        ("denominator: events_7d}", "denominator: last_action}", f"{F}.features.purchase_rate_7d.denominator",
         "'last_action' is string, not a number"),
        ("          events_1h: {fn: count, range: 1h}\n", "          user_id: {fn: count, range: 1h}\n",
         f"{F}.features.user_id", "'user_id' is already the entity column"),
        ("UserFeatures.dead_letters]", "]", f"{F}.error_handling.output",
         "error output UserFeatures.dead_letters is not consumed"),
    ],
)  # fmt: skip
def test_each_mistake_is_one_error_naming_its_place_and_line(tmp_path, old, new, place, message):
    text = edited(old, new).replace("ValidateSchema.dead_letters, ]", "ValidateSchema.dead_letters]")
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path)
    e = info.value
    assert e.place == place, str(e)
    assert message in e.message, str(e)
    assert str(e).startswith(f"{e.file}:{e.line}: {place}: ")
    changed = [i for i, (a, b) in enumerate(zip(TEXT.splitlines(), text.splitlines()), 1) if a != b]
    if e.place != f"{F}.error_handling.output" and changed:
        assert e.line == changed[0], str(e)


STREAM = {"streaming": True, "kafka_bootstrap": "k:9092", "kafka_topic": "t", "pg_dsn": "postgresql://x"}


def test_in_streaming_the_step_gives_the_event_time_and_an_online_output_for_postgres(tmp_path):
    plan = compile_text(TEXT, tmp_path, window_seconds=1800, allowed_lateness_seconds=300, **STREAM)
    assert [n.step.type for n in plan.chain][0] == "ReadKafka"
    assert plan.ctx.event_time == ("ts", 1800, 300)
    step = plan.node("UserFeatures").step
    assert step.outputs() == ("online",)
    online = plan.node("WriteOnline")
    assert online.step.role == "output" and online.inputs == [("UserFeatures", "online")]
    assert online.step._schema.names == [*plan.curated.columns, "_version"]
    assert {n.step.name: n.step.role for n in plan.sinks} == {
        "WriteFeatures": "curated", "WriteOnline": "output", "WriteDeadLetters": "dead_letters"}  # fmt: skip
    # Batch has no online output, and the sink that takes it is streaming only.
    batch = compile_text(TEXT, tmp_path)
    assert batch.node("UserFeatures").step.outputs() == () and batch.ctx.event_time is None


@pytest.mark.parametrize(
    "old, new, place, message",
    [
        ("input: UserFeatures.online", "input: UserFeatures.onlin", "pipeline.transforms[8].input",
         "UserFeatures has no output 'onlin' (did you mean 'online'?) (error outputs: dead_letters; outputs: online)"),
        ("keys: [user_id], version: _version}", "keys: [user_id], version: last_action}",
         "pipeline.transforms[8].config.version", "column 'last_action' must be integer, but it is string"),
        ("keys: [user_id], version: _version}", "keys: [user_id, _version], version: _version}",
         "pipeline.transforms[8].config.version", "'_version' is a key column"),
    ],
)  # fmt: skip
def test_streaming_mistakes_name_their_place(tmp_path, old, new, place, message):
    with pytest.raises(SpecError) as info:
        compile_text(edited(old, new), tmp_path, **STREAM)
    assert info.value.place == place, str(info.value)
    assert message in info.value.message, str(info.value)


def test_a_records_step_cannot_take_the_online_output(tmp_path):
    text = edited(
        "    - name: WriteOnline\n",
        "    - {name: Again, type: Select, mode: streaming, input: UserFeatures.online, config: {columns: [user_id]}}\n"
        "    - name: WriteOnline\n",
    )
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path, **STREAM)
    assert "UserFeatures.online goes to a sink" in info.value.message


def test_streamed_features_follow_the_stream_event_time(tmp_path):
    aggregate = (
        "    - name: Hourly\n      type: WindowedAggregate\n      input: UserFeatures\n"
        "      config: {time: ts, window: {type: fixed, size: 1h}, group_by: [user_id], measures: {n: {fn: count}}}\n"
        "    - {name: WriteHourly, type: WriteLake, mode: batch, input: Hourly, config: {path: hourly}}\n"
    )
    text = edited("    - name: WriteOnline\n", aggregate + "    - name: WriteOnline\n")
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path, **STREAM)
    assert info.value.place == f"{F}.streaming"
    assert "the stream's lateness comes from its first WindowedAggregate" in info.value.message
