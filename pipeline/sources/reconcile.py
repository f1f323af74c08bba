"""The safety net: list each watched prefix and record whatever events missed.

Runs once at start-up and then every ``reconcile_interval_s``. The listing is
paginated by the SDK and handled a page at a time, so memory does not grow with
the number of objects in the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from itertools import islice

import structlog

from pipeline.backoff import Backoff
from pipeline.db.database import Database
from pipeline.errors import DatabaseUnavailable, TransientError
from pipeline.metrics import Metrics
from pipeline.sources import inbox
from pipeline.sources.events import ObjectEvent
from pipeline.sources.registry import SourceRegistry, WatchedSource
from pipeline.sources.s3_bucket import SourceObject

log = structlog.get_logger(__name__)

PAGE = 500


async def reconcile_source(db: Database, source: WatchedSource) -> int:
    """Record a synthetic event for every unseen object version; return how many."""
    listing = source.bucket.iter_objects(source.settings.prefix)
    recorded = 0
    while True:
        page = await asyncio.to_thread(_next_page, listing, source)
        if page is None:
            return recorded
        recorded += await _record_unseen(db, page)


def _next_page(listing: Iterator[SourceObject], source: WatchedSource) -> list[SourceObject] | None:
    raw = list(islice(listing, PAGE))
    if not raw:
        return None
    return [o for o in raw if source.wants(o.key)]


async def _record_unseen(db: Database, page: list[SourceObject]) -> int:
    if not page:
        return 0
    uris = [f"s3://{o.bucket}/{o.key}" for o in page]
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT source_uri, source_version FROM audio WHERE source_uri = ANY(%s)"
            " UNION SELECT 's3://' || bucket || '/' || key, coalesce(version_id, etag)"
            " FROM s3_events WHERE state = 'pending' AND 's3://' || bucket || '/' || key = ANY(%s)",
            (uris, uris),
        )
        seen = {(r["source_uri"], r["source_version"]) for r in await cur.fetchall()}
        fresh = [
            o
            for o, uri in zip(page, uris, strict=True)
            if (uri, o.version_id or o.etag) not in seen and (uri, o.etag) not in seen
        ]
        events = [
            ObjectEvent(
                bucket=o.bucket,
                key=o.key,
                event_name="s3:ObjectCreated:Reconcile",
                size=o.size,
                etag=o.etag,
                version_id=o.version_id,
                sequencer=None,
            )
            for o in fresh
        ]
        return await inbox.record_events(conn, events, "reconcile")


async def run_reconcile(
    db: Database,
    registry: SourceRegistry,
    stop: asyncio.Event,
    *,
    metrics: Metrics,
) -> None:
    """Reconcile every source now and then on its interval, until ``stop``."""
    loop = asyncio.get_running_loop()
    due = {id(s): 0.0 for s in registry.sources}
    backoffs = {
        id(s): Backoff(f"listing s3://{s.settings.bucket}/{s.settings.prefix}")
        for s in registry.sources
    }
    while not stop.is_set():
        for source in registry.sources:
            if loop.time() < due[id(source)]:
                continue
            backoff = backoffs[id(source)]
            try:
                found = await reconcile_source(db, source)
            except DatabaseUnavailable as exc:
                metrics.db_errors.labels("s3_reconcile").inc()
                due[id(source)] = loop.time() + backoff.failed(f"database: {exc}")
                continue
            except TransientError as exc:
                metrics.s3_errors.labels("list").inc()
                due[id(source)] = loop.time() + backoff.failed(str(exc))
                continue
            backoff.succeeded()
            due[id(source)] = loop.time() + source.settings.reconcile_interval_s
            if found:
                log.info(
                    "reconcile found objects no event announced",
                    bucket=source.settings.bucket,
                    prefix=source.settings.prefix,
                    count=found,
                )
        wake = min(due.values(), default=loop.time() + 60) - loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.2, wake))
