"""A JSON-over-HTTP GET client with the manners a paginated API expects.

Retries with exponential backoff and full jitter on 5xx, 408, timeouts, dropped connections and
truncated or malformed JSON, within a bounded number of attempts; a ``429`` waits at least its
``Retry-After``; a client-side rate limit spaces requests; redirects are not followed (they
would carry the credentials elsewhere). The credential headers are held here only: no error
message, log line or pickled object carries them. Clock, sleep and jitter are injected.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

__all__ = ["HttpClient", "PageFailed", "RateLimiter", "RetryPolicy", "parse_json", "retry_after_seconds"]

_RETRY_STATUSES = frozenset({408, 429})
_BIG_INT = re.compile(rb"-?\d{19,}")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a page is tried before it becomes a dead letter.

    Args:
        attempts: Tries per page, the first included.
        backoff_seconds: The first retry waits up to this (full jitter); each next one doubles it.
        max_backoff_seconds: Cap of one wait.
        max_retry_after_seconds: A ``429`` asking to wait longer than this fails the page.
        timeout_seconds: Connect and read timeout of one request.
    """

    attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0
    timeout_seconds: float = 30.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if min(self.backoff_seconds, self.max_backoff_seconds, self.max_retry_after_seconds) < 0:
            raise ValueError("retry waits must not be negative")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout must be positive")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter wait before retry number ``retry`` (1 first)."""
        return rng.uniform(0, min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (retry - 1)))


class PageFailed(Exception):
    """A page that could not be read within the retry budget (or at all).

    Args:
        reason: ``unreachable``, ``timeout``, ``connection_error``, ``http_status`` or
            ``malformed_page``.
        message: What happened, without credentials.
        body: The last response body, when there was one.
    """

    def __init__(self, reason: str, message: str, body: bytes | None = None):
        super().__init__(message)
        self.reason, self.message, self.body = reason, message, body

    def __str__(self) -> str:
        return self.message


class RateLimiter:
    """Spaces requests ``1 / per_second`` apart across threads (None: no limit)."""

    def __init__(self, per_second: float | None, clock: Callable[[], float], sleep: Callable[[float], None]):
        if per_second is not None and per_second <= 0:
            raise ValueError("rate limit must be positive")
        self._gap = 1.0 / per_second if per_second else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self._gap:
            return
        with self._lock:
            now = self._clock()
            at = now if self._next is None else max(now, self._next)
            self._next = at + self._gap
        if at > now:
            self._sleep(at - now)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def parse_json(body: bytes):
    """The JSON value of ``body``; integers beyond 64 bits kept exact (ValueError if not JSON)."""
    if _BIG_INT.search(body):
        return json.loads(body)
    return orjson.loads(body)


class HttpClient:
    """GETs JSON pages with retries, a rate limit and credential headers.

    Args:
        policy: The retry policy.
        headers: Request headers (credentials included): kept in memory only.
        rate_per_second: Client-side rate limit, or None.
        pool_size: Connections kept per host (the walk's concurrency).
        clock: Monotonic seconds (the rate limit).
        sleep: Waits between retries and for the rate limit.
        now: Wall clock, for ``Retry-After`` dates.
        rng: Jitter source.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        headers: dict | None = None,
        rate_per_second: float | None = None,
        pool_size: int = 8,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        rng: random.Random | None = None,
    ):
        self._policy = policy
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._limiter = RateLimiter(rate_per_second, clock, sleep)
        self._sleep, self._now = sleep, now
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        timeout = urllib3.Timeout(connect=policy.timeout_seconds, read=policy.timeout_seconds)
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, timeout=timeout, retries=False)
        self._counts_lock = threading.Lock()
        self.counts = {"requests": 0, "retries": 0, "throttled": 0}

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self.counts[name] += 1

    def get_json(self, url: str) -> tuple[object, dict]:
        """The parsed JSON body and the (lower-cased) headers of a GET of ``url``; PageFailed
        when the retry budget is spent or the answer cannot get better by retrying."""
        policy = self._policy
        for attempt in range(1, policy.attempts + 1):
            self._limiter.acquire()
            self._count("requests")
            wait_at_least = 0.0
            try:
                resp = self._pool.request("GET", url, headers=self._headers, redirect=False, preload_content=True)
            except NewConnectionError as e:
                failure = PageFailed("unreachable", f"cannot connect: {_cause(e).split(': ', 1)[-1]}")
            except Urllib3Timeout:
                failure = PageFailed("timeout", f"no answer within {policy.timeout_seconds:g}s")
            except (ProtocolError, HTTPError) as e:
                failure = PageFailed("connection_error", f"connection broken: {_cause(e)}")
            else:
                status, body = resp.status, resp.data
                headers = {k.lower(): v for k, v in resp.headers.items()}
                if 200 <= status < 300:
                    try:
                        return parse_json(body), headers
                    except ValueError as e:
                        failure = PageFailed("malformed_page", f"the body is not JSON: {e}", body)
                else:
                    failure = PageFailed("http_status", f"HTTP {status} {resp.reason or ''}".rstrip(), body)
                    if status == 429:
                        self._count("throttled")
                        asked = retry_after_seconds(headers.get("retry-after"), self._now())
                        if asked is not None and asked > policy.max_retry_after_seconds:
                            failure.message += f" (Retry-After {asked:g}s is over {policy.max_retry_after_seconds:g}s)"
                            raise failure
                        wait_at_least = asked or 0.0
                    elif status < 500 and status not in _RETRY_STATUSES:
                        raise failure  # a client error: retrying asks the same wrong question
            if attempt == policy.attempts:
                failure.message += f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
                raise failure
            with self._rng_lock:
                delay = max(wait_at_least, policy.backoff(attempt, self._rng))
            self._count("retries")
            self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def close(self) -> None:
        self._pool.clear()


def _cause(e: Exception) -> str:
    # urllib3's text names the host and port, never the headers.
    return str(e.args[0]) if e.args else type(e).__name__
