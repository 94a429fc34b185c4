"""The redrive's parts: reading and selecting dead letters, turning them back into raw batches,
merging redriven curated rows (published rows win), and bringing the run report up to date."""

from __future__ import annotations

import json

import apache_beam as beam
import orjson
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.replay.letters import (
    LetterError,
    Selection,
    letters_format,
    parse_letters,
    raw_batches,
    replayable,
)
from beam_pipelines.replay.plan import MergeCurated, in_columns, taken_keys, without_keys
from beam_pipelines.replay.report import files_match, redrive_section, updated_report
from transforms.records import DEAD_LETTER_SCHEMA, dead_letters, json_lines


def letters(rows: list[tuple]) -> pa.Table:
    """(stage, reason, field, raw, source) rows as a DeadLetter table."""
    cols = list(zip(*rows))
    return pa.table(
        {
            "stage": pa.array(cols[0], pa.string()),
            "reason": pa.array(cols[1], pa.string()),
            "field": pa.array(cols[2], pa.string()),
            "error": pa.array([f"error {i}" for i in range(len(rows))], pa.string()),
            "raw": pa.array(cols[3], pa.string()),
            "source": pa.array(cols[4], pa.string()),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


SAMPLE = letters(
    [
        ("validate", "invalid_value", "event_type", '{"id":"a","t":"purchased!"}', "in/a.jsonl"),
        ("validate", "invalid_value", "currency", '{"id":"b","c":"US$"}', "in/a.jsonl"),
        ("validate", "missing_field", "event_type", '{"id":"c"}', "in/b.jsonl"),
        ("parse", "malformed", None, '{"id": "d", bad', "in/b.jsonl"),
        ("window", "late", None, '{"id":"e"}', "topic"),
    ]
)


# -- reading letters back ------------------------------------------------------------------


def test_letters_read_back_as_written():
    # What WriteDeadLetters writes (json_lines) reads back equal: quotes, newlines, unicode, nulls.
    table = dead_letters(
        "parse",
        pa.array(["malformed", "malformed"]),
        None,
        pa.array(['unexpected "x"\nat 3', "é"]),
        pa.array(['{"a": "tab\there", "q": "\\"x\\""}', "ünïcode \u0001 line"]),
        pa.array(["in/a.jsonl", None]),
    )
    back = parse_letters(json_lines(table).to_pybytes())
    assert back.equals(table)
    assert back.schema == DEAD_LETTER_SCHEMA


def test_a_letter_longer_than_arrows_block_reads():
    raw = '{"blob": "' + "x" * 3_000_000 + '"'
    line = orjson.dumps({"stage": "parse", "reason": "malformed", "field": None, "error": "e", "raw": raw,
                         "source": "s"})  # fmt: skip
    back = parse_letters(b"\n".join([line, line]) + b"\n")
    assert back.num_rows == 2 and back.column("raw")[1].as_py() == raw


def test_empty_letter_files_hold_no_letters():
    assert parse_letters(b"").num_rows == 0
    assert parse_letters(b"\n  \n").schema == DEAD_LETTER_SCHEMA


@pytest.mark.parametrize(
    "data, words",
    [
        (b"not json\n", "not dead-letter JSON lines"),
        (b'{"stage": "parse", "reason": "malformed", "colour": "red"}\n', "not dead-letter JSON lines"),
        (b'{"stage": "parse", "raw": "x"}\n', "without 'reason'"),
    ],
)
def test_what_is_not_a_letter_file_is_refused(data, words):
    with pytest.raises(LetterError, match=words):
        parse_letters(data, "dlq/part-00000.jsonl")


# -- selecting -----------------------------------------------------------------------------


def test_no_filter_selects_every_letter_but_late():
    assert Selection().mask(SAMPLE).tolist() == [True, True, True, True, False]


def test_filters_combine_reason_and_field():
    assert Selection(reasons=("invalid_value",)).mask(SAMPLE).tolist() == [True, True, False, False, False]
    assert Selection(fields=("event_type",)).mask(SAMPLE).tolist() == [True, False, True, False, False]
    both = Selection(reasons=("invalid_value", "missing_field"), fields=("event_type",))
    assert both.mask(SAMPLE).tolist() == [True, False, True, False, False]
    # A letter without a field never matches a field filter.
    assert Selection(reasons=("malformed",), fields=("event_type",)).mask(SAMPLE).tolist() == [False] * 5


def test_values_no_letter_has_are_named():
    sel = Selection(reasons=("invalid_value", "nope"), fields=("currency", "colour"))
    assert sel.unmatched(SAMPLE) == {"reason": ["nope"], "field": ["colour"]}
    assert sel.mask(SAMPLE).tolist() == [False, True, False, False, False]
    assert Selection(reasons=("nope",)).mask(SAMPLE).sum() == 0
    assert Selection().unmatched(SAMPLE) == {}


def test_bad_filters_are_refused():
    with pytest.raises(ValueError, match="late"):
        Selection(reasons=("late",))
    with pytest.raises(ValueError, match="--field needs a value"):
        Selection(fields=("",))


def test_records_whose_bytes_were_lost_are_not_replayed():
    table = letters(
        [
            ("parse", "malformed", None, '{"note": "caf\\xe9 \\xff"}', "a.csv"),  # undecodable bytes, escaped
            ("validate", "invalid_value", "note", '{"note": "caf\\\\xe9"}', "a.csv"),  # escaped text the record held
            ("parse", "malformed", None, '{"note": "\\x41"', "a.csv"),  # not a byte above 0x7f
            ("parse", "malformed", None, None, "a.csv"),  # no text at all
        ]
    )
    assert replayable(table).tolist() == [False, True, True, False]
    assert Selection().matches(table).tolist() == [True] * 4
    assert Selection().mask(table).tolist() == [False, True, True, False]


# -- back into raw batches -----------------------------------------------------------------


def test_letters_format_follows_their_sources():
    assert letters_format(pa.array(["in/a.jsonl", "in/b.parquet", None, "topic"])) == "jsonl"
    assert letters_format(pa.array(["in/a.csv", "in/b.csv.gz"])) == "csv"
    assert letters_format(pa.array([], pa.string())) == "jsonl"
    with pytest.raises(LetterError, match="one format only"):
        letters_format(pa.array(["in/a.csv", "in/b.jsonl"]))


def test_raw_batches_of_json_records():
    batches = raw_batches(SAMPLE.slice(0, 4), "jsonl", rows=3)
    assert [b.num_rows for b in batches] == [3, 1]
    assert batches[0].schema.names == ["raw", "source"] and batches[0].schema.field("raw").type == pa.binary()
    assert batches[0].column("raw")[0].as_py() == b'{"id":"a","t":"purchased!"}'
    assert [s for b in batches for s in b.column("source").to_pylist()] == SAMPLE.column("source").to_pylist()[:4]
    assert raw_batches(SAMPLE.slice(0, 0), "jsonl") == []


def test_raw_batches_of_csv_rows_carry_their_sources_header():
    table = letters(
        [
            ("validate", "invalid_value", "t", "b,purchased!", "in/2.csv"),
            ("validate", "invalid_value", "t", "a,purchased!", "in/1.csv"),
            ("validate", "invalid_value", "t", "c,purchased!", "in/2.csv"),
        ]
    )
    headers = {"in/1.csv": ["id", "t"], "in/2.csv": ["t", "id"]}
    batches = raw_batches(table, "csv", headers)
    assert [b.column("source").to_pylist() for b in batches] == [["in/1.csv"], ["in/2.csv", "in/2.csv"]]
    assert [json.loads(b.schema.metadata[b"csv_header"]) for b in batches] == [["id", "t"], ["t", "id"]]
    assert batches[1].column("raw").to_pylist() == [b"b,purchased!", b"c,purchased!"]


# -- merging curated rows ------------------------------------------------------------------

SCHEMA = pa.schema([("event_id", pa.string()), ("n", pa.int32()), ("note", pa.string())])


def curated(ids: list[str], n: int, note: str) -> pa.Table:
    return pa.table({"event_id": ids, "n": pa.array([n] * len(ids), pa.int32()), "note": [note] * len(ids)},
                    schema=SCHEMA)  # fmt: skip


def test_rows_are_brought_to_the_curated_columns():
    given = pa.table({"_raw": ["r"], "note": ["x"], "n": pa.array([7], pa.int64()), "event_id": ["a"]})
    out = in_columns(given, SCHEMA)
    assert out.schema == SCHEMA and out.to_pylist() == [{"event_id": "a", "n": 7, "note": "x"}]


def test_taken_and_remaining_keys():
    table = curated(["a", "b", "c"], 1, "x")
    assert taken_keys(table, "event_id", pa.array(["c", "z", "a"])).to_pylist() == ["a", "c"]
    assert taken_keys(table, "event_id", pa.array([], pa.string())).to_pylist() == []
    assert without_keys(table, "event_id", pa.array(["b"])).column("event_id").to_pylist() == ["a", "c"]


def test_published_rows_win_their_keys(pipeline):
    published = [curated(["a", "b"], 1, "published"), curated(["c"], 1, "published"), curated([], 1, "published")]
    redriven = [curated(["b", "d"], 2, "redriven"), curated(["e", "c"], 2, "redriven")]
    with pipeline() as p:
        pub = p | "Published" >> beam.Create(published)
        red = p | "Redriven" >> beam.Create(redriven)
        out = (pub, red) | MergeCurated(SCHEMA, "event_id")
        rows = out["merged"] | "Rows" >> beam.FlatMap(lambda t: [(r["event_id"], r["note"]) for r in t.to_pylist()])
        expected = [("a", "published"), ("b", "published"), ("c", "published"), ("d", "redriven"), ("e", "redriven")]
        assert_that(rows, equal_to(expected), label="rows")
        schemas = out["merged"] | "Schemas" >> beam.Map(lambda t: t.schema == SCHEMA)
        assert_that(schemas, lambda got: got and all(got), label="schemas")
        dups = out["stats"] | "Dups" >> beam.Map(lambda d: d["merge_duplicates"]) | beam.CombineGlobally(sum)
        assert_that(dups, equal_to([2]), label="dups")


def test_nothing_redriven_leaves_the_published_rows(pipeline):
    with pipeline() as p:
        pub = p | "Published" >> beam.Create([curated(["a", "b"], 1, "published")])
        red = p | "Redriven" >> beam.Create([curated([], 2, "redriven")])
        out = (pub, red) | MergeCurated(SCHEMA, "event_id")
        rows = out["merged"] | "Rows" >> beam.FlatMap(lambda t: t.column("event_id").to_pylist())
        assert_that(rows, equal_to(["a", "b"]), label="rows")
        assert_that(out["stats"], equal_to([]), label="stats")


def test_without_a_key_rows_are_unioned(pipeline):
    with pipeline() as p:
        pub = p | "Published" >> beam.Create([curated(["a"], 1, "published")])
        red = p | "Redriven" >> beam.Create([curated(["a"], 2, "redriven")])
        out = (pub, red) | MergeCurated(SCHEMA, None)
        rows = out["merged"] | "Rows" >> beam.FlatMap(lambda t: [(r["event_id"], r["n"]) for r in t.to_pylist()])
        assert_that(rows, equal_to([("a", 1), ("a", 2)]))


def test_merge_config_errors():
    with pytest.raises(ValueError, match="key 'id'"):
        MergeCurated(SCHEMA, "id")


# -- the report ----------------------------------------------------------------------------

ORIGINAL = {
    "counts": {"read": 100, "curated": 80, "dead_lettered": 15, "duplicates": 3, "late": 2, "aggregates": 40},
    "dead_letter_reasons": {"invalid_value": 10, "malformed": 5},
    "quality": {"invalid_email": 4},
    "conservation_ok": True,
    "drift": {"unknown_fields": {"session_id": {"records": 9}}},
    "expectations": [{"name": "has_rows", "passed": True}],
}
# Replayed 8 invalid_value letters: 6 passed, 1 was a duplicate in the replay, 1 matched a published key;
# 1 of the 6 passing was that one, so 5 joined; 1 still fails (now missing_field).
RUN = {
    "read": 8,
    "curated": 6,
    "duplicates": 1,
    "merge_duplicates": 1,
    "dead_lettered": 1,
    "dead_lettered.missing_field": 1,
    "quality.invalid_email": 2,
    "merged": 85,
    "aggregates": 43,
}
KEPT = {"invalid_value": 2, "malformed": 5, "late": 2}


def test_redrive_section_accounts_for_every_selected_letter():
    section = redrive_section(RUN, selected=8, letters=17, meta={"run_id": "r1"})
    assert (section["passed"], section["duplicates"], section["still_failing"]) == (5, 2, 1)
    assert section["still_failing_reasons"] == {"missing_field": 1}
    assert section["conservation_ok"] is True and section["run_id"] == "r1"
    assert redrive_section(RUN, selected=9, letters=17, meta={})["conservation_ok"] is False


def test_report_after_a_redrive_conserves_the_original_records():
    section = redrive_section(RUN, selected=8, letters=17, meta={})
    report = updated_report(ORIGINAL, RUN, KEPT, section)
    c = report["counts"]
    assert c == {"read": 100, "curated": 85, "dead_lettered": 8, "duplicates": 5, "late": 2, "aggregates": 43}
    assert c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    assert report["conservation_ok"] is True
    assert report["dead_letter_reasons"] == {"invalid_value": 2, "malformed": 5, "missing_field": 1}
    assert report["quality"] == {"invalid_email": 6}
    # What the redrive did not redo stays as the run left it; the redrive section is the latest.
    assert report["drift"] == ORIGINAL["drift"] and report["expectations"] == ORIGINAL["expectations"]
    assert report["redrive"] is section
    again = updated_report({**report, "redrive": {"old": True}}, {"merged": 85, "aggregates": 43}, {**KEPT}, {})
    assert again["redrive"] == {}


def test_a_report_whose_letters_went_missing_fails_conservation():
    section = redrive_section(RUN, selected=8, letters=17, meta={})
    report = updated_report(ORIGINAL, RUN, {"malformed": 5, "late": 2}, section)
    assert report["conservation_ok"] is False


def test_files_match_counts_late_letters_as_dead_letter_rows():
    counts = {"curated": 85, "dead_lettered": 8, "late": 2, "aggregates": 43}
    assert files_match(counts, {"curated_rows": 85, "dead_letter_rows": 10, "aggregate_rows": 43})
    assert not files_match(counts, {"curated_rows": 85, "dead_letter_rows": 8, "aggregate_rows": 43})
