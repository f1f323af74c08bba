"""Webhook deliveries from the outbox: a real PostgreSQL, a real HTTP receiver on
127.0.0.1, the real runner and handler.

Audio rows are written as the pipeline writes them; the migration's trigger puts the
event and its deliveries in the outbox in the same transaction, and the runner takes
it from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import DeliverySettings, Settings
from pipeline.db import deliveries
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.deliveries.addresses import (
    UnsafeUrl,
    private_addresses_allowed,
    resolve_destination,
)
from pipeline.deliveries.runner import DeliveryRunner
from pipeline.deliveries.webhook import WebhookHandler
from pipeline.metrics import Metrics
from tests.waiting import eventually
from tests.webhook_receiver import running_receiver, verify_signature

SECRET = "s3cr3t-for-the-tests-only"
REPO = Path(__file__).resolve().parents[2]
Conn = psycopg.Connection[dict[str, Any]]

FAST = {
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.2,
    "poll_interval_s": 0.5,
    "timeout_s": 5.0,
    "max_attempts": 10,
}


def delivery_settings(**overrides: Any) -> DeliverySettings:
    return DeliverySettings(**(FAST | overrides))


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    db = Database(Settings(database={"url": url}).database, embedded=None)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def running(
    db: Database,
    settings: DeliverySettings,
    *,
    allow_private: bool = True,
    metrics: Metrics | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """A runner with the webhook handler, until the block ends."""
    stop = asyncio.Event()
    async with NotificationHub(db) as hub:
        handler = WebhookHandler(db, settings, allow_private=allow_private)
        runner = DeliveryRunner(db, hub, settings, {"webhook": handler}, metrics=metrics)
        task = asyncio.create_task(runner.run(stop))
        try:
            yield task
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def register(db: Database, url: str, *, tenant: str = "default") -> uuid.UUID:
    async with db.connection() as conn:
        row = await deliveries.create_webhook(
            conn,
            tenant=tenant,
            url=url,
            secret=SECRET,
            event_types=["audio.transcribed", "audio.failed", "audio.rejected"],
        )
    return uuid.UUID(str(row["id"]))


def transcribed(conn: Conn, name: str, *, tenant: str = "default") -> uuid.UUID:
    """An audio row arriving transcribed: its event and deliveries commit with it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    row = conn.execute(
        "INSERT INTO audio"
        " (tenant, source, original_name, source_uri, state, sha256, storage_key)"
        " VALUES (%s, 'upload', %s, %s, 'transcribed', %s, %s) RETURNING id",
        (tenant, name, f"upload://{name}", digest, f"audio/{digest}"),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def delivery_rows(conn: Conn, target: str) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT d.*, e.audio_id FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE target = %s ORDER BY e.seq",
        (target,),
    ).fetchall()


def all_in(conn: Conn, target: str, state: str, count: int) -> list[dict[str, Any]] | None:
    rows = delivery_rows(conn, target)
    ok = len(rows) == count and all(r["state"] == state for r in rows)
    return rows if ok else None


def test_a_flaky_receiver_gets_each_event_once_signed_after_retries(
    database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            url = receiver.endpoint("/hook", fail_first=3)
            hook = await register(pool, url)
            target = deliveries.webhook_target(hook)
            metrics = Metrics()
            async with running(pool, delivery_settings(), metrics=metrics):
                ids = [transcribed(db, "first.wav"), transcribed(db, "second.wav")]
                rows = await eventually(
                    lambda: all_in(db, target, "delivered", 2),
                    timeout=30,
                    what="both deliveries delivered",
                )
            endpoint = receiver.endpoints["/hook"]
            assert len(endpoint.requests) == 5  # 3 refused, then one each
            assert endpoint.accepted == {str(r["event_id"]): 1 for r in rows}
            assert sum(r["attempts"] for r in rows) == 5
            assert (
                metrics.registry.get_sample_value(
                    "ai2text_deliveries_total", {"kind": "webhook", "outcome": "retry"}
                )
                == 3
            )
            assert (
                metrics.registry.get_sample_value(
                    "ai2text_deliveries_total", {"kind": "webhook", "outcome": "delivered"}
                )
                == 2
            )
            accepted = [r for r in endpoint.requests if r.status == 200]
            # Concurrent, retried: no order between events is promised.
            assert sorted(r.event["subject"] for r in accepted) == sorted(str(i) for i in ids)
            accepted.sort(key=lambda r: ids.index(uuid.UUID(r.event["subject"])))
            for request in endpoint.requests:
                assert verify_signature(
                    SECRET, request.body, request.headers["x-ai2text-signature"]
                )
                assert not verify_signature(
                    "another-secret-here", request.body, request.headers["x-ai2text-signature"]
                )
                assert request.headers["content-type"] == "application/json"
                assert request.headers["x-ai2text-event-id"] == request.event["id"]
            event = accepted[0].event
            assert event["specversion"] == "1.0"
            assert event["type"] == "ai2text.audio.transcribed"
            assert event["time"].endswith("Z")
            assert event["data"] == {
                "audio_id": str(ids[0]),
                "name": "first.wav",
                "state": "transcribed",
                "tenant": "default",
                "links": {
                    "audio": f"/v1/audio/{ids[0]}",
                    "transcript": f"/v1/audio/{ids[0]}/transcript",
                },
            }

    asyncio.run(scenario())


def test_a_hanging_receiver_does_not_hold_up_another_endpoint(database_url: str, db: Conn) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            slow = await register(pool, receiver.endpoint("/slow", hang=True))
            fast = await register(pool, receiver.endpoint("/fast"))
            settings = delivery_settings(timeout_s=60.0, concurrency=4)
            async with running(pool, settings) as task:
                transcribed(db, "one.wav")
                await eventually(
                    lambda: all_in(db, deliveries.webhook_target(fast), "delivered", 1),
                    timeout=10,
                    what="the fast endpoint's delivery",
                    watch=[task],
                )
                transcribed(db, "two.wav")  # the next one too, while the first still hangs
                await eventually(
                    lambda: all_in(db, deliveries.webhook_target(fast), "delivered", 2),
                    timeout=10,
                    what="the fast endpoint's second delivery",
                    watch=[task],
                )
                assert receiver.hanging == 2
                assert all_in(db, deliveries.webhook_target(slow), "pending", 2)
                receiver.released.set()
                await eventually(
                    lambda: all_in(db, deliveries.webhook_target(slow), "delivered", 2),
                    timeout=10,
                    what="the slow endpoint's deliveries once it answers",
                )

    asyncio.run(scenario())


def test_a_hanging_receiver_times_out_and_is_retried(database_url: str, db: Conn) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            hook = await register(pool, receiver.endpoint("/slow", hang=True))
            target = deliveries.webhook_target(hook)
            async with running(pool, delivery_settings(timeout_s=0.5, max_attempts=2)):
                transcribed(db, "one.wav")
                rows = await eventually(
                    lambda: all_in(db, target, "dead", 1), timeout=15, what="dead after timeouts"
                )
            assert rows[0]["attempts"] == 2
            assert "no answer within 0.5 s" in rows[0]["last_error"]

    asyncio.run(scenario())


def test_events_committed_while_no_runner_runs_are_delivered_later(
    database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            hook = await register(pool, receiver.endpoint("/hook"))
            target = deliveries.webhook_target(hook)
            transcribed(db, "while-down.wav")
            # A runner that claimed the next one and died: its lease runs out.
            transcribed(db, "claimed-then-crashed.wav")
            async with pool.connection() as conn:
                claimed = await deliveries.claim_due(conn, ["webhook"], limit=1, lease_s=1.0)
            assert len(claimed) == 1
            assert receiver.endpoints["/hook"].requests == []
            async with running(pool, delivery_settings()):
                await eventually(
                    lambda: all_in(db, target, "delivered", 2), timeout=20, what="both delivered"
                )
            assert len(receiver.endpoints["/hook"].accepted) == 2

    asyncio.run(scenario())


def test_dead_after_max_attempts_is_listed_and_can_be_retried(
    database_url: str, db: Conn, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            url = receiver.endpoint("/down", status=500)
            hook = await register(pool, url)
            target = deliveries.webhook_target(hook)
            async with running(pool, delivery_settings(max_attempts=3)):
                transcribed(db, "lost.wav")
                rows = await eventually(
                    lambda: all_in(db, target, "dead", 1), timeout=20, what="dead delivery"
                )
                assert rows[0]["attempts"] == 3
                assert "answered 500" in rows[0]["last_error"]
                event_id = rows[0]["event_id"]

                listed = await asyncio.to_thread(cli_json, database_url, tmp_path, "webhooks")
                assert [w["url"] for w in listed["webhooks"]] == [url]
                assert listed["webhooks"][0]["dead"] == 1
                assert "secret" not in listed["webhooks"][0]
                dead = [d for d in listed["deliveries"] if d["state"] == "dead"]
                assert [(d["event_id"], d["target"]) for d in dead] == [(str(event_id), target)]
                assert dead[0]["original_name"] == "lost.wav"

                text = await asyncio.to_thread(cli, database_url, tmp_path, "webhooks")
                assert url in text and "dead 1" in text and "answered 500" in text

                receiver.endpoints["/down"].status = 200
                retried = await asyncio.to_thread(
                    cli_json, database_url, tmp_path, "webhooks", "retry", str(event_id)
                )
                assert [r["target"] for r in retried] == [target]
                await eventually(
                    lambda: all_in(db, target, "delivered", 1), timeout=20, what="redelivered"
                )
            assert receiver.endpoints["/down"].accepted == {str(event_id): 1}

    asyncio.run(scenario())


def cli_json(database_url: str, tmp_path: Path, *args: str) -> Any:
    return json.loads(cli(database_url, tmp_path, *args, "--json"))


def cli(database_url: str, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    env |= {"AI2TEXT_DATABASE__URL": database_url, "AI2TEXT_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_private_address_is_refused_at_delivery_and_dead_at_once(
    database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            hook = await register(pool, receiver.endpoint("/hook"))
            target = deliveries.webhook_target(hook)
            async with running(pool, delivery_settings(), allow_private=False):
                transcribed(db, "one.wav")
                rows = await eventually(
                    lambda: all_in(db, target, "dead", 1), timeout=10, what="refused delivery"
                )
            assert rows[0]["attempts"] == 1
            assert "non-public address (127.0.0.1)" in rows[0]["last_error"]
            assert receiver.endpoints["/hook"].requests == []

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/",
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(url: str) -> None:
    async def check() -> None:
        with pytest.raises(UnsafeUrl, match="non-public address"):
            await resolve_destination(url, allow_private=False)
        allowed = await resolve_destination(url, allow_private=True)
        assert allowed.addresses

    asyncio.run(check())


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "http://"]
)
def test_only_plain_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        asyncio.run(resolve_destination(url, allow_private=True))


def test_private_addresses_are_allowed_only_on_the_embedded_default() -> None:
    assert private_addresses_allowed(Settings())
    external = Settings(database={"url": "postgresql://db.example.com/ai2text"})
    assert not private_addresses_allowed(external)
    opted_in = Settings(
        database={"url": "postgresql://db.example.com/ai2text"},
        deliveries={"allow_private_addresses": True},
    )
    assert private_addresses_allowed(opted_in)
    opted_out = Settings(deliveries={"allow_private_addresses": False})
    assert not private_addresses_allowed(opted_out)


def test_configured_webhooks_are_synced_and_removed_ones_disabled(
    database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        first = Settings(
            deliveries={
                "webhooks": [
                    {"url": "https://a.example.com/hook", "secret": SECRET},
                    {"url": "https://b.example.com/hook", "secret": SECRET, "tenant": "acme"},
                ]
            }
        )
        second = Settings(
            deliveries={
                "webhooks": [
                    {
                        "url": "https://b.example.com/hook",
                        "secret": SECRET,
                        "tenant": "acme",
                        "events": ["audio.failed"],
                    }
                ]
            }
        )
        async with database(database_url) as pool:
            async with pool.connection() as conn:
                await deliveries.sync_config_webhooks(conn, first.deliveries.webhooks)
                await deliveries.sync_config_webhooks(conn, first.deliveries.webhooks)
                await deliveries.sync_config_webhooks(conn, second.deliveries.webhooks)
        rows = db.execute(
            "SELECT tenant, url, enabled, event_types, origin FROM webhooks ORDER BY url"
        ).fetchall()
        assert rows == [
            {
                "tenant": "default",
                "url": "https://a.example.com/hook",
                "enabled": False,
                "event_types": ["audio.transcribed", "audio.failed", "audio.rejected"],
                "origin": "config",
            },
            {
                "tenant": "acme",
                "url": "https://b.example.com/hook",
                "enabled": True,
                "event_types": ["audio.failed"],
                "origin": "config",
            },
        ]

    asyncio.run(scenario())


def test_stopping_gives_back_a_delivery_in_flight_for_the_next_runner(
    database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool, running_receiver() as receiver:
            hook = await register(pool, receiver.endpoint("/hook", hang=True))
            target = deliveries.webhook_target(hook)
            async with running(pool, delivery_settings(timeout_s=60.0)):
                transcribed(db, "one.wav")
                await eventually(lambda: receiver.hanging == 1, timeout=10, what="in flight")
            # Stopped within its drain time, not the receiver's 60 s timeout.
            [row] = delivery_rows(db, target)
            assert (row["state"], row["attempts"]) == ("pending", 0)
            receiver.endpoints["/hook"].hang = False
            async with running(pool, delivery_settings()):
                await eventually(
                    lambda: all_in(db, target, "delivered", 1), timeout=10, what="redelivered"
                )

    asyncio.run(scenario())


def test_a_host_that_does_not_resolve_is_retried_not_refused(database_url: str, db: Conn) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool:
            hook = await register(pool, "http://no-such-host.invalid/hook")
            target = deliveries.webhook_target(hook)
            async with running(pool, delivery_settings(max_attempts=3), allow_private=False):
                transcribed(db, "one.wav")
                rows = await eventually(
                    lambda: all_in(db, target, "dead", 1), timeout=30, what="dead after retries"
                )
            assert rows[0]["attempts"] == 3
            assert "no-such-host.invalid does not resolve" in rows[0]["last_error"]

    asyncio.run(scenario())


def test_old_events_are_pruned_once_nothing_is_pending(database_url: str, db: Conn) -> None:
    async def scenario() -> None:
        async with database(database_url) as pool:
            hook = await register(pool, "https://93.184.215.14/hook")
            target = deliveries.webhook_target(hook)
            done, waiting, recent = (transcribed(db, f"{n}.wav") for n in ("a", "b", "c"))
            db.execute(
                "UPDATE deliveries d SET state = 'delivered' FROM events e"
                " WHERE e.id = d.event_id AND e.audio_id <> %s",
                (waiting,),
            )
            db.execute(
                "UPDATE events SET occurred_at = now() - interval '40 days'"
                " WHERE audio_id IN (%s, %s)",
                (done, waiting),
            )
            async with pool.connection() as conn:
                assert await deliveries.prune_events(conn, older_than_days=30) == 1
            left = db.execute("SELECT audio_id FROM events ORDER BY seq").fetchall()
            assert [r["audio_id"] for r in left] == [waiting, recent]
            assert len(delivery_rows(db, target)) == 2

    asyncio.run(scenario())


def test_runners_are_woken_only_by_changes_that_queue_deliveries(
    database_url: str, db: Conn
) -> None:
    """A flood of new files must not wake every delivery runner once per file."""

    async def register_one(url: str | None) -> None:
        async with database(database_url) as pool:  # opening it migrates the schema
            if url is not None:
                await register(pool, url)

    asyncio.run(register_one(None))
    listener = psycopg.connect(database_url, autocommit=True)
    with listener:
        listener.execute(f"LISTEN {deliveries.DELIVERIES_CHANNEL}")
        digest = hashlib.sha256(b"queued-only").hexdigest()
        db.execute(  # a new upload: an event for streams, nothing to deliver
            "INSERT INTO audio (source, original_name, source_uri, state, sha256, storage_key)"
            " VALUES ('upload', 'q.wav', 'upload://q', 'queued', %s, %s)",
            (digest, f"audio/{digest}"),
        )
        transcribed(db, "folder-less.wav")  # no webhook registered: nothing either
        db.execute(f"NOTIFY {deliveries.DELIVERIES_CHANNEL}, 'marker'")
        heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert heard == ["marker"]

        asyncio.run(register_one("http://127.0.0.1:9/hook"))
        transcribed(db, "told.wav")
        heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert heard == [""]
