"""An HTTP proxy in front of a real object-store server that fails some requests on purpose.

    with FaultProxy(moto_url, every={4: "503", 7: "500", 11: "reset"}) as proxy:
        ...  # point the client at proxy.url; proxy.injected counts what was failed

Faults: ``503`` (S3's ``SlowDown``: throttling), ``500`` (``InternalError``) and ``reset``
(the connection is closed without an answer). ``every={n: fault}`` fails every n-th request;
``proxy.outage(fault, after=n, count=k)`` fails k requests in a row after the next n (every
request, until ``proxy.restore()``, without ``count``). Requests are counted
from 1, across all clients; a request that matches several ``every`` entries meets the first.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FaultProxy"]

_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    """See the module doc."""

    def __init__(self, upstream: str, every: dict[int, str] | None = None):
        parsed = urllib.parse.urlsplit(upstream)
        self._host, self._port = parsed.hostname, parsed.port
        self.every = dict(every or {})
        self._outage: str | None = None
        self._outage_from, self._outage_to = 0, None
        self._lock = threading.Lock()
        self.requests = 0
        self.injected: Counter = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def outage(self, fault: str = "503", after: int = 0, count: int | None = None) -> None:
        """Fails every request after the next ``after`` (counting from now); only ``count`` of
        them when given (a burst: a client that retries more often than that gets through)."""
        self._outage, self._outage_from = fault, self.requests + after
        self._outage_to = None if count is None else self._outage_from + count

    def restore(self) -> None:
        self._outage = None

    def _fault_for_next(self) -> str | None:
        with self._lock:
            self.requests += 1
            down = self._outage if self._outage and self.requests > self._outage_from else None
            if down and self._outage_to is not None and self.requests > self._outage_to:
                down = None
            fault = down or next((f for n, f in self.every.items() if self.requests % n == 0), None)
            if fault:
                self.injected[fault] += 1
            return fault

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the test output stays readable
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault_for_next()
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault:
                    status, code, message = _ERRORS[fault]
                    xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                           f"<Message>{message}</Message></Error>").encode()  # fmt: skip
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status, answer.reason)
                    head = self.command == "HEAD"  # its Content-Length is the object's, with no body
                    for k, v in answer.getheaders():
                        if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                            self.send_header(k, v)
                    if not head:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
