"""Waiting for an audio's job to end, woken by PostgreSQL NOTIFY (payload: audio id)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict

import psycopg
import structlog

from pipeline.db.database import Database
from pipeline.queue import TRANSCRIPTS_CHANNEL

log = structlog.get_logger(__name__)


class TranscriptWaiter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self.db.listen_connection()
                async with conn:
                    await conn.execute(f"LISTEN {TRANSCRIPTS_CHANNEL}")
                    async for note in conn.notifies():
                        for event in self._waiting.get(note.payload, ()):
                            event.set()
            except psycopg.OperationalError as exc:
                log.warning("transcript notifications interrupted; reconnecting", error=str(exc))
                # Wake everyone so they re-check the database instead of waiting blind.
                for events in self._waiting.values():
                    for event in events:
                        event.set()
                await asyncio.sleep(1.0)
