"""HTTP delivery with bounded retries that reports failure instead of raising.

Alerts and metric pushes run after a run has finished; a receiver that is down must not turn a
finished run into a failed one, so the caller gets a :class:`DeliveryResult` to log or show.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DeliveryResult", "deliver", "check_http_url"]

# Worth another attempt: the receiver is overloaded or restarting, or rate-limits us.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery.

    Args:
        sent: True when the receiver answered 2xx.
        status: The last HTTP status received, or None when no response came back.
        attempts: Requests made (0 when there was nothing to send).
        error: Why the delivery failed, or None.
    """

    sent: bool
    status: int | None
    attempts: int
    error: str | None = None


def check_http_url(url: str, what: str) -> str:
    """Returns ``url``; raises ValueError unless it is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {url!r}")
    return url


def deliver(
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """Sends one request, retrying 429/5xx answers and connection errors.

    Args:
        method: HTTP method (POST, PUT).
        url: Full request URL.
        body: Request body.
        headers: Request headers.
        timeout: Seconds per attempt.
        retries: Further attempts after the first (so at most ``retries + 1`` requests).
        backoff: Seconds before the first retry, doubled for each one after it.
        sleep: Called with the delay before each retry (injected by tests).
    """
    if retries < 0 or timeout <= 0 or backoff < 0:
        raise ValueError("retries and backoff must be >= 0 and timeout > 0")
    status: int | None = None
    error: str | None = None
    for attempt in range(1, retries + 2):
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                return DeliveryResult(True, response.status, attempt)
        except urllib.error.HTTPError as e:
            status, error = e.code, f"HTTP {e.code} {e.reason}"
            e.close()
            if e.code not in _RETRY_STATUS:
                return DeliveryResult(False, status, attempt, error)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            status, error = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt <= retries:
            sleep(backoff * 2 ** (attempt - 1))
    return DeliveryResult(False, status, retries + 1, error)
