"""A threaded webhook receiver on 127.0.0.1 for the ``ai2text up`` tests.

It keeps every request with the status it answered: 503 for the first
``fail_first`` ones (so the delivery is retried), 200 after that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HookServer(ThreadingHTTPServer):
    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.requests: list[tuple[dict[str, str], bytes, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The (headers, body) of each request answered 200, in arrival order."""
        with self.lock:
            return [(h, b) for h, b, status in self.requests if status == 200]


class _Handler(BaseHTTPRequestHandler):
    server: HookServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = 503 if len(self.server.requests) < self.server.fail_first else 200
            self.server.requests.append(
                ({k.lower(): v for k, v in self.headers.items()}, body, status)
            )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(*, fail_first: int = 0) -> Iterator[HookServer]:
    """A started ``HookServer``, shut down on exit."""
    server = HookServer(fail_first=fail_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
