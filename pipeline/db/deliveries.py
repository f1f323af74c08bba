"""Every write to ``deliveries`` and ``webhooks``, and the reads the runner and API need.

A runner claims due pending deliveries with ``FOR UPDATE SKIP LOCKED`` and pushes
their ``next_attempt_at`` forward by a lease while it works on them, counting the
attempt: a runner that dies mid-delivery leaves the row pending, to be claimed again
once the lease runs out, never lost. The outcome is written only while the row still
holds the attempt that was claimed (a later claim after a lost lease wins).

Webhook endpoints come from the settings (origin ``config``, synced at start) or the
admin API (origin ``api``); the trigger in migration 0010 queues a delivery to every
enabled endpoint of the audio's tenant whose event types match.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import WebhookEndpoint
from pipeline.db.database import AsyncConn
from pipeline.deliveries.base import Event

# Sent (by the outbox trigger, and on a retry) when deliveries become due: wakes runners.
DELIVERIES_CHANNEL = "ai2text_deliveries"
WEBHOOK_PREFIX = "webhook:"
DELIVERY_STATES = ("pending", "delivered", "dead")
# Events deleted per statement when pruning, so one prune never holds long locks.
PRUNE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery a runner holds for one attempt (``attempt`` counts this one)."""

    event: Event
    target: str
    attempt: int

    @property
    def kind(self) -> str:
        return kind_of(self.target)


def kind_of(target: str) -> str:
    """The handler a target needs: the part before ':' ('webhook', 'outbox', 'bucket')."""
    return target.split(":", 1)[0]


def webhook_target(webhook_id: uuid.UUID) -> str:
    return f"{WEBHOOK_PREFIX}{webhook_id}"


# -- the runner ------------------------------------------------------------------------


async def claim_due(
    conn: AsyncConn, kinds: Collection[str], *, limit: int, lease_s: float
) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due pending deliveries of ``kinds``, oldest due first."""
    if not kinds or limit <= 0:
        return []
    async with conn.transaction():
        cur = await conn.execute(
            """
            WITH due AS (
                SELECT event_id, target FROM deliveries
                WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
                  AND split_part(target, ':', 1) = ANY (%(kinds)s)
                ORDER BY next_attempt_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            )
            UPDATE deliveries d
            SET attempts = d.attempts + 1,
                next_attempt_at = clock_timestamp() + make_interval(secs => %(lease_s)s),
                updated_at = now()
            FROM due, events e
            WHERE d.event_id = due.event_id AND d.target = due.target AND e.id = d.event_id
            RETURNING e.id, e.seq, e.tenant, e.type, e.audio_id, e.state, e.occurred_at,
                      d.target, d.attempts
            """,
            {"kinds": list(kinds), "limit": limit, "lease_s": lease_s},
        )
        rows: list[dict[str, Any]] = await cur.fetchall()
    claimed = [
        ClaimedDelivery(
            event=Event(
                id=r["id"],
                seq=r["seq"],
                tenant=r["tenant"],
                type=r["type"],
                audio_id=r["audio_id"],
                state=r["state"],
                occurred_at=r["occurred_at"],
            ),
            target=r["target"],
            attempt=r["attempts"],
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: c.event.seq)
    return claimed


async def seconds_until_due(conn: AsyncConn, kinds: Collection[str]) -> float | None:
    """Seconds until the earliest pending delivery of ``kinds`` is due (0 if one is),
    ``None`` when nothing is pending."""
    cur = await conn.execute(
        # greatest() skips NULLs: without the CASE, "nothing pending" read as "due now".
        "SELECT CASE WHEN min(next_attempt_at) IS NOT NULL THEN greatest(0,"
        " extract(epoch FROM min(next_attempt_at) - clock_timestamp())) END"
        " AS wait_s FROM deliveries"
        " WHERE state = 'pending' AND split_part(target, ':', 1) = ANY (%s)",
        (list(kinds),),
    )
    row = await cur.fetchone()
    return None if row is None or row["wait_s"] is None else float(row["wait_s"])  # type: ignore[arg-type]


async def mark_delivered(conn: AsyncConn, claimed: ClaimedDelivery) -> bool:
    """Record the attempt's success; False if the claim was lost meanwhile."""
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'delivered', delivered_at = now(), last_error = NULL,"
        " updated_at = now()"
        " WHERE event_id = %s AND target = %s AND state = 'pending' AND attempts = %s",
        (claimed.event.id, claimed.target, claimed.attempt),
    )
    return cur.rowcount == 1


async def record_failure(
    conn: AsyncConn,
    claimed: ClaimedDelivery,
    error: str,
    *,
    retry_in_s: float | None,
) -> str | None:
    """Record a failed attempt: pending again in ``retry_in_s``, or dead when ``None``.

    Returns the new state, or ``None`` if the claim was lost meanwhile.
    """
    cur = await conn.execute(
        """
        UPDATE deliveries
        SET state = CASE WHEN %(retry_in_s)s::float8 IS NULL THEN 'dead' ELSE 'pending' END,
            next_attempt_at = CASE WHEN %(retry_in_s)s::float8 IS NULL THEN next_attempt_at
                              ELSE clock_timestamp() + make_interval(secs => %(retry_in_s)s)
                              END,
            last_error = left(%(error)s, 2000),
            updated_at = now()
        WHERE event_id = %(event_id)s AND target = %(target)s AND state = 'pending'
          AND attempts = %(attempt)s
        RETURNING state
        """,
        {
            "retry_in_s": retry_in_s,
            "error": error,
            "event_id": claimed.event.id,
            "target": claimed.target,
            "attempt": claimed.attempt,
        },
    )
    row = await cur.fetchone()
    return None if row is None else str(row["state"])


async def release(conn: AsyncConn, claimed: ClaimedDelivery) -> bool:
    """Give back a claim whose attempt was cut short (the runner is stopping): due now,
    the attempt not counted."""
    cur = await conn.execute(
        "UPDATE deliveries SET attempts = attempts - 1, next_attempt_at = now(),"
        " updated_at = now()"
        " WHERE event_id = %s AND target = %s AND state = 'pending' AND attempts = %s",
        (claimed.event.id, claimed.target, claimed.attempt),
    )
    return cur.rowcount == 1


async def prune_events(conn: AsyncConn, *, older_than_days: float) -> int:
    """Delete events (with their deliveries) older than this that have nothing pending."""
    deleted = 0
    while True:
        cur = await conn.execute(
            """
            DELETE FROM events WHERE id IN (
                SELECT e.id FROM events e
                WHERE e.occurred_at < now() - make_interval(secs => %s)
                  AND NOT EXISTS (SELECT 1 FROM deliveries d
                                  WHERE d.event_id = e.id AND d.state = 'pending')
                LIMIT %s)
            """,
            (older_than_days * 86400.0, PRUNE_BATCH),
        )
        deleted += cur.rowcount
        if cur.rowcount < PRUNE_BATCH:
            return deleted


# -- operators: listing and retrying ---------------------------------------------------


async def list_deliveries(
    conn: AsyncConn,
    *,
    tenant: str | None,
    state: str | None = None,
    target: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries newest first, with their event and audio, for the CLI and the API."""
    cur = await conn.execute(
        """
        SELECT d.event_id, d.target, d.state, d.attempts, d.next_attempt_at, d.last_error,
               d.delivered_at, d.created_at, d.updated_at,
               e.type AS event_type, e.tenant, e.audio_id, e.occurred_at,
               a.original_name, w.url AS webhook_url
        FROM deliveries d
        JOIN events e ON e.id = d.event_id
        LEFT JOIN audio a ON a.id = e.audio_id
        LEFT JOIN webhooks w ON d.target = 'webhook:' || w.id::text
        WHERE (%(tenant)s::text IS NULL OR e.tenant = %(tenant)s)
          AND (%(state)s::text IS NULL OR d.state = %(state)s)
          AND (%(target)s::text IS NULL OR d.target = %(target)s)
          AND (%(kind)s::text IS NULL OR split_part(d.target, ':', 1) = %(kind)s)
        ORDER BY e.seq DESC, d.target
        LIMIT %(limit)s
        """,
        {"tenant": tenant, "state": state, "target": target, "kind": kind, "limit": limit},
    )
    return list(await cur.fetchall())


async def retry_delivery(
    conn: AsyncConn,
    event_id: uuid.UUID,
    *,
    tenant: str | None,
    target: str | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Put an event's dead deliveries (to ``target``, or of ``kind``) back with fresh
    attempts.

    Returns the deliveries put back (empty when none of them was dead); wakes runners.
    """
    async with conn.transaction():
        cur = await conn.execute(
            """
            UPDATE deliveries d
            SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
            FROM events e
            WHERE e.id = d.event_id AND d.event_id = %(event_id)s AND d.state = 'dead'
              AND (%(tenant)s::text IS NULL OR e.tenant = %(tenant)s)
              AND (%(target)s::text IS NULL OR d.target = %(target)s)
              AND (%(kind)s::text IS NULL OR split_part(d.target, ':', 1) = %(kind)s)
            RETURNING d.event_id, d.target, d.state, d.attempts, d.last_error, e.tenant
            """,
            {"event_id": event_id, "tenant": tenant, "target": target, "kind": kind},
        )
        rows = list(await cur.fetchall())
        if rows:
            await conn.execute(f"NOTIFY {DELIVERIES_CHANNEL}")
    return rows


async def event_exists(conn: AsyncConn, event_id: uuid.UUID, *, tenant: str | None) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM events WHERE id = %s AND (%s::text IS NULL OR tenant = %s)",
        (event_id, tenant, tenant),
    )
    return await cur.fetchone() is not None


# -- webhook endpoints -----------------------------------------------------------------

_WEBHOOK_COLUMNS = "id, tenant, url, event_types, origin, enabled, created_at"


async def sync_config_webhooks(conn: AsyncConn, endpoints: Sequence[WebhookEndpoint]) -> None:
    """Make the ``config`` rows what the settings say: upsert each by (tenant, url), and
    disable config rows no longer configured (kept, so their deliveries stay listed)."""
    async with conn.transaction():
        for endpoint in endpoints:
            await conn.execute(
                """
                INSERT INTO webhooks (tenant, url, secret, event_types, origin)
                VALUES (%s, %s, %s, %s, 'config')
                ON CONFLICT (tenant, url) DO UPDATE
                SET secret = EXCLUDED.secret, event_types = EXCLUDED.event_types,
                    origin = 'config', enabled = true
                """,
                (
                    endpoint.tenant,
                    endpoint.url,
                    endpoint.secret.get_secret_value(),
                    list(endpoint.events),
                ),
            )
        await conn.execute(
            "UPDATE webhooks SET enabled = false WHERE origin = 'config' AND enabled"
            " AND NOT (tenant || E'\\n' || url = ANY (%s))",
            ([f"{e.tenant}\n{e.url}" for e in endpoints],),
        )


async def create_webhook(
    conn: AsyncConn, *, tenant: str, url: str, secret: str, event_types: Sequence[str]
) -> dict[str, Any]:
    """Register an endpoint (origin ``api``); ``Conflict`` if the tenant has that URL."""
    cur = await conn.execute(
        "INSERT INTO webhooks (tenant, url, secret, event_types, origin)"
        " VALUES (%s, %s, %s, %s, 'api')"
        " RETURNING id, tenant, url, event_types, origin, enabled, created_at",
        (tenant, url, secret, list(event_types)),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_webhook(
    conn: AsyncConn,
    webhook_id: uuid.UUID,
    *,
    url: str | None = None,
    secret: str | None = None,
    event_types: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> dict[str, Any] | None:
    """Change what is given of an endpoint; None if it is gone. ``Conflict`` if its tenant
    already has the new URL. Deliveries not made yet go to the endpoint as it is then."""
    returning = f" RETURNING {_WEBHOOK_COLUMNS}"
    query = (
        "UPDATE webhooks SET url = coalesce(%s, url), secret = coalesce(%s, secret),"  # noqa: S608
        " event_types = coalesce(%s, event_types), enabled = coalesce(%s, enabled)"
        " WHERE id = %s" + returning
    )
    types = list(event_types) if event_types is not None else None
    cur = await conn.execute(query, (url, secret, types, enabled, webhook_id))
    return await cur.fetchone()


async def list_webhooks(conn: AsyncConn, *, tenant: str | None) -> list[dict[str, Any]]:
    """Endpoints (never their secrets), with how their deliveries stand."""
    cur = await conn.execute(
        f"""
        SELECT {", ".join("w." + c for c in _WEBHOOK_COLUMNS.split(", "))},
               count(*) FILTER (WHERE d.state = 'pending') AS pending,
               count(*) FILTER (WHERE d.state = 'delivered') AS delivered,
               count(*) FILTER (WHERE d.state = 'dead') AS dead,
               max(d.delivered_at) AS last_delivered_at
        FROM webhooks w
        LEFT JOIN deliveries d ON d.target = 'webhook:' || w.id::text
        WHERE %(tenant)s::text IS NULL OR w.tenant = %(tenant)s
        GROUP BY w.id
        ORDER BY w.tenant, w.created_at, w.url
        """,  # noqa: S608 - a constant
        {"tenant": tenant},
    )
    return list(await cur.fetchall())


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What the webhook handler needs to deliver to one endpoint."""

    id: uuid.UUID
    tenant: str
    url: str
    secret: str
    enabled: bool


async def get_webhook_target(conn: AsyncConn, webhook_id: uuid.UUID) -> WebhookTarget | None:
    cur = await conn.execute(
        "SELECT id, tenant, url, secret, enabled FROM webhooks WHERE id = %s", (webhook_id,)
    )
    row = await cur.fetchone()
    return None if row is None else WebhookTarget(**row)  # type: ignore[arg-type]


async def get_webhook(
    conn: AsyncConn, webhook_id: uuid.UUID, *, tenant: str | None
) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks"  # noqa: S608 - a constant
        " WHERE id = %s AND (%s::text IS NULL OR tenant = %s)",
        (webhook_id, tenant, tenant),
    )
    return await cur.fetchone()


async def delete_webhook(conn: AsyncConn, webhook_id: uuid.UUID) -> None:
    """Delete an endpoint and forget its pending deliveries (delivered/dead ones stay)."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM deliveries WHERE target = %s AND state = 'pending'",
            (webhook_target(webhook_id),),
        )
        await conn.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,))


async def audio_summary(conn: AsyncConn, audio_id: uuid.UUID) -> dict[str, Any] | None:
    """What an event's receivers are told about its audio (name, error), if it still exists."""
    cur = await conn.execute(
        "SELECT original_name, error, language, duration_s FROM audio WHERE id = %s", (audio_id,)
    )
    return await cur.fetchone()
