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


F = "pipeline.transforms[4].config"


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


def test_features_run_in_batch_mode_only_for_now(tmp_path):
    read = '{name: Read, type: ReadFiles, config: {path: "${input}", format: "${input_format}"}}'
    kafka = '{name: Read, type: ReadKafka, config: {bootstrap: "${kafka_bootstrap}", topic: "${kafka_topic}"}}'
    text = edited(read, kafka)
    with pytest.raises(SpecError) as info:
        compile_text(text, tmp_path, streaming=True, kafka_bootstrap="k:9092", kafka_topic="t", pg_dsn="postgresql://x")
    assert info.value.place == "pipeline.transforms[4].type"
    assert "EntityFeatures runs in batch mode only" in info.value.message
