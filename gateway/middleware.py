"""ASGI middleware: request ids on every request and body limits enforced while streaming."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError
from gateway.problems import openai_error, problem, speaks_openai

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Where the auth gate leaves the admitted caller in the request's state.
PRINCIPAL_KEY = "principal"


class RequestIdMiddleware:
    """Take a safe ``X-Request-ID`` or make one; echo it and bind it to the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        send_with_id = adding_headers(send, [(b"x-request-id", request_id.encode())])
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def adding_headers(
    send: Send, extra: Sequence[tuple[bytes, bytes]], *, keep_present: bool = False
) -> Send:
    """``send`` adding ``extra`` to the response head (``keep_present``: not over a route's own)."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers} if keep_present else set()
            headers.extend((name, value) for name, value in extra if name not in present)
            message["headers"] = headers
        await send(message)

    return send_with_headers


class _BodyTooLarge(ApiError):
    """Raised from ``receive`` so the app's handlers answer 413 mid-stream."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the limit is {limit} bytes")


def announces_body(scope: Scope) -> bool:
    """Whether the request head says a body follows (a length above 0, or chunked)."""
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


class BodyLimitMiddleware:
    """Refuse bodies over their limit with 413, counting as they stream in.

    ``limits`` maps a path prefix to its own limit (uploads are larger than JSON).
    A request that no bearer token admitted (no principal in its state) may send at
    most ``anonymous`` bytes, except under the ``self_authenticated`` prefixes, whose
    routes check their own credentials. A response that starts before the body has
    been read to its end closes the connection: the rest is never read.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: int,
        limits: dict[str, int],
        anonymous: int,
        self_authenticated: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.default = default
        self.limits = sorted(limits.items(), key=lambda kv: -len(kv[0]))
        self.anonymous = anonymous
        self.self_authenticated = self_authenticated

    def _limit_for(self, scope: Scope) -> int:
        path: str = scope["path"]
        limit = next((lim for prefix, lim in self.limits if path.startswith(prefix)), self.default)
        admitted = PRINCIPAL_KEY in scope.get("state", {})
        if admitted or path.startswith(self.self_authenticated):
            return limit
        return min(limit, self.anonymous)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit, scope["path"])
            return
        seen = 0
        started = False
        exceeded = False
        body_read = not announces_body(scope)

        async def counting_receive() -> Message:
            nonlocal seen, exceeded, body_read
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _BodyTooLarge(limit)
                body_read = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the aborted body (FastAPI turns it into a
                # 400 while parsing forms), the answer is 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, limit, scope["path"])
                return
            if message["type"] == "http.response.start":
                started = True
                if not body_read:
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _send_413(send, limit, scope["path"])


async def _send_413(send: Send, limit: int, path: str) -> None:
    """413 as a problem document, or in OpenAI's shape on the paths its client calls."""
    detail = f"the limit is {limit} bytes"
    if speaks_openai(path):
        answer = openai_error(413, "body-too-large", f"request body too large: {detail}")
    else:
        answer = problem(413, "body-too-large", "Request body too large", detail)
    payload = bytes(answer.body)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", answer.media_type.encode() if answer.media_type else b""),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
