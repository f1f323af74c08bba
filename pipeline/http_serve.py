"""Serving an ASGI app with uvicorn inside an ai2text process, under its own signal handling.

The socket is bound before anything else starts, so a busy port is a clear
``ConfigError`` at once and port 0 (any free port) can be reported.

uvicorn bounds the size of a request head but not the time it takes to arrive, and
never closes a connection that is sent nothing at all. :class:`ConnectionLimits`
adds those deadlines (a slow or silent client is disconnected) and caps how many
connections may be open at once (past it, requests get 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import h11
import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many may be connected.

    ``header_timeout_s`` counts from the connection (or the end of the previous
    response) to the end of the request head; ``body_idle_timeout_s`` is the longest
    silence while a body is being sent and the app is waiting for it.
    ``trusted_proxies`` are the peers whose ``X-Forwarded-For`` names the client.
    """

    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    max_connections: int = 1000
    trusted_proxies: tuple[str, ...] = ()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines on reading each request."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch(progress=False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(progress=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def _watch(self, *, progress: bool) -> None:
        """Arm the timer that fits where the client is in its request; stop the other."""
        if self.transport.is_closing():
            self._stop_head_timer()
            self._stop_body_timer()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._head_timed_out
                )
        else:
            self._stop_head_timer()
        if state is h11.SEND_BODY:
            if progress or self._body_timer is None:
                self._stop_body_timer()
                self._body_timer = self.loop.call_later(
                    self.limits.body_idle_timeout_s, self._body_timed_out
                )
        else:
            self._stop_body_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closing a connection whose request head did not arrive in time")
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The app is not reading yet: the silence is ours, not the client's.
            self._watch(progress=True)
            return
        log.debug("closing a connection whose request body stalled")
        self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class for one server (uvicorn builds it with fixed arguments)."""

    class _Guarded(GuardedH11Protocol):
        pass

    _Guarded.limits = limits
    return _Guarded


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our process: our own signal handlers decide when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int, *, what: str = "server") -> socket.socket:
    """Listen before serving; ``what`` names the server in the error for a busy port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on for accepted connections only
    # when the socket says TCP, and without it every keep-alive response after the
    # first waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{what} cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    limits: ConnectionLimits = ConnectionLimits(),  # noqa: B008 - frozen value object
) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set; close the socket after."""
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
        # uvicorn counts the new connection itself: N + 1 lets N be served at once.
        limit_concurrency=limits.max_connections + 1,
        # Without a trusted proxy, X-Forwarded-For is the client's word: ignore it.
        proxy_headers=bool(limits.trusted_proxies),
        forwarded_allow_ips=list(limits.trusted_proxies) or None,
    )
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stop_wait = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stop_wait.cancel()
        await serving
        sock.close()
