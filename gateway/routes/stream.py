"""``GET /v1/events``: audio state changes and transcription progress as Server-Sent Events.

State changes come from the ``events`` table (a trigger writes one with every audio
state change, and notifies ``ai2text_events``); each is sent as ``event:
audio.<state>`` with ``id: <seq>``, so a client that reconnects with
``Last-Event-ID`` gets what it missed. The NOTIFY (its payload: the tenant) is only a
wake-up: the table is read again on every one of the caller's tenant, on a ``missed``
notice and at every keep-alive. ``seq`` is taken
when a transaction writes the event, not when it commits, so one may become visible
after a higher one was sent: each read looks ``LOOKBACK`` numbers behind the highest
seq sent and skips those already sent.

Progress notices (``ai2text_progress``, about once a second per running job) are sent
as ``event: audio.progress`` without an id: they are not kept, and a lost one is
replaced by the next. With each, the segments the worker has produced since the last
(``job_partial_segments``) follow as ``event: segment`` (no id either: a preview; the
transcript stored at the end is the truth), each stream reading after the last it sent.

The caller sees what ``GET /v1/audio`` shows it: a tenant's token its tenant's audio,
an admin's all. The stream ends when the client goes away and when the server stops.
A slow client cannot make the process buffer without bound: each stream holds at
most a few hundred notices, and past that re-reads the table (progress is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.security import require
from pipeline.db.database import AsyncConn, Database
from pipeline.db.notifications import NotificationHub, shared_or_own
from pipeline.db.notify import next_notices
from pipeline.db.partials import Follower, segments_after
from pipeline.errors import DatabaseError, TransientError
from pipeline.progress import EVENTS_CHANNEL, PROGRESS_CHANNEL
from pipeline.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
AudioReader = Annotated[Principal, Depends(require("audio:read"))]

# How far behind the highest seq sent each read looks for late commits.
LOOKBACK = 256
# Events read at once; more wait for the next read (which follows at once).
BATCH = 200
# Notices one stream may leave unread before it is told it missed some.
MAX_PENDING = 256
# Running audio one stream remembers the last segment sent of (the oldest go first).
MAX_FOLLOWED = 1024


@dataclass(slots=True)
class StreamControl:
    """What every stream of one app shares: the process's LISTEN hub and its stop signal."""

    db: Database
    notifications: NotificationHub | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stop_with(self, stop: asyncio.Event) -> None:
        """End every stream when ``stop`` is set (the server is shutting down)."""
        self.stopping = stop


def control_of(request: Request) -> StreamControl:
    control: StreamControl = request.app.state.streams
    return control


@dataclass(slots=True)
class Cursor:
    """Which events a stream has sent: every seq above ``floor`` that was, by number.

    ``sent`` holds at most ``LOOKBACK`` + 1 numbers: the floor follows the highest.
    """

    floor: int
    sent: set[int] = field(default_factory=set)

    @property
    def after(self) -> int:
        """Read events above this seq: the lookback behind the highest sent."""
        top = max(self.sent, default=self.floor)
        return max(self.floor, top - LOOKBACK)

    def fresh(self, seq: int) -> bool:
        return seq > self.floor and seq not in self.sent

    def mark(self, seq: int) -> None:
        self.sent.add(seq)
        low = self.after
        if low > self.floor:
            self.sent = {s for s in self.sent if s > low}
            self.floor = low


@router.get(
    "/events",
    response_model=None,
    responses={
        200: {
            "description": "Server-Sent Events: audio.<state> (with ids) and audio.progress",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_events(
    request: Request,
    ctx: Ctx,
    principal: AudioReader,
    audio_id: str | None = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """State changes (``audio.<state>``, with ids) and progress (``audio.progress``).

    ``Last-Event-ID`` resumes after that event; without it the stream starts now.
    ``audio_id`` limits the stream to one audio.
    """
    only = _parse_audio_id(audio_id)
    resume = _parse_last_id(last_event_id)
    control = control_of(request)
    body = _stream(
        request,
        control,
        tenant=principal.tenant_filter(),
        audio_id=only,
        resume=resume,
        keepalive_s=ctx.settings.gateway.sse_keepalive_s,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _parse_audio_id(raw: str | None) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, "audio_id is not an audio id") from None


def _parse_last_id(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    if not raw.strip().isdigit():
        raise ApiError(400, "Last-Event-ID is not an event id of this stream")
    return int(raw.strip())


async def _stream(
    request: Request,
    control: StreamControl,
    *,
    tenant: str | None,
    audio_id: uuid.UUID | None,
    resume: int | None,
    keepalive_s: float,
) -> AsyncGenerator[str, None]:
    """Subscribe first, then read: nothing committed after the read is missed."""
    db = control.db
    async with (
        shared_or_own(db, control.notifications) as hub,
        hub.subscription(EVENTS_CHANNEL, max_pending=MAX_PENDING) as changes,
        hub.subscription(PROGRESS_CHANNEL, max_pending=MAX_PENDING) as progress,
        _watch_disconnect(request) as gone,
    ):
        async with db.connection() as conn:
            floor = resume if resume is not None else await _last_seq(conn)
        cursor = Cursor(floor)
        segments_seen: dict[uuid.UUID, Follower] = {}
        yield "retry: 3000\n: connected\n\n"
        stops = (control.stopping, gone)
        read = True
        while not any(stop.is_set() for stop in stops):
            if read:
                rows = await _read(db, cursor, tenant, audio_id)
                for row in rows:
                    if cursor.fresh(row["seq"]):
                        cursor.mark(row["seq"])
                        yield _state_event(row)
                if len(rows) >= BATCH:
                    continue  # more to read
            notices = await next_notices((changes, progress), stops, keepalive_s)
            if not notices:
                yield ": keep-alive\n\n"
                read = True  # a quiet minute is also when to look for late commits
                continue
            read = False
            for notice in notices:
                if notice.channel == PROGRESS_CHANNEL and not notice.missed:
                    text = _progress_event(notice.payload, tenant, audio_id)
                    if text is not None:
                        yield text
                        for segment in await _new_segments(db, segments_seen, notice.payload):
                            yield segment
                elif notice.missed or tenant is None or notice.payload == tenant:
                    read = True  # a change the caller may see, or some may be lost: look
            if read:
                changes.clear()


async def _read(
    db: Database, cursor: Cursor, tenant: str | None, audio_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    try:
        async with db.connection() as conn:
            return await _events_after(conn, cursor, tenant, audio_id)
    except (DatabaseError, TransientError) as exc:
        log.warning("event stream could not read events; will try again", error=str(exc))
        return []


async def _last_seq(conn: AsyncConn) -> int:
    cur = await conn.execute("SELECT coalesce(max(seq), 0) AS seq FROM events")
    row: dict[str, Any] | None = await cur.fetchone()
    assert row is not None
    seq: int = row["seq"]
    return seq


async def _events_after(
    conn: AsyncConn, cursor: Cursor, tenant: str | None, audio_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    """Events after the cursor not sent yet (those within the lookback are known by seq)."""
    cur = await conn.execute(
        "SELECT e.seq, e.id, e.type, e.audio_id, e.state, e.occurred_at, e.tenant,"
        " a.original_name AS name"
        " FROM events e LEFT JOIN audio a ON a.id = e.audio_id"
        " WHERE e.seq > %(after)s AND NOT (e.seq = ANY(%(sent)s::bigint[]))"
        " AND (%(tenant)s::text IS NULL OR e.tenant = %(tenant)s)"
        " AND (%(audio)s::uuid IS NULL OR e.audio_id = %(audio)s)"
        " ORDER BY e.seq LIMIT %(limit)s",
        {
            "after": cursor.after,
            "sent": sorted(cursor.sent),
            "tenant": tenant,
            "audio": audio_id,
            "limit": BATCH,
        },
    )
    return list(await cur.fetchall())


def _state_event(row: dict[str, Any]) -> str:
    data = {
        "id": str(row["id"]),
        "seq": row["seq"],
        "audio_id": str(row["audio_id"]),
        "state": row["state"],
        "name": row["name"],
        "tenant": row["tenant"],
        "time": row["occurred_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return f"id: {row['seq']}\nevent: {row['type']}\ndata: {_json(data)}\n\n"


def _progress_event(payload: str, tenant: str | None, audio_id: uuid.UUID | None) -> str | None:
    """The SSE text of a progress notice the caller may see, else None."""
    try:
        notice = json.loads(payload)
        if not isinstance(notice, dict):
            return None
        if tenant is not None and notice.get("tenant") != tenant:
            return None
        if audio_id is not None and notice.get("audio_id") != str(audio_id):
            return None
        data = {
            key: notice.get(key)
            for key in ("audio_id", "progress", "progress_s", "duration_s", "eta_s")
        }
    except (ValueError, TypeError):
        return None
    return f"event: audio.progress\ndata: {_json(data)}\n\n"


async def _new_segments(db: Database, seen: dict[uuid.UUID, Follower], payload: str) -> list[str]:
    """``segment`` events of the audio a (visible) progress notice is about, not sent yet.

    After a job started again (a new claim), its segments come again from index 0.
    """
    try:
        audio = uuid.UUID(json.loads(payload)["audio_id"])
    except (ValueError, TypeError, KeyError):
        return []
    follower = seen.pop(audio, None) or Follower()
    seen[audio] = follower  # the most recent last
    if len(seen) > MAX_FOLLOWED:
        del seen[next(iter(seen))]
    try:
        async with db.connection() as conn:
            segments = await segments_after(conn, audio, follower.after)
    except (DatabaseError, TransientError) as exc:
        log.warning("event stream could not read segments; will try again", error=str(exc))
        return []
    _, shown = follower.take(segments)
    events = []
    for s in shown:
        data = {
            "audio_id": str(audio),
            "index": s.seq,
            "start": round(s.start_s, 3),
            "end": round(s.end_s, 3),
            "text": s.text,
        }
        events.append(f"event: segment\ndata: {_json(data)}\n\n")
    return events


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@contextlib.asynccontextmanager
async def _watch_disconnect(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client disconnects (its connection's ``http.disconnect``)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    task = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        await cancel_and_wait(task)
