"""One LISTEN connection per process, shared by every caller that waits on a NOTIFY.

The hub owns one autocommit connection (opened on the first subscription), LISTENs
on every channel that has subscribers, and hands each notification to a bounded
per-subscriber buffer, so a slow subscriber never holds up the others.

A notification is a hint to look at a table, never the data itself. Whenever one
may have been lost, a subscriber receives a ``missed`` notice and re-checks:

- its buffer overflowed (the notification was dropped);
- the connection dropped (sent when it is noticed, and again once LISTEN is back,
  since anything sent meanwhile went nowhere);
- it subscribed while the hub had no connection (sent once LISTEN is in place).

Reconnecting backs off like every other database client here (``Backoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import psycopg
import structlog

from pipeline.backoff import Backoff
from pipeline.db.database import AsyncConn, Database
from pipeline.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# Notifications a subscriber may leave unread before newer ones are dropped (and it is
# told it missed some).
DEFAULT_MAX_PENDING = 1000
# Channel names go into LISTEN as they are: plain lower-case identifiers only.
_CHANNEL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification (``payload``), or ``missed``: some may be lost, re-check the table."""

    channel: str
    payload: str = ""
    missed: bool = False


class Subscription:
    """What one caller receives from one channel; read with ``get``/``wait`` or ``async for``."""

    def __init__(self, hub: NotificationHub, channel: str, max_pending: int) -> None:
        self.channel = channel
        self._hub = hub
        self._max_pending = max_pending
        self._pending: deque[str] = deque()
        self._missed = False
        self._ready = asyncio.Event()
        # Set while this channel may have gone unheard since the subscriber last looked:
        # it is told ``missed`` as soon as LISTEN is in place again.
        self.gap = False

    def deliver(self, payload: str) -> None:
        if len(self._pending) >= self._max_pending:
            self._missed = True  # dropped: the subscriber re-checks instead
        else:
            self._pending.append(payload)
        self._ready.set()

    def mark_missed(self) -> None:
        self._missed = True
        self._ready.set()

    def get_nowait(self) -> Notice | None:
        """The next notice if one is buffered, else ``None``."""
        if self._missed:
            self._missed = False
            notice = Notice(self.channel, missed=True)
        elif self._pending:
            notice = Notice(self.channel, self._pending.popleft())
        else:
            return None
        if not self._pending and not self._missed:
            self._ready.clear()
        return notice

    async def get(self) -> Notice:
        """The next notice, waiting as long as it takes."""
        while True:
            notice = self.get_nowait()
            if notice is not None:
                return notice
            await self._ready.wait()

    async def wait(self, timeout_s: float) -> Notice | None:
        """The next notice, or ``None`` after ``timeout_s``."""
        try:
            return await asyncio.wait_for(self.get(), timeout_s)
        except TimeoutError:
            return None

    def clear(self) -> None:
        """Forget what is buffered (the caller is about to re-check the table anyway)."""
        self._pending.clear()
        self._missed = False
        self._ready.clear()

    def __aiter__(self) -> AsyncIterator[Notice]:
        return self

    async def __anext__(self) -> Notice:
        return await self.get()

    async def close(self) -> None:
        await self._hub.unsubscribe(self)


class NotificationHub:
    """Owns the process's LISTEN connection; ``subscribe`` by channel.

    Use as an async context manager (or ``start``/``close``). It connects only once
    something subscribes, so a process that waits on nothing holds no extra connection.
    """

    def __init__(self, db: Database, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.db = db
        self.max_pending = max_pending
        self.backoff = Backoff("database notifications (LISTEN)", base_s=0.5, cap_s=10.0)
        self._subscribers: dict[str, set[Subscription]] = {}
        self._conn: AsyncConn | None = None
        self._down = False  # the last try to connect failed, or the connection dropped
        self._listening: set[str] = set()
        self._changed = asyncio.Event()
        # Subscribers waiting for their LISTEN to be in place (True) or to fail (False).
        self._awaiting_listen: list[asyncio.Future[bool]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notification-hub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self._release_waiters()
        self._mark_all_missed()  # wake anyone still waiting; they see their stop signal

    async def __aenter__(self) -> NotificationHub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def subscribe(self, channel: str, *, max_pending: int | None = None) -> Subscription:
        """Start receiving ``channel``'s notifications.

        Returns once LISTEN is in place, so nothing committed after this call is
        missed. While the database is unreachable it returns at once instead, and a
        ``missed`` notice follows when LISTEN is in place.
        """
        if not _CHANNEL_NAME.fullmatch(channel):
            raise ValueError(f"not a channel name: {channel!r}")
        if self._task is None:
            raise RuntimeError("the notification hub is not started")
        sub = Subscription(self, channel, max_pending or self.max_pending)
        self._subscribers.setdefault(channel, set()).add(sub)
        if channel in self._listening and self.connected:
            return sub
        self._changed.set()
        if self._down:
            sub.gap = True
            return sub
        listening: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._awaiting_listen.append(listening)
        if not await listening:
            sub.gap = True
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.channel]
            self._changed.set()  # UNLISTEN when the reader next gets to it

    @contextlib.asynccontextmanager
    async def subscription(
        self, channel: str, *, max_pending: int | None = None
    ) -> AsyncIterator[Subscription]:
        sub = await self.subscribe(channel, max_pending=max_pending)
        try:
            yield sub
        finally:
            await self.unsubscribe(sub)

    async def _run(self) -> None:
        """Connect, LISTEN, read and dispatch; on loss, tell subscribers and reconnect."""
        try:
            while True:
                if not self._subscribers:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                try:
                    conn = await self.db.listen_connection()
                except psycopg.OperationalError as exc:
                    self._went_down()
                    await asyncio.sleep(self.backoff.failed(str(exc)))
                    continue
                try:
                    await self._serve(conn)
                except psycopg.Error as exc:
                    log.warning("notification connection lost; reconnecting", error=str(exc))
                    error = str(exc)
                except Exception as exc:  # noqa: BLE001 - the process's only listener must live on
                    log.exception("notification hub failed; reconnecting")
                    error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._conn = None
                    self._listening = set()
                    await conn.close()
                self._went_down()
                await asyncio.sleep(self.backoff.failed(error))
        finally:
            self._conn = None

    async def _serve(self, conn: AsyncConn) -> NoReturn:
        self._conn = conn
        self._listening = set()
        while True:
            self._changed.clear()
            await self._sync_channels(conn)
            if self._down:
                self._down = False
                self.backoff.succeeded()
            await self._read_until_changed(conn)

    async def _sync_channels(self, conn: AsyncConn) -> None:
        """LISTEN on channels that gained subscribers, UNLISTEN those that lost them all."""
        waiters, self._awaiting_listen = self._awaiting_listen, []
        wanted = set(self._subscribers)
        for channel in sorted(wanted - self._listening):
            await conn.execute(f"LISTEN {channel}")
            self._listening.add(channel)
        for channel in sorted(self._listening - wanted):
            await conn.execute(f"UNLISTEN {channel}")
            self._listening.discard(channel)
        for listening in waiters:
            if not listening.done():
                listening.set_result(True)
        for channel in self._listening:
            for sub in self._subscribers.get(channel, ()):
                if sub.gap:
                    sub.gap = False
                    sub.mark_missed()

    async def _read_until_changed(self, conn: AsyncConn) -> None:
        """Dispatch notifications until the set of channels changes (or the link fails)."""
        reading = asyncio.create_task(self._dispatch(conn))
        changed = asyncio.create_task(self._changed.wait())
        try:
            await asyncio.wait({reading, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            # Waiting for data on an idle connection: safe to interrupt. Waited on with
            # asyncio.wait, which never mistakes this task's own cancellation for its.
            reading.cancel()
            await asyncio.wait({reading})
        if not reading.cancelled():
            reading.result()  # the link's error: reading never ends otherwise

    async def _dispatch(self, conn: AsyncConn) -> None:
        async for note in conn.notifies():
            for sub in list(self._subscribers.get(note.channel, ())):
                sub.deliver(note.payload)
        raise psycopg.OperationalError("the notification stream ended")

    def _went_down(self) -> None:
        """Wake every subscriber to re-check now (once per outage), and again once LISTEN
        is back."""
        was_down, self._down = self._down, True
        self._release_waiters()
        for subs in self._subscribers.values():
            for sub in subs:
                if not was_down:
                    sub.mark_missed()
                sub.gap = True

    def _mark_all_missed(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.mark_missed()

    def _release_waiters(self) -> None:
        waiters, self._awaiting_listen = self._awaiting_listen, []
        for listening in waiters:
            if not listening.done():
                listening.set_result(False)


@contextlib.asynccontextmanager
async def shared_or_own(
    db: Database, hub: NotificationHub | None
) -> AsyncIterator[NotificationHub]:
    """``hub`` when the process shares one; else a hub of the caller's own, closed after."""
    if hub is not None:
        yield hub
        return
    async with NotificationHub(db) as own:
        yield own
