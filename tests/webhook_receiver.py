"""A real webhook receiver on 127.0.0.1 for tests: records, fails, hangs as told.

Each path behaves by its ``Endpoint``: answer ``fail_first`` requests with 503, then
200 (or always ``status``), or hang until released. Accepted events are deduplicated
by their id, as a real receiver would; every request is kept for the assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from pipeline.http_serve import bind_socket, serve_asgi, url_of

TOLERANCE_S = 300


def verify_signature(secret: str, body: bytes, header: str, *, now: float | None = None) -> bool:
    """The receiver's check as the README documents it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs((now or time.time()) - timestamp) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Endpoint:
    fail_first: int = 0
    status: int = 200
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # event id -> times seen

    @property
    def accepted_ids(self) -> set[str]:
        return set(self.accepted)


class Receiver:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.released = asyncio.Event()
        self.url = ""
        self.hanging = 0

    def endpoint(self, path: str, **behaviour: Any) -> str:
        self.endpoints[path] = Endpoint(**behaviour)
        return self.url + path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        endpoint = self.endpoints.get(scope["path"])
        if endpoint is None:
            await _answer(send, 404)
            return
        if endpoint.hang:
            self.hanging += 1
            await self.released.wait()
        failing = len(endpoint.requests) < endpoint.fail_first
        status = 503 if failing else endpoint.status
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        endpoint.requests.append(Received(scope["path"], headers, body, status))
        if 200 <= status < 300:
            event_id = json.loads(body)["id"]
            endpoint.accepted[event_id] = endpoint.accepted.get(event_id, 0) + 1
        await _answer(send, status)


async def _answer(send: Send, status: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"busy" if status == 503 else b"ok"})


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    sock = bind_socket("127.0.0.1", 0, what="test webhook receiver")
    receiver.url = url_of(sock)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_asgi(receiver, sock, stop))
    try:
        yield receiver
    finally:
        receiver.released.set()
        stop.set()
        await serving
