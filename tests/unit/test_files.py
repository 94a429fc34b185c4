import io
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.ingest.files import ReadFiles, _iter_range_lines, format_from_path, is_hidden


class _NoRereads(io.BytesIO):
    """A stream that cannot go back to the unfinished line (seeks only to a range's start)."""

    def seekable(self):
        return False


def _lines_of(data: bytes, bounds: list[int], chunk: int, stream=io.BytesIO) -> list[bytes]:
    out = []
    for start, end in zip(bounds, bounds[1:]):
        for lines in _iter_range_lines(stream(data), start, end, chunk):
            out.extend(lines.to_pylist())
    return out


@pytest.mark.parametrize("stream", [io.BytesIO, _NoRereads])
@pytest.mark.parametrize("seed", range(30))
def test_byte_ranges_read_every_line_exactly_once(seed, stream):
    rng = random.Random(seed)
    lines = [("x" * rng.randint(0, 40)).encode() + str(i).encode() for i in range(rng.randint(1, 60))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 8))))
    bounds = [0] + cuts + [len(data)]
    assert _lines_of(data, bounds, chunk=rng.choice([1, 3, 7, 64, 4096]), stream=stream) == lines


def test_ranges_skip_blank_lines_and_strip_crlf():
    data = b"a\r\n\r\n  \nb\n"
    assert _lines_of(data, [0, 2, 5, len(data)], chunk=2) == [b"a", b"b"]


def test_format_from_path():
    assert format_from_path("s3://b/x/events.JSONL.gz") == "jsonl"
    assert format_from_path("a.parquet") == "parquet"
    assert format_from_path("a.txt") is None


def test_read_files_splits_jsonl_and_parquet(tmp_path, pipeline):
    lines = [f'{{"n": {i}}}'.encode() for i in range(5000)]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    table = pa.table({"n": list(range(5000))})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=700)
    with pipeline() as p:
        j = p | "J" >> ReadFiles(str(tmp_path / "*.jsonl"), "jsonl", chunk_bytes=4096, split_bytes=5000)
        assert_that(j | "jr" >> beam.FlatMap(lambda t: t.column("raw").to_pylist()), equal_to(lines), label="jsonl")
        q = p | "Q" >> ReadFiles(str(tmp_path / "*.parquet"), "parquet", split_bytes=2048)
        assert_that(q | "qr" >> beam.FlatMap(lambda t: t.column("n").to_pylist()), equal_to(list(range(5000))), "pq")
        n = q | "count" >> beam.combiners.Count.Globally()
        assert_that(n, _more_than_one, label="parquet split into several work items")


def _more_than_one(counts):
    if counts != [8]:  # 5000 rows in row groups of 700: 8 groups, each its own work item
        raise AssertionError(f"expected 8 batches, got {counts}")


def test_csv_records_follow_rfc4180_quotes():
    from transforms.ingest.files import _iter_csv_rows

    data = (
        b"id,note\n"
        b'1,ab"c@d.ee\n'  # a quote inside an unquoted field is a literal
        b'2,"multi\n\nline, with ""quotes"""\n'  # a blank line inside a quoted field is data
        b"\n"
        b'3,"x"y\n'  # malformed, but only this record
        b"4,ok\n"
    )
    rows = [r for _, batch in _iter_csv_rows(io.BytesIO(data), 7) for r in batch]
    assert rows == [b'1,ab"c@d.ee', b'2,"multi\n\nline, with ""quotes"""', b'3,"x"y', b"4,ok"]


def test_lines_array_matches_python_split():
    from transforms.ingest.files import _lines_array

    data = b"a\r\r\n\x0b\x0c\n \t\r\nb c \n\r\n\xff\xfe\nlast\r"
    expected = [ln.rstrip(b"\r") for ln in data.split(b"\n") if ln.strip()]
    assert _lines_array(data).to_pylist() == expected == [b"a", b"b c ", b"\xff\xfe", b"last"]
    assert _lines_array(data, keep_blank=True).to_pylist() == [ln.rstrip(b"\r") for ln in data.split(b"\n")]


def test_parquet_dictionary_only_for_few_distinct_values(tmp_path):
    from transforms.sinks.files import dictionary_columns, write_parquet

    n = 20_000
    table = pa.table(
        {
            "id": [f"ev-{i:08d}" for i in range(n)],
            "kind": ["view", "click"] * (n // 2),
            "nested": [[i % 3] for i in range(n)],
        }
    )
    assert dictionary_columns(table) == ["kind", "nested"]
    path = str(tmp_path / "t.parquet")
    write_parquet(table, path)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    assert "PLAIN_DICTIONARY" not in meta.column(0).encodings and "RLE_DICTIONARY" not in meta.column(0).encodings
    assert "RLE_DICTIONARY" in meta.column(1).encodings or "PLAIN_DICTIONARY" in meta.column(1).encodings
    assert pq.read_table(path).equals(table)
    write_parquet(table, str(tmp_path / "again.parquet"))
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "t.parquet").read_bytes()


def test_bookkeeping_files_are_hidden_unless_asked_for():
    assert is_hidden("s3://b/out/_SUCCESS", "s3://b/out/*")
    assert is_hidden("/d/.events.parquet.crc", "/d/*")
    assert is_hidden("C:\\d\\_tmp", "C:\\d\\*")
    assert not is_hidden("/d/events_1.parquet", "/d/*")
    assert not is_hidden("/d/_part.parquet", "/d/_*.parquet")
    assert not is_hidden("/d/.x.jsonl", "/d/.x.jsonl")


def test_local_spills_are_uncompressed_and_read_back_after_removal(tmp_path):
    from transforms.sinks.files import spill, unspill

    table = pa.table({"k": pa.array(["same value"] * 50_000), "n": pa.array(range(50_000))})
    paths = [spill(table, str(tmp_path / "p=00001")), spill(table.slice(7, 3), str(tmp_path / "p=00001"))]
    assert len(set(paths)) == 2
    # LZ4 would shrink the repeated strings to a few kB; local scratch trades disk for CPU.
    assert (tmp_path / "p=00001" / paths[0].rsplit("/", 1)[1]).stat().st_size > table.nbytes
    back = unspill(paths)
    for path in paths:  # mapped tables stay valid after their files go (scratch is removed at publish)
        (tmp_path / "p=00001" / path.rsplit("/", 1)[1]).unlink()
    assert back[0].equals(table)
    assert back[1].equals(table.slice(7, 3))


def test_spilled_parts_share_one_local_file_and_read_back_by_reference(tmp_path):
    from transforms.sinks.files import spill_parts, unspill

    table = pa.table({"k": pa.array([1, 1, 2, 3, 3, 3]), "v": pa.array(list("abcdef"))})
    parts = [
        (1, table.slice(0, 2)),
        (2, table.slice(2, 1)),
        (3, pa.concat_tables([table.slice(3, 1), table.slice(4, 2)])),
    ]
    refs = spill_parts(parts, str(tmp_path))
    assert [k for k, _ in refs] == [1, 2, 3]
    assert len(list(tmp_path.iterdir())) == 1
    back = unspill([r for _, r in reversed(refs)])
    assert [b.to_pydict() for b in back] == [p.to_pydict() for _, p in reversed(parts)]
    assert spill_parts([], str(tmp_path)) == []


def test_parquet_statistics_skip_many_valued_strings_unless_sorted_by(tmp_path):
    from transforms.sinks.files import write_parquet

    n = 20_000
    table = pa.table(
        {
            "id": [f"id-{i:06d}" for i in range(n)],
            "email": [f"u{i * 7919 % n}@x.io" for i in range(n)],
            "kind": [("a", "b", "c")[i % 3] for i in range(n)],
            "amount": [float(i) for i in range(n)],
        }
    )
    write_parquet(table, str(tmp_path / "f.parquet"), sorted_by=("id",))
    meta = pq.ParquetFile(tmp_path / "f.parquet").metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).is_stats_set for i in range(meta.num_columns)}
    assert stats == {"id": True, "email": False, "kind": True, "amount": True}
    assert pq.read_table(tmp_path / "f.parquet").equals(table)


@pytest.mark.parametrize("seed", range(20))
def test_lines_array_drops_exactly_the_blank_lines(seed):
    from transforms.ingest.files import _lines_array

    rng = random.Random(seed)
    pieces = [b"", b" ", b"\t", b"\x0b\x0c", b"\r", b"{}", b' {"a": 1}', b"x", b"\xc3\xa9", b"  y  "]
    lines = [b"".join(rng.choices(pieces, k=rng.randint(0, 3))) for _ in range(rng.randint(1, 40))]
    data = b"\n".join(lines)
    want = [ln.rstrip(b"\r") for ln in data.split(b"\n") if ln.strip()]
    assert _lines_array(data).to_pylist() == want


def test_spill_step_holds_tables_of_a_bundle_and_spills_them_together(pipeline, tmp_path):
    from transforms.sinks.files import _SpillFn, unspill

    wide = [(f"w{i % 3}", pa.table({"n": list(range(i, i + 4)), "s": ["x"] * 4})) for i in range(12)]
    narrow = [(f"n{i % 2}", pa.table({"n": [i]})) for i in range(5)]
    elements = wide[:6] + narrow + wide[6:]
    want = {}
    for key, table in elements:
        want.setdefault(key, []).extend(table.column("n").to_pylist())
    with pipeline() as p:
        got = (
            p
            | beam.Create(elements)
            | beam.ParDo(_SpillFn(str(tmp_path), flush_rows=10))
            | beam.GroupByKey()
            | beam.MapTuple(
                lambda key, refs: (key, sorted(n for t in unspill(list(refs)) for n in t.column("n").to_pylist()))
            )
        )
        assert_that(got, equal_to([(k, sorted(v)) for k, v in want.items()]))
    # Fewer files than tables: flushed every 10 rows, on a change of schema and at the end.
    assert 3 <= len(list(tmp_path.iterdir())) < len(elements)


@pytest.mark.parametrize("shards,spill", [(1, False), (3, False), (1, True), (3, True)])
def test_dead_letters_split_into_shards_by_raw_text(pipeline, tmp_path, shards, spill):
    import json

    from transforms.records import dead_letters
    from transforms.sinks.deadletters import WriteDeadLetters

    raws = [f'{{"n":{i}}}' for i in range(40)]
    batches = [
        dead_letters("parse", "malformed", None, "bad", pa.array(raws[i : i + 10]), pa.array(["f.jsonl"] * 10))
        for i in range(0, 40, 10)
    ]
    from transforms.records import hash_partition

    for name, order in (("a", batches), ("b", batches[::-1])):
        with pipeline() as p:
            spill_dir = str(tmp_path / f"spill-{name}") if spill else None
            _ = p | name >> beam.Create(order) | WriteDeadLetters(str(tmp_path / name), shards, spill_dir)
    files = sorted((tmp_path / "a").glob("*.jsonl"))
    assert [f.name for f in files][:1] == ["part-00000.jsonl"]
    assert 1 <= len(files) <= shards and (shards == 1 or len(files) > 1)
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["raw"] for r in rows) == sorted(raws)
    # Each file lists its rows by (source, stable hash of raw, raw, ...): the same bytes on
    # every run, whatever order the batches came in.
    assert any((tmp_path / "spill-a").iterdir()) if spill else not (tmp_path / "spill-a").exists()
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
        got = [json.loads(line)["raw"] for line in f.read_text().splitlines()]
        assert got == sorted(got, key=lambda r: (hash_partition(pa.array([r]), 2**62)[0], r))
        assert got != sorted(got)  # not merely the text order


def test_write_bundles_writes_every_row_once_and_leaves_nothing_in_scratch(tmp_path, pipeline):
    from transforms.sinks.files import WriteBundles

    parts = [pa.table({"k": list(range(i * 10, i * 10 + 10)), "v": ["x"] * 10, "drop": [0] * 10}) for i in range(5)]
    root, scratch = tmp_path / "out", tmp_path / "scratch"
    with pipeline() as p:
        written = p | beam.Create(parts) | WriteBundles(str(root), str(scratch), columns=("k", "v"))
        assert_that(written | beam.Map(lambda w: w["rows"]) | beam.CombineGlobally(sum), equal_to([50]))
    files = sorted(root.glob("*.parquet"))
    assert files and not list(scratch.glob("*.parquet"))  # every file moved into place
    got = pa.concat_tables([pq.read_table(f) for f in files])
    assert got.column_names == ["k", "v"] and sorted(got.column("k").to_pylist()) == list(range(50))
