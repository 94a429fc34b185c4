"""The HTTP API source's parts: pagination rules and state order (pure), and the client's
retries, backoff, Retry-After, rate limit and credentials against a real local HTTP server
(tests/http_api.py), with the sleeps recorded instead of waited."""

from __future__ import annotations

import random

import pytest

from tests.http_api import FakeApi
from transforms.ingest.http import Auth
from transforms.ingest.http.client import HttpClient, PageFailed, RateLimiter, RetryPolicy, retry_after_seconds
from transforms.ingest.http.pagination import Pagination, json_path, link_next, make_pager, with_query
from transforms.ingest.http.state import latest


class FakeTime:
    """A clock that moves only when slept on; every sleep is recorded."""

    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(t: FakeTime, **policy) -> HttpClient:
    policy = {"attempts": 4, "backoff_seconds": 1.0, "timeout_seconds": 5.0, **policy}
    return HttpClient(RetryPolicy(**policy), clock=t.clock, sleep=t.sleep, rng=random.Random(3))


# -- pagination ---------------------------------------------------------------------------------


def test_json_path_and_query():
    body = {"meta": {"next": "c2", "pages": [1, 2]}, "data": []}
    assert json_path(body, "meta.next") == "c2"
    assert json_path(body, "meta.pages.1") == 2
    assert json_path(body, "meta.missing.deeper") is None
    assert json_path(body, "") is body
    assert with_query("http://h/x?a=1&page=9", {"page": 2, "flag": True}) == "http://h/x?a=1&page=2&flag=true"


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ('<https://h/x?page=2>; rel="next", <https://h/x?page=9>; rel="last"', "https://h/x?page=2"),
        ('<https://h/x?page=9>; rel="last", </x?page=3>; rel=next', "http://base/x?page=3"),
        ('<https://h/x?page=2>; rel="prev next"', "https://h/x?page=2"),
        ('<https://h/x?page=1>; rel="first"', None),
        (None, None),
    ],
)
def test_link_header_next(header, want):
    assert link_next(header, "http://base/x?page=2") == want


def test_page_style_with_a_total_asks_for_every_page_at_once():
    pager = make_pager(0, "http://h/items", {"q": "a"}, Pagination("page", total_pages_path="meta.total"))
    first = pager.first()
    assert first.url == "http://h/items?q=a&page=1" and first.seq == 0
    nxt, stop = pager.after(first, {"meta": {"total": 4}}, {}, 10)
    assert [r.page for r in nxt] == [2, 3, 4] and [r.seq for r in nxt] == [1, 2, 3] and stop is None
    assert pager.after(nxt[0], {}, {}, 10) == ([], None)


def test_page_style_without_a_total_ends_at_an_empty_page():
    pager = make_pager(0, "http://h/items", {}, Pagination("page", start=0, size_param="n", size=5))
    first = pager.first()
    assert first.url == "http://h/items?n=5&page=0"
    (second,), _ = pager.after(first, {}, {}, 5)
    assert second.page == 1
    assert pager.after(second, {}, {}, 0) == ([], None)


def test_a_cursor_that_comes_back_stops_the_walk():
    pager = make_pager(0, "http://h/c", {}, Pagination("cursor", cursor_path="next"))
    (second,), _ = pager.after(pager.first(), {"next": "c2"}, {}, 1)
    assert second.url == "http://h/c?cursor=c2"
    nxt, stop = pager.after(second, {"next": "c2"}, {}, 1)
    assert nxt == [] and stop.reason == "pagination_loop" and "'c2'" in stop.message
    assert pager.after(second, {"next": None}, {}, 1) == ([], None)


def test_page_limit():
    pager = make_pager(0, "http://h/items", {}, Pagination("page", total_pages_path="t", max_pages=3))
    nxt, stop = pager.after(pager.first(), {"t": 10}, {}, 1)
    assert [r.page for r in nxt] == [2, 3] and stop.reason == "page_limit"


def test_bad_pagination_config():
    with pytest.raises(ValueError, match="style"):
        Pagination("offset")
    with pytest.raises(ValueError, match="size"):
        Pagination("page", total_records_path="meta.count")


# -- state order --------------------------------------------------------------------------------


def test_updated_values_compare_as_instants_and_numbers():
    assert latest("2024-05-01T10:00:00Z", "2024-05-01T11:30:00+02:00") == "2024-05-01T10:00:00Z"
    assert latest("2024-05-01T10:00:00+00:00", "2024-05-01T10:00:01Z") == "2024-05-01T10:00:01Z"
    assert latest(None, "2024-05-01T10:00:00") == "2024-05-01T10:00:00"
    assert latest(9, 10) == 10 and latest(10, None) == 10 and latest(10, True) == 10
    assert latest(None, None) is None


# -- the client ---------------------------------------------------------------------------------


def test_5xx_are_retried_with_growing_jittered_backoff():
    t = FakeTime()
    with FakeApi(records=5, per_page=5) as api:
        api.fail(1, "500", "503", "500")
        data, _ = client(t).get_json(api.url + "/items?page=1")
    assert [r["id"] for r in data["data"]] == ["r000000", "r000001", "r000002", "r000003", "r000004"]
    assert len(t.sleeps) == 3
    for n, slept in enumerate(t.sleeps, 1):  # full jitter: anywhere up to 1, 2, 4 s
        assert 0 <= slept <= 2 ** (n - 1)
    assert len(set(t.sleeps)) == 3  # jittered, not a fixed schedule


def test_the_retry_budget_ends_in_a_clear_error():
    t = FakeTime()
    with FakeApi(records=5) as api:
        api.fail(1, "500", "500", "500", "500", "500")
        with pytest.raises(PageFailed) as info:
            client(t, attempts=3).get_json(api.url + "/items?page=1")
        assert len(api.requests) == 3
    assert info.value.reason == "http_status"
    assert info.value.message == "HTTP 500 Internal Server Error (gave up after 3 attempts)"
    assert len(t.sleeps) == 2


def test_a_client_error_is_not_retried():
    t = FakeTime()
    with FakeApi(records=5) as api:
        with pytest.raises(PageFailed, match="HTTP 404"):
            client(t).get_json(api.url + "/nowhere")
        assert len(api.requests) == 1 and t.sleeps == []


def test_429_waits_at_least_its_retry_after():
    t = FakeTime()
    with FakeApi(records=5, retry_after="7") as api:
        api.fail(1, "429", "429")
        client(t, backoff_seconds=0.1).get_json(api.url + "/items?page=1")
    assert len(t.sleeps) == 2 and all(7 <= s < 7.5 for s in t.sleeps)


def test_429_asking_too_long_fails_the_page_at_once():
    t = FakeTime()
    with FakeApi(records=5, retry_after="600") as api:
        api.fail(1, "429")
        with pytest.raises(PageFailed, match="Retry-After 600s is over 120s"):
            client(t).get_json(api.url + "/items?page=1")
    assert t.sleeps == []


def test_retry_after_as_a_date():
    from datetime import datetime, timezone

    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("Wed, 01 May 2024 12:00:30 GMT", now) == 30
    assert retry_after_seconds("12", now) == 12 and retry_after_seconds("soon", now) is None


@pytest.mark.parametrize("fault", ["timeout", "truncated", "bad_json"])
def test_timeouts_dropped_connections_and_cut_json_are_retried(fault):
    t = FakeTime()
    with FakeApi(records=5, slow_seconds=0.6) as api:
        api.fail(1, fault)
        data, _ = client(t, timeout_seconds=0.2).get_json(api.url + "/items?page=1")
    assert len(data["data"]) == 5 and len(t.sleeps) == 1


def test_unreachable():
    t = FakeTime()
    with FakeApi() as api:
        url = api.url
    with pytest.raises(PageFailed) as info:
        client(t, attempts=2).get_json(url + "/items")
    assert info.value.reason == "unreachable" and "Connection refused" in info.value.message


def test_rate_limit_spaces_requests():
    t = FakeTime()
    limiter = RateLimiter(4.0, t.clock, t.sleep)
    for _ in range(5):
        limiter.acquire()
    assert t.sleeps == [0.25, 0.25, 0.25, 0.25]
    with pytest.raises(ValueError):
        RateLimiter(0, t.clock, t.sleep)


@pytest.mark.parametrize(("auth", "header"), [(("bearer",), "authorization"), (("header", "X-Api-Key"), "x-api-key")])
def test_credentials_come_from_the_environment(monkeypatch, auth, header):
    monkeypatch.setenv("TEST_API_SECRET", "tok-123")
    a = Auth(auth[0], "TEST_API_SECRET", *auth[1:])
    t = FakeTime()
    with FakeApi(records=3, token="tok-123") as api:
        HttpClient(RetryPolicy(), a.headers(), clock=t.clock, sleep=t.sleep).get_json(api.url + "/items")
        with pytest.raises(PageFailed, match="HTTP 401"):
            HttpClient(RetryPolicy(), clock=t.clock, sleep=t.sleep).get_json(api.url + "/items")
        assert api.requests[0][1][header].endswith("tok-123")
    monkeypatch.delenv("TEST_API_SECRET")
    with pytest.raises(ValueError, match="TEST_API_SECRET") as info:
        a.headers()
    assert "tok-123" not in str(info.value)
