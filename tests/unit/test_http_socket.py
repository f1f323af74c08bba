"""The listening socket every ai2text HTTP server uses (gateway and ops endpoint), and the
deadlines and connection limit of the connections it serves, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from pipeline.errors import ConfigError
from pipeline.http_serve import ConnectionLimits, bind_socket, serve_asgi


def test_accepted_connections_get_tcp_nodelay_from_asyncio() -> None:
    """asyncio sets TCP_NODELAY on accepted sockets only when proto is IPPROTO_TCP;
    an accepted socket inherits the listener's proto. Without it every keep-alive
    response after the first waited ~40 ms for the client's delayed ACK."""
    listener = bind_socket("127.0.0.1", 0)
    try:
        client = socket.create_connection(listener.getsockname()[:2])
        listener.setblocking(True)
        accepted, _ = listener.accept()
        with client, accepted:
            assert listener.proto == socket.IPPROTO_TCP
            assert accepted.proto == socket.IPPROTO_TCP
    finally:
        listener.close()


def test_a_busy_port_is_a_config_error_naming_the_server() -> None:
    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(ConfigError, match="metrics server cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", port, what="metrics server")
    finally:
        first.close()


# -- deadlines and the connection limit of served connections ------------------------------


async def _count_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny ASGI app: reads the whole body and answers with its length."""
    assert scope["type"] == "http"
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(limits: ConnectionLimits) -> Iterator[tuple[str, int]]:
    """``serve_asgi`` on loopback in a thread of its own; yields the address."""
    listener = bind_socket("127.0.0.1", 0)
    address = listener.getsockname()[:2]
    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        control["loop"] = asyncio.get_running_loop()
        control["stop"] = asyncio.Event()
        started.set()
        await serve_asgi(_count_body, listener, control["stop"], limits=limits)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the server thread did not start"
    try:
        yield address
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(15)
        assert not thread.is_alive(), "the server did not stop"


def closed_within(conn: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``conn`` (EOF or reset), or None past ``seconds``."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def request(address: tuple[str, int], head: bytes, body: bytes = b"") -> bytes:
    """One complete request; the raw response (the server closes after it)."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(head + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


HEAD = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def test_a_request_head_that_stops_arriving_is_closed_after_the_header_timeout() -> None:
    with serving(ConnectionLimits(header_timeout_s=0.5)) as address:
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")  # no blank line: never complete
            after = closed_within(conn, 10)
        assert after is not None, "the server kept a half-sent request head open"
        assert after >= 0.3
        # The server itself is fine: a whole request is answered.
        assert request(address, HEAD).startswith(b"HTTP/1.1 200 ")


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    with serving(ConnectionLimits(header_timeout_s=0.5)) as address:
        with socket.create_connection(address, timeout=10) as conn:
            assert closed_within(conn, 10) is not None, "a silent connection stayed open"


def test_a_request_head_dribbled_a_byte_at_a_time_is_still_closed_at_its_deadline() -> None:
    with serving(ConnectionLimits(header_timeout_s=1.0)) as address:
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 10:
                # A byte every 0.1 s: progress, but the head never ends.
                readable, _, _ = select.select([conn], [], [], 0.1)
                if readable:
                    closed = closed_within(conn, 1) is not None
                    break
                try:
                    conn.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            assert closed, "a head that keeps growing slowly was never cut off"
            assert time.monotonic() - started < 5


def test_a_stalled_body_is_closed_after_the_body_idle_timeout() -> None:
    limits = ConnectionLimits(header_timeout_s=0.5, body_idle_timeout_s=0.5)
    with serving(limits) as address:
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(
                b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
            )
            assert closed_within(conn, 10) is not None, "a stalled body kept its connection"


def test_a_slow_body_that_keeps_coming_is_read_to_its_end() -> None:
    limits = ConnectionLimits(header_timeout_s=0.5, body_idle_timeout_s=1.0)
    with serving(limits) as address:
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(
                b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
            )
            for _ in range(20):  # 2 s in all: twice the idle timeout, never 1 s of silence
                readable, _, _ = select.select([conn], [], [], 0.1)
                assert not readable, "the server answered or closed mid-body"
                conn.sendall(b"x")
            response = b""
            while chunk := conn.recv(65536):  # the server closes after its answer
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 "), response
        assert response.endswith(b"\r\n\r\n20")


def test_requests_past_max_connections_get_503() -> None:
    with serving(ConnectionLimits(header_timeout_s=30, max_connections=2)) as address:
        with socket.create_connection(address, timeout=10) as first:
            first.sendall(b"GET / HTTP/1.1\r\n")  # held open, half sent
            assert request(address, HEAD).startswith(b"HTTP/1.1 200 ")
            with socket.create_connection(address, timeout=10) as second:
                second.sendall(b"GET / HTTP/1.1\r\n")
                refused = request(address, HEAD)
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        # Once the server has seen them go, requests are served again.
        deadline = time.monotonic() + 10
        while not request(address, HEAD).startswith(b"HTTP/1.1 200 "):
            assert time.monotonic() < deadline, "still refused after the connections closed"
