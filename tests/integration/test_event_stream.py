"""The ``/v1/events`` stream body against a real database and LISTEN hub.

The HTTP side (tokens, tenants, resuming, shutdown through uvicorn) is in
tests/e2e/test_events.py; here the stream is read directly, so a test can hold it
still (a slow client), commit events out of order, and disconnect it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import psycopg

from gateway.routes.stream import LOOKBACK, MAX_PENDING, Cursor, StreamControl, _stream
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.progress import PROGRESS_CHANNEL
from tests.components import opened

TENANT = "acme"


class Client:
    """The request as the stream sees it: only whether the client has gone."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def insert_audio(url: str, name: str, *, tenant: str = TENANT) -> psycopg.Connection[Any]:
    """An audio row inserted (its event written by the trigger) in an open transaction."""
    conn = psycopg.connect(url)
    sha = hashlib.sha256(f"{name}-{uuid.uuid4()}".encode()).hexdigest()
    conn.execute(
        "INSERT INTO audio (source, original_name, source_uri, sha256, storage_key, state,"
        " tenant) VALUES ('upload', %s, %s, %s, %s, 'queued', %s)",
        (name, f"upload://{name}", sha, f"audio/sha256/{sha[:2]}/{sha}.wav", tenant),
    )
    return conn


def commit(conn: psycopg.Connection[Any]) -> None:
    conn.commit()
    conn.close()


async def chunks(
    stream: AsyncGenerator[str, None], *, until: str, timeout: float = 20
) -> list[dict[str, Any]]:
    """Events read from ``stream`` up to the one naming file ``until`` (comments skipped)."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for text in stream:
            for block in text.split("\n\n"):
                fields = dict(
                    line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
                )
                if "data" not in fields:
                    continue
                event = json.loads(fields["data"]) | {
                    "event": fields["event"],
                    "sse_id": fields.get("id"),
                }
                events.append(event)
                if event.get("name") == until:
                    return events
    raise AssertionError(f"the stream ended before {until}")


def tenant_stream(
    db: Database, hub: NotificationHub, *, keepalive_s: float
) -> AsyncGenerator[str, None]:
    """A stream of all of ``TENANT``'s events, for a client that stays connected."""
    return _stream(
        Client(),  # type: ignore[arg-type]
        StreamControl(db, hub),
        tenant=TENANT,
        audio_id=None,
        resume=None,
        keepalive_s=keepalive_s,
    )


async def started(stream: AsyncGenerator[str, None]) -> None:
    first = await anext(stream)
    assert ": connected" in first, first


def url_of(make_settings: Any) -> str:
    url = make_settings().database.url
    assert url is not None
    return str(url.get_secret_value())


def test_an_event_committed_after_a_later_one_is_still_sent(make_settings: Any) -> None:
    url = url_of(make_settings)

    async def scenario() -> None:
        async with opened(make_settings()) as db, NotificationHub(db) as hub:
            stream = tenant_stream(db, hub, keepalive_s=0.2)
            await started(stream)
            slow = insert_audio(url, "slow.wav")  # takes the lower seq, commits last
            fast = insert_audio(url, "fast.wav")
            await asyncio.to_thread(commit, fast)
            first = await chunks(stream, until="fast.wav")
            await asyncio.to_thread(commit, slow)
            second = await chunks(stream, until="slow.wav")
            assert [e["name"] for e in first + second] == ["fast.wav", "slow.wav"]
            assert int(second[0]["sse_id"]) < int(first[0]["sse_id"])
            assert second[0]["seq"] == int(second[0]["sse_id"])
            await stream.aclose()

    asyncio.run(scenario())


def test_a_client_that_does_not_read_holds_bounded_buffers_and_misses_nothing(
    make_settings: Any,
) -> None:
    url = url_of(make_settings)
    count = MAX_PENDING + 50

    async def scenario() -> None:
        async with opened(make_settings()) as db, NotificationHub(db) as hub:
            stream = tenant_stream(db, hub, keepalive_s=5)
            await started(stream)

            def flood() -> None:
                for n in range(count):
                    commit(insert_audio(url, f"f{n}.wav"))
                    commit(insert_audio(url, f"other{n}.wav", tenant="globex"))
                with psycopg.connect(url, autocommit=True) as conn:
                    for n in range(count):
                        conn.execute(
                            "SELECT pg_notify(%s, %s)",
                            (PROGRESS_CHANNEL, json.dumps({"tenant": TENANT, "n": n})),
                        )

            await asyncio.to_thread(flood)
            # The notifications have arrived while nobody read: at most MAX_PENDING kept.
            subs = [sub for group in hub._subscribers.values() for sub in group]
            assert subs and all(len(sub._pending) <= MAX_PENDING for sub in subs)

            events = await chunks(stream, until=f"f{count - 1}.wav", timeout=60)
            queued = [e["name"] for e in events if e["event"] == "audio.queued"]
            assert queued == [f"f{n}.wav" for n in range(count)]
            ids = [int(e["sse_id"]) for e in events if e["sse_id"] is not None]
            assert ids == sorted(set(ids))
            await stream.aclose()

    asyncio.run(scenario())


def test_the_stream_ends_when_the_client_goes_and_when_the_server_stops(
    make_settings: Any,
) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as db, NotificationHub(db) as hub:
            for end in ("disconnect", "stop"):
                client, control = Client(), StreamControl(db, hub)
                stream = _stream(
                    client,  # type: ignore[arg-type]
                    control,
                    tenant=None,
                    audio_id=None,
                    resume=None,
                    keepalive_s=3600,
                )
                await started(stream)
                reading = asyncio.ensure_future(anext(stream, None))
                (client.gone if end == "disconnect" else control.stopping).set()
                async with asyncio.timeout(10):
                    while (await reading) is not None:
                        reading = asyncio.ensure_future(anext(stream, None))
                # Its subscriptions are gone with it.
                assert not hub._subscribers, end

    asyncio.run(scenario())


def test_the_cursor_remembers_only_the_lookback() -> None:
    cursor = Cursor(floor=10)
    assert cursor.after == 10 and cursor.fresh(11) and not cursor.fresh(10)
    for seq in range(11, 11 + LOOKBACK * 3):
        cursor.mark(seq)
    top = 10 + LOOKBACK * 3
    assert cursor.after == top - LOOKBACK
    assert len(cursor.sent) <= LOOKBACK + 1
    assert not cursor.fresh(top) and not cursor.fresh(top - LOOKBACK)
    assert cursor.fresh(top + 1)
