"""The durable inbox of S3 notifications: record first, acknowledge, process later.

Webhook deliveries and listener events are inserted here before they are
acknowledged; the processor claims them with ``SKIP LOCKED``. A claimed event
is hidden for a while (``run_after``), so one whose processor died is retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from psycopg.rows import class_row

from pipeline.db.database import AsyncConn
from pipeline.sources.events import ObjectEvent, sequencer_is_newer

EVENTS_CHANNEL = "ai2text_s3_events"
Origin = Literal["webhook", "listen", "reconcile"]
EventOutcome = Literal["done", "skipped", "failed"]
CLAIM_HIDE_S = 60.0


@dataclass(frozen=True, slots=True)
class PendingEvent:
    id: int
    origin: str
    bucket: str
    key: str
    event_name: str
    size: int | None
    etag: str | None
    version_id: str | None
    sequencer: str | None
    attempts: int
    seen_etag: str | None


async def record_events(conn: AsyncConn, events: Iterable[ObjectEvent], origin: Origin) -> int:
    """Store events in one transaction; committed rows are safe to acknowledge."""
    rows = [
        (origin, e.bucket, e.key, e.event_name, e.size, e.etag, e.version_id, e.sequencer)
        for e in events
    ]
    if not rows:
        return 0
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO s3_events (origin, bucket, key, event_name, size_bytes, etag,"
                " version_id, sequencer) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
        await conn.execute(f"NOTIFY {EVENTS_CHANNEL}")
    return len(rows)


async def claim_event(conn: AsyncConn) -> PendingEvent | None:
    async with conn.transaction(), conn.cursor(row_factory=class_row(PendingEvent)) as cur:
        await cur.execute(
            "WITH next AS ("
            " SELECT id FROM s3_events WHERE state = 'pending' AND run_after <= now()"
            " ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT 1)"
            " UPDATE s3_events e SET attempts = e.attempts + 1, updated_at = now(),"
            "  run_after = now() + make_interval(secs => %s)"
            " FROM next WHERE e.id = next.id"
            " RETURNING e.id, e.origin, e.bucket, e.key, e.event_name, e.size_bytes AS size,"
            "  e.etag, e.version_id, e.sequencer, e.attempts, e.seen_etag",
            (CLAIM_HIDE_S,),
        )
        return await cur.fetchone()


async def finish_event(
    conn: AsyncConn,
    event_id: int,
    state: EventOutcome,
    *,
    audio_id: uuid.UUID | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE s3_events SET state = %s, audio_id = %s, error = %s, updated_at = now()"
        " WHERE id = %s",
        (state, audio_id, error, event_id),
    )


async def defer_event(
    conn: AsyncConn, event_id: int, *, delay_s: float, seen_etag: str | None, error: str | None
) -> None:
    """Look at the event again after ``delay_s`` (object still settling, or S3 down)."""
    await conn.execute(
        "UPDATE s3_events SET run_after = now() + make_interval(secs => %s), seen_etag = %s,"
        " error = %s, updated_at = now() WHERE id = %s",
        (delay_s, seen_etag, error, event_id),
    )


async def newer_event_done(conn: AsyncConn, event: PendingEvent) -> bool:
    """Whether an event with a later sequencer for the same object was already handled."""
    if event.sequencer is None:
        return False
    cur = await conn.execute(
        "SELECT sequencer FROM s3_events WHERE bucket = %s AND key = %s AND state = 'done'"
        " AND sequencer IS NOT NULL AND id <> %s",
        (event.bucket, event.key, event.id),
    )
    return any(
        sequencer_is_newer(str(r["sequencer"]), event.sequencer) for r in await cur.fetchall()
    )
