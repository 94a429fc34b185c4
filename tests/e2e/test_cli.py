"""The CLI end to end: every format, the report, re-runs, and bad input."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import aggregates, cli, curated, datagen, dead_letters, file_bytes, one_line_error, report

FORMATS = ("jsonl", "csv", "avro", "parquet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One dirty data set per format (same records), each run through the CLI."""
    base = tmp_path_factory.mktemp("formats")
    results = {}
    for fmt in FORMATS:
        data = datagen(base / f"in-{fmt}", fmt, rows=4000, dirty=0.25, files=2)
        out = base / f"out-{fmt}"
        proc = cli("--pipeline=events", "--runner=DirectRunner", f"--input={data}/*.{fmt}", f"--output={out}")
        results[fmt] = (proc, out)
    return results


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_runs_and_conserves(runs, fmt):
    proc, out = runs[fmt]
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    c = rep["counts"]
    assert c["read"] == 4000
    assert rep["conservation_ok"] is True
    assert c["read"] == c["curated"] + c["dead_lettered"] + c["duplicates"] + c["late"]
    assert c["duplicates"] > 0 and c["dead_lettered"] > 0 and c["late"] == 0
    # The report's numbers are the files' numbers.
    assert curated(out).num_rows == c["curated"]
    assert aggregates(out).num_rows == c["aggregates"]
    dlq = dead_letters(out)
    assert len(dlq) == c["dead_lettered"] == sum(rep["dead_letter_reasons"].values())
    assert {"missing_field", "invalid_value"} <= set(rep["dead_letter_reasons"])
    assert rep["quality"]["invalid_email"] > 0 and rep["quality"]["invalid_country"] > 0
    assert all(set(d) == {"stage", "reason", "field", "error", "raw", "source"} for d in dlq)
    assert all(d["source"].endswith(f".{fmt}") for d in dlq)
    # Hive-style date partitions.
    parts = sorted(p.name for p in (out / "curated").iterdir())
    assert parts and all(p.startswith("dt=2024-03-") for p in parts)
    # The summary names the stages and the outputs.
    assert "conservation OK" in proc.stdout and "rows/s" in proc.stdout and str(out / "curated") in proc.stdout


@pytest.mark.parametrize("fmt", ("jsonl", "csv"))
def test_text_formats_reject_malformed_lines(runs, fmt):
    rep = report(runs[fmt][1])
    assert rep["dead_letter_reasons"]["malformed"] > 0


def test_formats_holding_the_same_records_agree(runs):
    # jsonl and csv carry the same records (and the same text-only problems); so do avro and parquet.
    for a, b in (("jsonl", "csv"), ("avro", "parquet")):
        ca, cb = curated(runs[a][1]), curated(runs[b][1])
        assert ca.equals(cb), f"{a} and {b} curated outputs differ"
        assert aggregates(runs[a][1]).equals(aggregates(runs[b][1]))


def test_curated_schema(runs):
    table = curated(runs["jsonl"][1])
    assert table.column_names == [
        "event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "email_domain",
        "country", "hour_of_day", "day_of_week", "is_weekend", "extras",
    ]  # fmt: skip
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert len(set(table.column("event_id").to_pylist())) == table.num_rows
    aggs = aggregates(runs["jsonl"][1])
    assert aggs.column_names == [
        "window_start", "window_end", "event_type", "country", "events", "users", "amount_sum",
    ]  # fmt: skip
    assert sum(aggs.column("events").to_pylist()) == table.num_rows


def test_rerun_is_byte_identical_and_replaces_old_files(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=3000, dirty=0.2)
    out = tmp_path / "out"
    first = cli(f"--input={data}/*.jsonl", f"--output={out}", "--curated_buckets=3")
    assert first.returncode == 0, first.stderr
    three = file_bytes(out / "curated")
    assert any(name.endswith("part-00002.parquet") for name in three)
    second = cli(f"--input={data}/*.jsonl", f"--output={out}")
    assert second.returncode == 0, second.stderr
    once = {**file_bytes(out / "curated"), **{"agg/" + k: v for k, v in file_bytes(out / "aggregates").items()}}
    assert not any(name.endswith("part-00002.parquet") for name in once), "files of the earlier run were left"
    third = cli(f"--input={data}/*.jsonl", f"--output={out}")
    assert third.returncode == 0, third.stderr
    twice = {**file_bytes(out / "curated"), **{"agg/" + k: v for k, v in file_bytes(out / "aggregates").items()}}
    assert once == twice
    assert not (out / "_staging").exists()
    assert report(out)["counts"]["curated"] == curated(out).num_rows


def test_oversized_and_undecodable_records(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    big_extra = "x" * 300_000
    lines = [
        json.dumps(
            {"event_id": "big", "user_id": "u", "event_type": "view", "ts": "2024-01-01T00:00:00Z", "blob": big_extra}
        ).encode(),  # fmt: skip
        b'{"event_id": "bad-big", "blob": "' + b"y" * 300_000 + b'"',
        b'{"event_id": "bytes", "user_id": "\xff\xfe", "event_type": "view", "ts": 1}',
        b"",
        b"   ",
    ]
    (inp / "edge.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    proc = cli(f"--input={inp}/*.jsonl", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    assert rep["counts"]["read"] == 3  # blank lines are skipped, not counted
    assert rep["counts"]["curated"] == 1 and rep["dead_letter_reasons"] == {"malformed": 2}
    assert json.loads(curated(out).column("extras")[0].as_py())["blob"] == big_extra
    raws = sorted(d["raw"] for d in dead_letters(out))
    assert raws[0].startswith('{"event_id": "bad-big"') and len(raws[0]) > 300_000
    assert "\\xff\\xfe" in raws[1]


def test_strict_policy_dead_letters_unknown_fields(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jsonl").write_text(
        '{"event_id": "1", "user_id": "u", "event_type": "view", "ts": 1704067200, "x": 1}\n'
        '{"event_id": "2", "user_id": "u", "event_type": "view", "ts": 1704067200}\n'
    )
    out = tmp_path / "out"
    proc = cli(f"--input={inp}/*.jsonl", f"--output={out}", "--schema_policy=strict")
    assert proc.returncode == 0, proc.stderr
    assert report(out)["dead_letter_reasons"] == {"unknown_field": 1}
    assert dead_letters(out)[0]["field"] == "x"


def test_format_taken_from_extension_and_flag(tmp_path):
    data = datagen(tmp_path / "in", "csv", rows=200, dirty=0.0)
    (data / "events-00000.csv").rename(data / "events.txt")
    out = tmp_path / "out"
    proc = cli(f"--input={data}/*.txt", f"--output={out}")
    assert proc.returncode == 2 and "input format" in proc.stderr
    proc = cli(f"--input={data}/*.txt", f"--output={out}", "--input_format=csv")
    assert proc.returncode == 0, proc.stderr
    assert report(out)["counts"]["curated"] > 0


def test_bad_flags_exit_2_with_one_line(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=10, dirty=0.0)
    ok = [f"--input={data}/*.jsonl", f"--output={tmp_path / 'out'}"]
    assert "--inptu" in one_line_error(cli(*ok, "--inptu=x"), 2)
    assert "did you mean --input" in one_line_error(cli(*ok, "--inpt=x"), 2)
    assert "unknown pipeline" in one_line_error(cli(*ok, "--pipeline=nope"), 2)
    assert "runner" in one_line_error(cli(*ok, "--runner=NoSuchRunner"), 2)
    assert "--input is required" in one_line_error(cli(f"--output={tmp_path}"), 2)
    assert "--output is required" in one_line_error(cli(f"--input={data}/*.jsonl"), 2)
    assert "--input_format" in one_line_error(cli(*ok, "--input_format=xml"), 2)
    assert "--shuffle_partitions" in one_line_error(cli(*ok, "--shuffle_partitions=0"), 2)
    assert not (tmp_path / "out").exists()


def test_bad_input_and_output_exit_1(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=10, dirty=0.0)
    assert "no file matches" in one_line_error(cli(f"--input={tmp_path}/none/*.jsonl", f"--output={tmp_path}/o"), 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_line_error(cli(f"--input={data}/*.jsonl", f"--output={blocker}/out"), 1)
    assert "not writable" in line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_failed_run_keeps_previous_outputs(tmp_path, workers):
    data = datagen(tmp_path / "in", "parquet", rows=500, dirty=0.0)
    out = tmp_path / "out"
    assert cli(f"--input={data}/*.parquet", f"--output={out}").returncode == 0
    before = file_bytes(out / "curated")
    (data / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    # The error comes back the same way from a worker process.
    line = one_line_error(cli(f"--input={data}/*.parquet", f"--output={out}", f"--local_workers={workers}"), 1)
    assert "pipeline failed" in line
    assert file_bytes(out / "curated") == before
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())


def test_help_lists_the_flags():
    proc = cli("--help")
    assert proc.returncode == 0
    for flag in ("--input", "--input_format", "--output", "--schema_policy", "--pipeline", "--log_level"):
        assert flag in proc.stdout


def test_bookkeeping_files_beside_the_data_are_skipped(tmp_path):
    # Spark's _SUCCESS, a .crc and a marker match "*" but are not data; without the rule an
    # empty _SUCCESS fails a parquet read.
    data = datagen(tmp_path / "in", "parquet", rows=500, dirty=0.0)
    (data / "_SUCCESS").write_bytes(b"")
    (data / ".part-0.parquet.crc").write_bytes(b"\x00crc")
    proc = cli(f"--input={data}/*", "--input_format=parquet", f"--output={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    assert report(tmp_path / "out")["counts"]["read"] == 500
    # Only bookkeeping files matched: said so, nothing read.
    only = cli(f"--input={data}/*S", "--input_format=parquet", f"--output={tmp_path / 'out2'}")
    assert "hidden file(s) named _* or .* are not data" in one_line_error(only, 1)


def test_worker_processes_give_the_same_outputs(tmp_path):
    data = datagen(tmp_path / "in", "jsonl", rows=6000, dirty=0.25, files=3)
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out-{workers}"
        proc = cli(f"--input={data}/*.jsonl", f"--output={out}", f"--local_workers={workers}", "--history=none",
                   "--log_level=INFO")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert ("(2 worker processes)" in proc.stdout) == (workers == "2")
        # Workers are forked before the run (beam_pipelines.warm_workers), not started cold.
        assert ("forked 2 worker processes before the run" in proc.stderr) == (workers == "2")
        files = {d + "/" + k: v for d in ("curated", "aggregates", "dlq") for k, v in file_bytes(out / d).items()}
        outputs[workers] = (files, report(out)["counts"])
    assert outputs["1"][1]["read"] == 6000 and outputs["1"][1]["duplicates"] > 0
    assert outputs["1"] == outputs["2"]
