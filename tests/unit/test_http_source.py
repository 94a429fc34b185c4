"""ReadHttp against a real local HTTP server that injects 429s, 500s, timeouts, dropped
connections, cut JSON, repeated pages and loops: every record arrives exactly once, repeats are
counted duplicates, and what cannot be read is a dead letter naming its URL and page."""

from __future__ import annotations

import json

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.http_api import FakeApi
from transforms.ingest.http import Incremental, Pagination, ReadHttp, RetryPolicy
from transforms.records import DEAD_LETTER_SCHEMA

FAST = RetryPolicy(attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05, timeout_seconds=0.3)
FAULTS = ("429", "500", "timeout", "truncated", "bad_json", "503")


def ids(n: int, start: int = 0) -> list[str]:
    return [f"r{i:06d}" for i in range(start, start + n)]


def _sum(dicts):
    total = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def check(read: ReadHttp, want_ids: list[str], read_count: int, duplicates: int, dead=lambda rows: rows == []):
    """Runs ``read``; checks the record ids (each once), the counts and the dead letters."""

    def dead_ok(rows):
        assert dead(rows), rows

    def counts_ok(stats):
        assert _sum(stats) == {"read": read_count - len(want_ids), "duplicates": duplicates}, _sum(stats)

    with beam.Pipeline() as p:
        out = p | "Read" >> read
        got = out["records"] | "Ids" >> beam.FlatMap(
            lambda t: [orjson.loads(r)["id"] for r in t.column("raw").to_pylist()]
        )
        assert_that(got, equal_to(want_ids), label="EachRecordOnce")
        dl = out["dead_letters"] | "Rows" >> beam.FlatMap(lambda t: t.to_pylist())
        assert_that(dl, dead_ok, label="DeadLetters")
        assert_that(out["stats"], counts_ok, label="Counts")
        schemas = out["dead_letters"] | "Schemas" >> beam.Map(lambda t: t.schema.equals(DEAD_LETTER_SCHEMA))
        assert_that(schemas | "AllTrue" >> beam.combiners.ToList() | beam.Map(all), equal_to([True]), label="Schema")


def faulty(api: FakeApi, pages=range(1, 7)) -> FakeApi:
    for page, fault in zip(pages, FAULTS):
        api.fail(page, fault)
    api.fail(2, "429", "500")  # page 2 meets three faults in a row
    return api


STYLES = {
    "page_total": ("/items", Pagination("page", total_pages_path="meta.total_pages")),
    "page_until_empty": ("/items", Pagination("page")),
    "cursor": ("/cursor", Pagination("cursor", cursor_path="next_cursor")),
    "link": ("/link", Pagination("link")),
}


@pytest.mark.parametrize("style", STYLES)
def test_faults_and_a_repeated_page_every_record_once(style):
    path, pagination = STYLES[style]
    with faulty(FakeApi(records=230, per_page=20, repeat_page=3, slow_seconds=0.8)) as api:
        read = ReadHttp(api.url + path, pagination, "data", record_key="id", retry=FAST, concurrency=4)
        # 12 pages of 20 (the last of 10) and page 3 once more: 20 duplicates.
        check(read, ids(230), read_count=250, duplicates=20)
        assert not any(api.faults.values())  # every fault was met


def test_a_repeated_page_without_a_record_key_is_known_by_its_body():
    with FakeApi(records=100, per_page=10, repeat_page=4, meta=False) as api:
        check(ReadHttp(api.url + "/items", Pagination("page"), "data", retry=FAST), ids(100), 110, 10)


def test_a_page_that_never_reads_is_a_dead_letter_naming_its_url_and_page():
    with FakeApi(records=100, per_page=10) as api:
        api.fail(4, *["500"] * 4)
        url = api.url  # the matcher is pickled: it takes the address, not the server

        def dead(rows):
            (row,) = rows
            assert row["stage"] == "read" and row["reason"] == "http_status" and row["field"] is None
            assert row["source"] == url + "/items?page=4"
            assert row["error"] == "page 4: HTTP 500 Internal Server Error (gave up after 4 attempts)"
            assert json.loads(row["raw"]) == {"error": "fault"}
            return True

        # The total is known: the other pages arrive.
        read = ReadHttp(api.url + "/items", Pagination("page", total_pages_path="meta.total_pages"), "data",
                        record_key="id", retry=FAST)  # fmt: skip
        check(read, ids(30) + ids(60, 40), read_count=91, duplicates=0, dead=dead)


def test_a_cursor_page_that_never_reads_says_the_rest_was_not_read():
    with FakeApi(records=50, per_page=10) as api:
        api.fail(3, *["bad_json"] * 4)
        url = api.url

        def dead(rows):
            (row,) = rows
            assert row["reason"] == "malformed_page" and row["source"] == url + "/cursor?cursor=c2"
            assert row["error"].startswith("page 3: the body is not JSON")
            assert row["error"].endswith("(gave up after 4 attempts); the pages after it were not read")
            return True

        check(ReadHttp(api.url + "/cursor", STYLES["cursor"][1], "data", retry=FAST), ids(20), 21, 0, dead)


def test_a_cursor_loop_stops_the_walk_with_a_dead_letter():
    with FakeApi(records=50, per_page=10, loop_at=2) as api:
        url = api.url

        def dead(rows):
            (row,) = rows
            assert row["reason"] == "pagination_loop" and row["source"] == url + "/cursor?cursor=c1"
            assert (
                row["error"]
                == "after page 2: cursor 'c1' came back: the API is looping; the pages after it were not read"
            )
            return True

        check(ReadHttp(api.url + "/cursor", STYLES["cursor"][1], "data", retry=FAST), ids(20), 21, 0, dead)


def test_a_body_without_the_records_list_is_a_malformed_page():
    with FakeApi(records=30, per_page=10) as api:

        def dead(rows):
            assert [r["reason"] for r in rows] == ["malformed_page"] and "no list of records at 'items'" in rows[0][
                "error"
            ]
            return True

        check(ReadHttp(api.url + "/items", Pagination("page"), "items", retry=FAST), [], 1, 0, dead)


def test_partitions_are_read_concurrently_within_the_bound():
    with FakeApi(records=200, per_page=10, latency=0.05) as api:
        parts = [{"region": r} for r in ("north", "south", "east", "west")]
        read = ReadHttp(api.url + "/cursor", STYLES["cursor"][1], "data", partitions=parts, retry=FAST, concurrency=3)
        check(read, ids(200), 200, 0)
        assert 2 <= api.most_in_flight <= 3
        assert {dict(p.split("=") for p in path.split("?")[1].split("&"))["region"] for path, _ in api.requests} == {
            p["region"] for p in parts
        }


def test_pages_of_a_known_total_are_fetched_concurrently_within_the_bound():
    with FakeApi(records=300, per_page=10, latency=0.05) as api:
        pagination = Pagination("page", total_pages_path="meta.total_pages")
        check(ReadHttp(api.url + "/items", pagination, "data", retry=FAST, concurrency=5), ids(300), 300, 0)
        assert 2 <= api.most_in_flight <= 5


def test_incremental_sends_the_state_and_stages_the_newest_value(tmp_path):
    since = "2024-05-01T00:49:00Z"  # record 49's time: those after it are sent
    with FakeApi(records=120, per_page=25) as api:
        read = ReadHttp(api.url + "/items", Pagination("page"), "data", record_key="id", retry=FAST,
                        incremental=Incremental("updated_since", "updated_at", since),
                        state_path=str(tmp_path / "_state" / "Read.json"))  # fmt: skip
        check(read, ids(70, 50), 70, 0)
        assert all("updated_since=2024-05-01T00%3A49%3A00Z" in path for path, _ in api.requests)
    state = json.loads((tmp_path / "_state" / "Read.json").read_text())
    assert state["value"] == "2024-05-01T01:59:00Z" and state["previous"] == since and state["complete"] is True


def test_a_read_with_a_dead_letter_keeps_the_old_state(tmp_path):
    with FakeApi(records=40, per_page=10) as api:
        api.fail(2, *["500"] * 4)
        read = ReadHttp(api.url + "/items", Pagination("page", total_pages_path="meta.total_pages"), "data",
                        retry=FAST, incremental=Incremental("updated_since", "updated_at", "2024-01-01T00:00:00Z"),
                        state_path=str(tmp_path / "s.json"))  # fmt: skip
        check(read, ids(10) + ids(20, 20), 31, 0, dead=lambda rows: len(rows) == 1)
    state = json.loads((tmp_path / "s.json").read_text())
    assert state["value"] == "2024-01-01T00:00:00Z" and state["complete"] is False


def test_config_is_checked_when_built():
    with pytest.raises(ValueError, match="http"):
        ReadHttp("ftp://h/x", Pagination("page"))
    with pytest.raises(ValueError, match="concurrency"):
        ReadHttp("http://h/x", Pagination("page"), concurrency=0)
    with pytest.raises(ValueError, match="state_path"):
        ReadHttp("http://h/x", Pagination("page"), incremental=Incremental("since", "updated_at"))
