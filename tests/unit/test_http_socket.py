"""The listening socket every ai2text HTTP server uses (gateway and ops endpoint)."""

from __future__ import annotations

import socket

import pytest

from pipeline.errors import ConfigError
from pipeline.http_serve import bind_socket


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
