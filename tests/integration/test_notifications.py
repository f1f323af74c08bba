"""The notification hub against a real PostgreSQL: one LISTEN connection, many subscribers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.db.database import Database
from pipeline.db.deliveries import DELIVERIES_CHANNEL
from pipeline.db.jobs import JOBS_CHANNEL, TRANSCRIPTS_CHANNEL
from pipeline.db.notifications import Notice, NotificationHub, Subscription
from pipeline.db.partials import SEGMENTS_CHANNEL
from pipeline.progress import PROGRESS_CHANNEL
from pipeline.sources.inbox import EVENTS_CHANNEL
from tests.e2e.gateway_harness import new_rsa_key, public_pem
from tests.e2e.harness import Service, wait_until
from tests.waiting import eventually, next_loop_turn

Conn = psycopg.Connection[dict[str, Any]]


@asynccontextmanager
async def hub_on(settings: Any, **kwargs: Any) -> AsyncIterator[NotificationHub]:
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        async with NotificationHub(database, **kwargs) as hub:
            yield hub
    finally:
        await database.close()


def listeners(db: Conn) -> list[dict[str, Any]]:
    """Backends (other than ``db``) whose last statement was a LISTEN or UNLISTEN."""
    return db.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND (query LIKE 'LISTEN %' OR query LIKE 'UNLISTEN %')"
        " ORDER BY pid"
    ).fetchall()


async def next_payload(sub: Subscription, timeout: float = 10) -> Notice:
    notice = await sub.wait(timeout)
    assert notice is not None, f"nothing on {sub.channel} within {timeout}s"
    return notice


def test_a_subscriber_receives_what_is_notified_after_subscribe_returns(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            sub = await hub.subscribe("t_jobs")
            db.execute("SELECT pg_notify('t_jobs', 'one')")
            db.execute("SELECT pg_notify('t_other', 'not for us')")
            db.execute("SELECT pg_notify('t_jobs', 'two')")
            assert await next_payload(sub) == Notice("t_jobs", "one")
            assert await next_payload(sub) == Notice("t_jobs", "two")
            assert sub.get_nowait() is None

    asyncio.run(scenario())


def test_every_subscriber_of_a_channel_gets_every_notification_over_one_connection(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            first = await hub.subscribe("t_jobs")
            second = await hub.subscribe("t_jobs")
            other = await hub.subscribe("t_transcripts")
            (backend,) = listeners(db)  # one connection LISTENs for all three
            db.execute("NOTIFY t_jobs, 'a'")
            db.execute("NOTIFY t_transcripts, 'b'")
            assert await next_payload(first) == Notice("t_jobs", "a")
            assert await next_payload(second) == Notice("t_jobs", "a")
            assert await next_payload(other) == Notice("t_transcripts", "b")
            assert [r["pid"] for r in listeners(db)] == [backend["pid"]]

    asyncio.run(scenario())


def test_an_unsubscribed_subscriber_gets_nothing_and_the_last_one_out_unlistens(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            gone = await hub.subscribe("t_jobs")
            staying = await hub.subscribe("t_jobs")
            await gone.close()
            db.execute("NOTIFY t_jobs, 'after'")
            assert await next_payload(staying) == Notice("t_jobs", "after")
            assert gone.get_nowait() is None
            await staying.close()
            await eventually(
                lambda: [r["query"] for r in listeners(db)] == ["UNLISTEN t_jobs"],
                timeout=10,
                what="UNLISTEN",
            )
            async with hub.subscription("t_jobs") as again:  # and LISTEN once more
                db.execute("NOTIFY t_jobs, 'back'")
                assert await next_payload(again) == Notice("t_jobs", "back")

    asyncio.run(scenario())


def test_a_terminated_connection_is_replaced_and_subscribers_learn_they_missed_some(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            sub = await hub.subscribe("t_jobs")
            (before,) = listeners(db)
            db.execute("SELECT pg_terminate_backend(%s)", (before["pid"],))
            assert await next_payload(sub) == Notice("t_jobs", missed=True)
            after = await eventually(
                lambda: [r for r in listeners(db) if r["pid"] != before["pid"]],
                timeout=30,
                what="LISTEN on a new connection",
            )
            assert [r["query"] for r in after] == ["LISTEN t_jobs"]
            db.execute("NOTIFY t_jobs, 'after the gap'")
            seen = [await next_payload(sub)]
            while seen[-1].missed:  # told again once LISTEN was back in place
                seen.append(await next_payload(sub))
            assert seen[-1] == Notice("t_jobs", "after the gap")
            assert hub.connected

    asyncio.run(scenario())


def test_subscribing_while_the_database_is_unreachable_reports_missed_once_listening(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            reachable = hub.db.conninfo
            hub.db.conninfo = f"postgresql://127.0.0.1:{closed_port()}/nowhere"
            sub = await hub.subscribe("t_jobs")  # returns after the failed connect
            assert not hub.connected
            assert sub.get_nowait() == Notice("t_jobs", missed=True)  # the failed try
            hub.db.conninfo = reachable
            assert await next_payload(sub, timeout=30) == Notice("t_jobs", missed=True)
            db.execute("NOTIFY t_jobs, 'x'")
            assert await next_payload(sub) == Notice("t_jobs", "x")

    asyncio.run(scenario())


def test_the_first_subscriber_waits_for_listen_and_is_told_of_no_gap(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            assert not hub.connected  # nothing subscribed yet: no connection held
            assert listeners(db) == []
            sub = await hub.subscribe("t_jobs")
            assert [r["query"] for r in listeners(db)] == ["LISTEN t_jobs"]
            assert sub.get_nowait() is None

    asyncio.run(scenario())


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_full_buffer_drops_notifications_for_that_subscriber_only_and_says_so(
    make_settings: Any, db: Conn
) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings(), max_pending=2) as hub:
            slow = await hub.subscribe("t_jobs")
            fast = await hub.subscribe("t_jobs", max_pending=10)
            with db.transaction():
                for i in range(5):
                    db.execute("SELECT pg_notify('t_jobs', %s)", (str(i),))
            got = [(await next_payload(fast)).payload for _ in range(5)]
            assert got == ["0", "1", "2", "3", "4"]
            assert slow.get_nowait() == Notice("t_jobs", missed=True)
            assert slow.get_nowait() == Notice("t_jobs", "0")
            assert slow.get_nowait() == Notice("t_jobs", "1")
            assert slow.get_nowait() is None

    asyncio.run(scenario())


def test_channel_names_must_be_plain_identifiers(make_settings: Any) -> None:
    async def scenario() -> None:
        async with hub_on(make_settings()) as hub:
            with pytest.raises(ValueError, match="not a channel name"):
                await hub.subscribe("jobs; DROP TABLE audio")

    asyncio.run(scenario())


def test_closing_the_hub_while_it_changes_channels_returns(make_settings: Any) -> None:
    """Closing must not be lost in any step of an UNLISTEN (it once hung a stopping process)."""

    async def scenario() -> None:
        database = Database(make_settings().database, embedded=None)
        await database.open()
        try:
            for steps in range(8):  # close after each number of loop turns into the change
                hub = NotificationHub(database)
                await hub.start()
                sub = await hub.subscribe("t_jobs")
                await sub.close()
                for _ in range(steps):
                    await next_loop_turn()
                closing = asyncio.create_task(hub.close())
                done, _ = await asyncio.wait({closing}, timeout=10)
                assert done, f"close() hung ({steps} turns in)"
        finally:
            await database.close()

    asyncio.run(scenario())


def test_a_process_running_every_waiting_role_holds_one_listen_connection(
    database_url: str, db: Conn, tmp_path: Path
) -> None:
    """Two workers, the orchestrator and the API's waiter share the process's one hub."""
    pem = tmp_path / "jwt-public.pem"
    pem.write_bytes(public_pem(new_rsa_key()))
    env = {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(tmp_path / "data"),
        "AI2TEXT_WATCH__INBOX": str(tmp_path / "inbox"),
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_GATEWAY__HOST": "127.0.0.1",
        "AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem),
        "AI2TEXT_ASR__CONCURRENCY": "2",
        "AI2TEXT_TRAINING__ENABLED": "true",
        "AI2TEXT_TRAINING__THRESHOLD_HOURS": "1000",
        "AI2TEXT_TRAINING__MIN_FREE_BYTES": "0",
        "AI2TEXT_TRAINING__COMMAND": json.dumps([sys.executable, "-c", "pass"]),
    }
    service = Service("up", env, tmp_path / "up.log").start()
    try:
        service.wait_for_event("gateway listening", timeout=120)
        service.wait_for_event("orchestrator ready", timeout=120)
        wait_until(
            lambda: service.count("worker ready") == 2, timeout=180, what="both workers ready"
        )
        wait_until(lambda: listeners(db), timeout=30, what="a LISTEN")
        # Every role subscribes as it starts; each used to open a connection of its own.
        db.execute(f"NOTIFY {JOBS_CHANNEL}")  # wakes the workers: they claim, find none, wait
        (hub,) = listeners(db)
        assert hub["query"] in {
            f"LISTEN {channel}" for channel in (JOBS_CHANNEL, TRANSCRIPTS_CHANNEL, SEGMENTS_CHANNEL)
        }
        service.check_alive()
    finally:
        try:
            assert service.stop() == 0
        finally:
            service.kill()


# A channel named in SQL text rather than through its constant (pg_notify('...'),
# NOTIFY ..., LISTEN ...); the reap query keeps one inside a single statement.
CHANNEL_IN_SQL = re.compile(r"(?:pg_notify\(\s*'|\b(?:UN)?(?:LISTEN|NOTIFY)\s+)(\w+)")


def test_every_channel_written_into_sql_is_one_of_the_channel_constants() -> None:
    root = Path(__file__).resolve().parents[2]
    named = {
        (str(path.relative_to(root)), match)
        for package in ("pipeline", "workers", "gateway")
        for path in (root / package).rglob("*.py")
        for match in CHANNEL_IN_SQL.findall(path.read_text())
        if match.startswith("ai2text")
    }
    # The scan does find channels written into SQL, in each way the code could write one.
    assert CHANNEL_IN_SQL.findall("SELECT pg_notify('ai2text_x', a.id::text)") == ["ai2text_x"]
    assert CHANNEL_IN_SQL.findall("NOTIFY ai2text_y") == ["ai2text_y"]
    assert {channel for _, channel in named} <= {
        JOBS_CHANNEL,
        TRANSCRIPTS_CHANNEL,
        EVENTS_CHANNEL,
        PROGRESS_CHANNEL,
        DELIVERIES_CHANNEL,
        SEGMENTS_CHANNEL,
    }
