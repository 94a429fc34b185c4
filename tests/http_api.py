"""A local paginated JSON API for tests and benchmarks: real HTTP (stdlib http.server in a
thread), three pagination styles, filters, a credential check, latency, and faults on demand.

    with FakeApi(records=250, per_page=50) as api:
        api.fail(3, "500", "429")          # page 3: a 500, then a 429, then the page
        url = api.url + "/items"           # page style: ?page=N&per_page=M, meta.total_pages

Endpoints (records sorted by ``updated_at``; ``updated_since`` keeps those updated after it,
``region`` those of one region):

- ``/items?page=N``: ``{"data": [...], "meta": {"page": N, "total_pages": T}}`` (``meta`` left
  out when ``meta=False``: then the end is the first empty page);
- ``/cursor?cursor=C``: ``{"data": [...], "next_cursor": "c2"}`` (null on the last page);
- ``/link?page=N``: ``{"data": [...]}`` with ``Link: <...page=N+1>; rel="next"``.

Faults, per page number (consumed in order, one per request): ``500``, ``503``, ``429`` (with
``Retry-After``), ``timeout`` (answers after ``slow_seconds``), ``truncated`` (the connection
drops mid-body), ``bad_json`` (a 200 whose JSON is cut short), ``401``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeApi", "make_records"]

REGIONS = ("north", "south", "east", "west")
_T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def make_records(n: int, start: int = 0) -> list[dict]:
    """``n`` records with ids ``start``.. and strictly increasing ``updated_at``."""
    return [
        {
            "id": f"r{i:06d}",
            "region": REGIONS[i % len(REGIONS)],
            "amount": round((i * 37 % 1000) / 10, 2),
            "updated_at": (_T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        }
        for i in range(start, start + n)
    ]


class FakeApi:
    """The API server; see the module doc.

    Args:
        records: How many records (or the records themselves).
        per_page: Records per page (a ``per_page`` query parameter overrides it).
        latency: Seconds every answer waits (the network and the server's work).
        token: When set, requests must carry ``Authorization: Bearer <token>`` or
            ``X-Api-Key: <token>`` (else 401).
        meta: Whether ``/items`` tells the number of pages.
        repeat_page: A page (by number) served twice in a row, as an API whose pages shift does.
        loop_at: ``/cursor``: the page whose next cursor points back at itself.
        slow_seconds: How long a ``timeout`` fault waits before answering.
        retry_after: The ``Retry-After`` header of a ``429`` fault.
    """

    def __init__(self, records: int | list = 100, per_page: int = 10, latency: float = 0.0, token: str | None = None,
                 meta: bool = True, repeat_page: int | None = None, loop_at: int | None = None,
                 slow_seconds: float = 1.0, retry_after: str = "0"):  # fmt: skip
        self.records = make_records(records) if isinstance(records, int) else list(records)
        self.per_page, self.latency, self.token, self.meta = per_page, latency, token, meta
        self.repeat_page, self.loop_at, self.slow_seconds = repeat_page, loop_at, slow_seconds
        self.retry_after = retry_after
        self.in_flight = self.most_in_flight = 0  # requests being answered at once (now, at most)
        self.faults: dict[int, deque] = defaultdict(deque)
        self.requests: list[tuple[str, dict]] = []  # (path with query, headers)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def fail(self, page: int, *faults: str) -> FakeApi:
        """Makes the next requests for ``page`` meet ``faults``, in order."""
        self.faults[page].extend(faults)
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, port: int = 0) -> FakeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                with api._lock:
                    api.in_flight += 1
                    api.most_in_flight = max(api.most_in_flight, api.in_flight)
                try:
                    api._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout fault)
                finally:
                    with api._lock:
                        api.in_flight -= 1

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-api", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- answers ---------------------------------------------------------------------------------

    def _pages(self, query: dict) -> list[list[dict]]:
        rows = self.records
        since = query.get("updated_since")
        if since:
            at = _instant(since)
            rows = [r for r in rows if _instant(r["updated_at"]) > at]
        if "region" in query:
            rows = [r for r in rows if r["region"] == query["region"]]
        size = int(query.get("per_page", self.per_page))
        pages = [rows[i : i + size] for i in range(0, len(rows), size)]
        if self.repeat_page is not None and 0 < self.repeat_page <= len(pages):
            pages.insert(self.repeat_page, pages[self.repeat_page - 1])
        return pages

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        with self._lock:
            self.requests.append((h.path, {k.lower(): v for k, v in h.headers.items()}))
        if self.latency:
            time.sleep(self.latency)
        if self.token is not None and self.token not in (
            (h.headers.get("Authorization") or "").removeprefix("Bearer "),
            h.headers.get("X-Api-Key"),
        ):
            return _send(h, 401, {"error": "unauthorized"})
        pages = self._pages(query)
        headers = {}
        if parts.path == "/items":
            page = int(query.get("page", 1))
            body = {"data": pages[page - 1] if 0 < page <= len(pages) else []}
            if self.meta:
                body["meta"] = {"page": page, "total_pages": len(pages)}
        elif parts.path == "/cursor":
            index = int(query.get("cursor", "c0")[1:])
            page = index + 1
            nxt = f"c{index}" if index + 1 == self.loop_at else f"c{index + 1}" if index + 1 < len(pages) else None
            body = {"data": pages[index] if index < len(pages) else [], "next_cursor": nxt}
        elif parts.path == "/link":
            page = int(query.get("page", 1))
            body = {"data": pages[page - 1] if 0 < page <= len(pages) else []}
            if page < len(pages):
                nxt = urllib.parse.urlencode({**query, "page": page + 1})
                headers["Link"] = f'<{parts.path}?{nxt}>; rel="next", <{parts.path}?page=1>; rel="first"'
        else:
            return _send(h, 404, {"error": "no such endpoint"})
        with self._lock:
            fault = self.faults[page].popleft() if self.faults[page] else None
        if fault is None:
            return _send(h, 200, body, headers)
        if fault == "timeout":
            time.sleep(self.slow_seconds)
            return _send(h, 200, body, headers)
        if fault == "429":
            return _send(h, 429, {"error": "slow down"}, {"Retry-After": self.retry_after})
        if fault in ("500", "503", "401"):
            return _send(h, int(fault), {"error": "fault"})
        data = json.dumps(body).encode()
        if fault == "bad_json":
            return _send_bytes(h, 200, data[: len(data) // 2], headers)
        if fault == "truncated":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return None
        raise ValueError(f"unknown fault {fault!r}")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _send(h, status: int, body, headers: dict | None = None) -> None:
    _send_bytes(h, status, json.dumps(body).encode(), headers)


def _send_bytes(h, status: int, data: bytes, headers: dict | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    """Serves the API until interrupted: ``python -m tests.http_api --port 8765 --records 1000``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--per-page", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each answer waits")
    ap.add_argument("--token", default=None, help="the credential requests must carry")
    ap.add_argument("--fail", action="append", default=[], metavar="PAGE:FAULT[,FAULT]",
                    help="faults for a page, e.g. 3:500,429")  # fmt: skip
    args = ap.parse_args(argv)
    api = FakeApi(args.records, args.per_page, args.latency, args.token)
    for spec in args.fail:
        page, faults = spec.split(":", 1)
        api.fail(int(page), *faults.split(","))
    api.start(args.port)
    print(f"serving {len(api.records)} records on {api.url} (/items, /cursor, /link)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
