"""A loopback TCP proxy that tests can cut and restore, to stage an endpoint outage.

Everything runs in background threads: one accepts, one per connection pumps
bytes both ways. While the proxy is cut, every current connection is reset and
every new one is accepted only to be reset at once (the client sees
``ECONNRESET``), but the upstream server, and what it holds, lives on.
``restore()`` forwards again. ``throttle()`` slows the upstream-to-client
direction, so a test can catch a long download in the middle.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable

_TICK_S = 0.05
_CHUNK = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN: a hard drop, as a dead endpoint gives."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One client connection and its upstream twin, pumped by one thread."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.kill = threading.Event()
        for sock in (client, upstream):
            sock.settimeout(_TICK_S)
        self.thread = threading.Thread(target=self._pump, name="tcp-proxy-link", daemon=True)

    def _pump(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.client, selectors.EVENT_READ, self.upstream)
            sel.register(self.upstream, selectors.EVENT_READ, self.client)
            while not self.kill.is_set():
                for key, _ in sel.select(_TICK_S):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    rate = self.proxy.rate if src is self.upstream else None
                    want = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate * _TICK_S)))
                    try:
                        data = src.recv(want)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    if not self._send(dst, data):
                        return
                    if rate is not None:
                        self.kill.wait(len(data) / rate)
        finally:
            sel.close()
            _reset(self.client)
            _reset(self.upstream)
            self.proxy._forget(self)

    def _send(self, dst: socket.socket, data: bytes) -> bool:
        """Send it all, unless the link is killed meanwhile (sockets have a short timeout)."""
        view = memoryview(data)
        while view:
            if self.kill.is_set():
                return False
            try:
                sent = dst.send(view)
            except TimeoutError:
                continue
            except OSError:
                return False
            view = view[sent:]
        return True


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.rate: float | None = None  # bytes/s upstream -> client; None: unlimited
        self.accepted = 0  # connections forwarded
        self.refused: list[bytes] = []  # first bytes of each connection reset while cut
        self._cut = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._helpers: list[threading.Thread] = []

    @classmethod
    def to(cls, endpoint: str) -> TcpProxy:
        """A proxy for ``"host:port"``."""
        host, _, port = endpoint.rpartition(":")
        return cls(host, int(port))

    # -- control ----------------------------------------------------------------

    def start(self) -> int:
        """Listen on a free loopback port; return it."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(_TICK_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)
        self._acceptor.start()
        return self.port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Reset every open connection and every new one until ``restore()``."""
        self._cut.set()
        self._drop_links()

    def restore(self) -> None:
        """Accept and forward again."""
        self._cut.clear()

    def throttle(self, bytes_per_s: float | None) -> None:
        """Limit the upstream-to-client rate of every connection (``None``: no limit)."""
        self.rate = bytes_per_s

    def stop(self) -> None:
        """Close everything and wait for the background threads."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        self._drop_links()
        for helper in self._helpers:
            helper.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------

    def _drop_links(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.kill.set()
        for link in links:
            link.thread.join(timeout=5)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            if self._cut.is_set():
                self._spawn(self._refuse, client)
            else:
                self._spawn(self._connect, client)

    def _spawn(self, target: Callable[[socket.socket], None], client: socket.socket) -> None:
        thread = threading.Thread(target=target, args=(client,), name="tcp-proxy-open", daemon=True)
        self._helpers = [t for t in self._helpers if t.is_alive()]
        self._helpers.append(thread)
        thread.start()

    def _refuse(self, client: socket.socket) -> None:
        """Note what the client meant to send (its request line), then reset it."""
        client.settimeout(0.5)
        first = b""
        with contextlib.suppress(OSError):
            first = client.recv(4096).split(b"\r\n", 1)[0]
        with self._lock:
            self.refused.append(first)
        _reset(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        link = _Link(self, client, upstream)
        with self._lock:
            if self._cut.is_set() or self._stopping.is_set():
                dead = True
            else:
                dead = False
                self._links.add(link)
                self.accepted += 1
                # Started under the lock: cut() then never finds a link whose thread
                # it cannot join yet.
                link.thread.start()
        if dead:
            _reset(client)
            _reset(upstream)

    def refused_matching(self, fragment: bytes) -> int:
        """How many reset connections had ``fragment`` in their first line."""
        with self._lock:
            return sum(1 for line in self.refused if fragment in line)
