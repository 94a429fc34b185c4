"""ReadHttp: a paginated JSON API -> raw record batches, like ReadFiles' jsonl batches.

Each record of each page becomes one JSON line (``raw``) with the page's URL (``source``), so
Parse and Validate take it as they take a file's lines. A page that cannot be read within the
retry budget becomes one dead letter (stage ``read``) naming its URL and page. A record seen
before (same ``record_key``; without one, a page whose body repeats an earlier page's) is a
counted duplicate. Every page record and every dead letter is counted as read, so the run's
conservation check covers the source too.

Incremental reads send the state's value as a query parameter and stage the new state (the
highest ``updated`` value seen) for publishing with the outputs; a read with a dead-lettered
page keeps the old state, so the next run asks again for what was missed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass

import apache_beam as beam
import orjson
import pyarrow as pa

from transforms.ingest.http.client import HttpClient, PageFailed, RetryPolicy
from transforms.ingest.http.pagination import Pagination, json_path, make_pager
from transforms.ingest.http.state import latest, write_state
from transforms.ingest.http.walk import PageResult, walk
from transforms.records import dead_letters, typed

__all__ = ["Auth", "Incremental", "ReadHttp", "probe"]

STAGE = "read"
_RAW_SCHEMA = pa.schema([("raw", pa.binary()), ("source", pa.string())])
_MAX_RAW = 64 * 1024  # body kept in a dead letter: enough to see what came back


@dataclass(frozen=True)
class Auth:
    """Credentials from the environment: the config names the variable, never the value.

    Args:
        kind: ``bearer`` (``Authorization: Bearer <value>``) or ``header`` (``<header>: <value>``).
        env: The environment variable holding the token or key.
        header: For ``header``: the header's name (e.g. ``X-Api-Key``).
    """

    kind: str
    env: str
    header: str | None = None

    def __post_init__(self):
        if self.kind not in ("bearer", "header"):
            raise ValueError(f"auth kind must be bearer or header, got {self.kind!r}")
        if not self.env:
            raise ValueError("auth needs the environment variable (env) that holds the credential")
        if self.kind == "header" and not self.header:
            raise ValueError("auth kind header needs the header name")

    def headers(self) -> dict:
        """The request headers, read from the environment now (ValueError if the variable is unset)."""
        value = os.environ.get(self.env)
        if not value:
            raise ValueError(f"environment variable {self.env} (the API credential) is not set")
        if self.kind == "bearer":
            return {"Authorization": f"Bearer {value}"}
        return {self.header: value}


@dataclass(frozen=True)
class Incremental:
    """Reading only what changed since the last published run.

    Args:
        param: The query parameter that takes the state's value (e.g. ``updated_since``).
        field: Dotted path of each record's updated value (e.g. ``updated_at``).
        since: The value to send: the published state's, or the first run's start (None: none sent).
    """

    param: str
    field: str
    since: object = None


@dataclass(frozen=True)
class _Source:
    url: str
    pagination: Pagination
    records_path: str
    params: tuple
    partitions: tuple
    record_key: str | None
    incremental: Incremental | None
    auth: Auth | None
    retry: RetryPolicy
    rate_per_second: float | None
    concurrency: int
    batch_records: int

    def pagers(self) -> list:
        params = dict(self.params)
        if self.incremental is not None and self.incremental.since is not None:
            params[self.incremental.param] = self.incremental.since
        parts = self.partitions or ((),)
        return [make_pager(i, self.url, {**params, **dict(p)}, self.pagination) for i, p in enumerate(parts)]

    def client(self, clock=time.monotonic, sleep=time.sleep, rng=None) -> HttpClient:
        headers = self.auth.headers() if self.auth else {}
        return HttpClient(self.retry, headers, self.rate_per_second, self.concurrency, clock, sleep, rng=rng)


def _fetch(client: HttpClient, records_path: str, digest: bool):
    """Fetches one page (in a walk thread); ``digest``: keep a digest of the page's body, to
    know it again when it repeats."""

    def fetch(req) -> PageResult:
        try:
            data, headers = client.get_json(req.url)
        except PageFailed as e:
            return PageResult(req, failure=e)
        records = json_path(data, records_path)
        if not isinstance(records, list):
            where = f"at {records_path!r}" if records_path else "as the body"
            failure = PageFailed("malformed_page", f"no list of records {where}", orjson_bytes(data))
            return PageResult(req, failure=failure)
        body = hashlib.sha256(orjson_bytes(data)).digest() if digest else None
        return PageResult(req, records=records, headers=headers, data=data, body=body)

    return fetch


def orjson_bytes(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _FetchFn(beam.DoFn):
    """Walks every page of the API (one element: the source) and emits its record batches,
    the dead letters of unreadable pages, the counts and the new state."""

    def __init__(self, source: _Source, clock=None, sleep=None, seed: int | None = None):
        self._source = source
        self._clock, self._sleep, self._seed = clock, sleep, seed

    def setup(self):
        self._client = self._source.client(
            self._clock or time.monotonic, self._sleep or time.sleep, random.Random(self._seed)
        )
        self._pages = beam.metrics.Metrics.counter("http", "pages")
        self._failed = beam.metrics.Metrics.counter("http", "failed_pages")
        self._requests = beam.metrics.Metrics.counter("http", "requests")
        self._retries = beam.metrics.Metrics.counter("http", "retries")
        self._throttled = beam.metrics.Metrics.counter("http", "throttled")

    def teardown(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def process(self, _start):
        src = self._source
        seen_keys: set[bytes] = set()
        seen_pages: set[bytes] = set()
        lines: list[bytes] = []
        sources: list[str] = []
        read = duplicates = failed = 0
        newest = src.incremental.since if src.incremental else None
        before = dict(self._client.counts)
        fetch = _fetch(self._client, src.records_path, digest=src.record_key is None)
        for result in walk(src.pagers(), fetch, src.concurrency):
            req = result.request
            if result.failure is not None:
                failed += 1
                yield beam.pvalue.TaggedOutput("dead_letters", _page_dead_letter(result))
            else:
                self._pages.inc()
                repeated = result.body is not None and result.body in seen_pages
                if result.body is not None:
                    seen_pages.add(result.body)
                for record in result.records:
                    read += 1
                    if src.incremental is not None and isinstance(record, dict):
                        newest = latest(newest, json_path(record, src.incremental.field))
                    if repeated or (src.record_key is not None and _seen(record, src.record_key, seen_keys)):
                        duplicates += 1
                        continue
                    lines.append(orjson_bytes(record))
                    sources.append(req.url)
                    if len(lines) >= src.batch_records:
                        yield _batch(lines, sources)
                        lines, sources = [], []
            if result.stop is not None:
                failed += 1
                yield beam.pvalue.TaggedOutput("dead_letters", _stop_dead_letter(result))
        if lines:
            yield _batch(lines, sources)
        # Records handed on are counted by Parse; duplicates and dead letters are counted here.
        yield beam.pvalue.TaggedOutput("stats", {"read": duplicates + failed, "duplicates": duplicates})
        self._failed.inc(failed)
        for name, counter in (("requests", self._requests), ("retries", self._retries),
                              ("throttled", self._throttled)):  # fmt: skip
            counter.inc(self._client.counts[name] - before[name])
        if src.incremental is not None:
            inc = src.incremental
            complete = failed == 0
            yield beam.pvalue.TaggedOutput(
                "state",
                {
                    "url": src.url,
                    "param": inc.param,
                    "field": inc.field,
                    # A read that missed pages keeps the old value: the next run asks for them again.
                    "value": newest if complete else inc.since,
                    "previous": inc.since,
                    "complete": complete,
                    "records": read,
                },
            )


def _seen(record, key: str, seen: set[bytes]) -> bool:
    value = json_path(record, key) if isinstance(record, dict) else None
    if value is None:
        return False  # no key to compare by: Validate judges the record
    k = orjson_bytes(value)
    if k in seen:
        return True
    seen.add(k)
    return False


def _batch(lines: list[bytes], sources: list[str]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(lines, pa.binary()), pa.array(sources, pa.string())], schema=_RAW_SCHEMA)


def _page_dead_letter(result: PageResult) -> pa.Table:
    req, failure = result.request, result.failure
    error = f"page {req.page}: {failure.message}"
    if result.rest_unread:
        error += "; the pages after it were not read"
    body = (failure.body or b"")[:_MAX_RAW]
    return dead_letters(STAGE, failure.reason, None, error, pa.array([body], pa.binary()), pa.array([req.url]))


def _stop_dead_letter(result: PageResult) -> pa.Table:
    req, stop = result.request, result.stop
    error = f"after page {req.page}: {stop.message}; the pages after it were not read"
    return dead_letters(STAGE, stop.reason, None, error, pa.array([b""], pa.binary()), pa.array([req.url]))


class _WriteStateFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, state: dict):
        write_state(self._path, state)
        yield self._path


class ReadHttp(beam.PTransform):
    """Reads every page of a paginated JSON API into raw record batches (jsonl lines).

    Args:
        url: The endpoint (its own query parameters are kept).
        pagination: How the API pages (see ``pagination.Pagination``).
        records_path: Dotted JSON path of the page's list of records (``""``: the body is the list).
        params: Query parameters sent with every request.
        partitions: Independent streams of pages, each with its own extra query parameters
            (e.g. one per region); read concurrently, handed on in this order.
        record_key: Dotted path of a record's key: a record whose key was seen before is a
            counted duplicate (a repeated page). Without it, a page whose body repeats an
            earlier page's is.
        incremental: Send ``since`` as a query parameter and track the highest updated value.
        state_path: Where the new state is written (the run's staging directory); needed with
            ``incremental``.
        auth: Credentials from the environment, or None.
        retry: The retry policy.
        rate_per_second: Client-side rate limit (requests per second), or None.
        concurrency: Most requests in flight (pages of a known total, partitions).
        batch_records: Records per emitted table.
        clock: Monotonic seconds for the rate limit (default ``time.monotonic``).
        sleep: Waits (default ``time.sleep``).
        seed: Seed of the retry jitter (None: random).

    Returns a dict: ``records`` (tables of ``raw`` and ``source``), ``dead_letters``
    (DeadLetter tables, stage ``read``) and ``stats`` (count dicts: ``read``, ``duplicates``).
    """

    def __init__(
        self,
        url: str,
        pagination: Pagination,
        records_path: str = "",
        params: dict | None = None,
        partitions: list[dict] | None = None,
        record_key: str | None = None,
        incremental: Incremental | None = None,
        state_path: str | None = None,
        auth: Auth | None = None,
        retry: RetryPolicy | None = None,
        rate_per_second: float | None = None,
        concurrency: int = 8,
        batch_records: int = 10_000,
        clock=None,
        sleep=None,
        seed: int | None = None,
        label: str | None = None,
    ):
        super().__init__(label)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {url!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if batch_records < 1:
            raise ValueError("batch_records must be at least 1")
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if incremental is not None and state_path is None:
            raise ValueError("an incremental read needs state_path")
        if partitions is not None and not partitions:
            raise ValueError("partitions, when given, must not be empty")
        self._source = _Source(
            url=url,
            pagination=pagination,
            records_path=records_path,
            params=tuple((params or {}).items()),
            partitions=tuple(tuple(p.items()) for p in partitions or ()),
            record_key=record_key,
            incremental=incremental,
            auth=auth,
            retry=retry or RetryPolicy(),
            rate_per_second=rate_per_second,
            concurrency=concurrency,
            batch_records=batch_records,
        )
        self._state_path = state_path
        self._clock, self._sleep, self._seed = clock, sleep, seed

    def expand(self, pbegin):
        out = (
            pbegin
            | "Start" >> beam.Create([self._source.url])
            | "Fetch"
            >> beam.ParDo(_FetchFn(self._source, self._clock, self._sleep, self._seed))
            .with_outputs("dead_letters", "stats", "state", main="records")
            .with_input_types(str)
        )
        if self._source.incremental is not None:
            (
                typed(out.state, dict)
                | "WriteState"
                >> beam.ParDo(_WriteStateFn(self._state_path)).with_input_types(dict).with_output_types(str)
            )
        return {
            "records": typed(out.records),
            "dead_letters": typed(out.dead_letters),
            "stats": typed(out.stats, dict),
        }


def probe(source: ReadHttp) -> None:
    """Reads the first page of the first partition; OSError with a plain message when the API
    cannot be read (unreachable, refusing the credential, not JSON) or the credential is unset."""
    src = source._source
    try:
        client = src.client()
    except ValueError as e:
        raise OSError(str(e)) from e
    try:
        req = src.pagers()[0].first()
        client.get_json(req.url)
    except PageFailed as e:
        raise OSError(f"cannot read the API at {req.url}: {e.message}") from e
    finally:
        client.close()
