"""Waiting for an audio's job to end, woken by PostgreSQL NOTIFY (payload: audio id).

Also woken when the running job publishes new segments (``partials.SEGMENTS_CHANNEL``),
for a caller streaming them as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

from pipeline.db.database import Database
from pipeline.db.jobs import TRANSCRIPTS_CHANNEL
from pipeline.db.notifications import Notice, NotificationHub, shared_or_own
from pipeline.db.partials import SEGMENTS_CHANNEL
from pipeline.tasks import cancel_and_wait


class TranscriptWaiter:
    """Wakes the requests waiting on an audio when its job ends.

    Reads the process's notification hub (``notifications``), or, without one, a hub
    of its own while started.
    """

    def __init__(self, db: Database, notifications: NotificationHub | None = None) -> None:
        self.db = db
        self.notifications = notifications
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def wait(self, audio_id: uuid.UUID, timeout_s: float) -> None:
        """Return when a notification for ``audio_id`` arrives or ``timeout_s`` passes.

        Callers check the database before and after: a notification is a hint to look.
        """
        event = asyncio.Event()
        key = str(audio_id)
        self._waiting[key].add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            self._waiting[key].discard(event)
            if not self._waiting[key]:
                del self._waiting[key]

    @contextlib.contextmanager
    def watching(self, audio_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set by every notice about ``audio_id`` while the block runs.

        Registered at once: clear it, look at the database, then wait on it, and no
        notice sent after the look is missed.
        """
        event = asyncio.Event()
        key = str(audio_id)
        self._waiting[key].add(event)
        try:
            yield event
        finally:
            self._waiting[key].discard(event)
            if not self._waiting[key]:
                del self._waiting[key]

    async def _listen(self) -> None:
        async with (
            shared_or_own(self.db, self.notifications) as hub,
            hub.subscription(TRANSCRIPTS_CHANNEL) as endings,
            hub.subscription(SEGMENTS_CHANNEL) as segments,
        ):
            await asyncio.gather(self._wake_on(endings), self._wake_on(segments))

    async def _wake_on(self, notices: AsyncIterator[Notice]) -> None:
        async for notice in notices:
            self._wake(notice.payload, everyone=notice.missed)

    def _wake(self, audio_id: str, *, everyone: bool) -> None:
        # After a gap, everyone re-checks the database instead of waiting blind.
        groups = self._waiting.values() if everyone else [self._waiting.get(audio_id, set())]
        for events in groups:
            for event in events:
                event.set()
