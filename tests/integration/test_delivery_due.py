"""When the delivery runner next looks: nothing pending means no wake-up at all."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline.db.deliveries import seconds_until_due
from pipeline.db.migrate import migrate


def test_nothing_pending_is_none_not_due_now(database_url: str) -> None:
    """An idle runner once read "nothing pending" as "due now" and polled 20 times a second."""
    with psycopg.connect(database_url) as conn:
        migrate(conn)

    async def scenario() -> list[float | None]:
        conn: Any = await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, row_factory=dict_row
        )
        async with conn:
            seen = [await seconds_until_due(conn, ["outbox"])]
            await conn.execute(
                "INSERT INTO events (id, tenant, type, audio_id, state)"
                " VALUES (gen_random_uuid(), 'default', 'audio.transcribed', gen_random_uuid(),"
                " 'transcribed')"
            )
            await conn.execute(
                "INSERT INTO deliveries (event_id, target, next_attempt_at)"
                " SELECT id, 'outbox', now() + interval '1 hour' FROM events"
            )
            seen.append(await seconds_until_due(conn, ["outbox"]))
            await conn.execute("UPDATE deliveries SET next_attempt_at = now() - interval '1 s'")
            seen.append(await seconds_until_due(conn, ["outbox"]))
            seen.append(await seconds_until_due(conn, ["bucket"]))
            return seen

    idle, later, due, other_kind = asyncio.run(scenario())
    assert idle is None
    assert later is not None and 3500 < later <= 3600
    assert due == 0
    assert other_kind is None
