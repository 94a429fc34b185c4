"""A local HTTP receiver for tests: records every request and answers with chosen statuses.

    with Receiver(statuses=[503, 200]) as rx:
        post(rx.url + "/hook", ...)
        assert rx.requests[0].method == "POST"

The first requests get ``statuses`` in order; later ones get ``default_status``.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Receiver", "Recorded", "closed_port_url"]


@dataclass
class Recorded:
    """One request as the receiver saw it.

    Args:
        method: HTTP method.
        path: Request path with query string.
        headers: Request headers (lower-case names).
        body: Raw body bytes.
        status: The status the receiver answered with.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 200

    def json(self):
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


@dataclass
class Receiver:
    """A threaded http.server on 127.0.0.1 and a free port, recording requests.

    Args:
        statuses: Statuses for the first requests, in order.
        default_status: Status for requests after those.
        body: Response body.
    """

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    body: bytes = b"ok"
    requests: list[Recorded] = field(default_factory=list, init=False)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._pending = list(self.statuses)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            status = self._pending.pop(0) if self._pending else self.default_status
            self.requests.append(
                Recorded(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    status=status,
                )
            )
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        handler.wfile.write(self.body)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                receiver._answer(self)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="test-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url() -> str:
    """An http URL on a local port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
