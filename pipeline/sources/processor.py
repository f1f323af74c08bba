"""Turning recorded S3 events into queued audio, through the shared ingest path.

Per event: is the object watched, still there, settled (older than the quiet
period, or the same etag seen twice), named and sized like audio, and do its
first bytes hold a supported audio stream? Then one audio row per
(bucket, key, etag/version) and one job. The object itself is never modified.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import UTC, datetime

import structlog

from pipeline.backoff import Backoff
from pipeline.config import ValidationSettings
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub, shared_or_own
from pipeline.db.notify import wait_for_notify
from pipeline.errors import DatabaseUnavailable, PermanentError, RejectedInput, TransientError
from pipeline.ingest.core import Arrival, Ingestor, IngestResult, RemoteObject
from pipeline.ingest.validation import check_extension, check_size
from pipeline.media import HeadInfo, check_wav_header, probe_head
from pipeline.metrics import Metrics
from pipeline.sources import inbox
from pipeline.sources.registry import SourceRegistry, WatchedSource
from pipeline.sources.s3_bucket import SourceObject

log = structlog.get_logger(__name__)

HEAD_BYTES = 1024 * 1024
# Containers whose index may sit at the end of the file (MP4 "moov" last): the
# first bytes alone cannot prove them wrong, the worker's full check will.
_INDEX_AT_END = ("m4a", "mp4")


class S3EventProcessor:
    def __init__(
        self,
        db: Database,
        ingestor: Ingestor,
        registry: SourceRegistry,
        *,
        validation: ValidationSettings,
        poll_interval_s: float,
        metrics: Metrics | None = None,
        notifications: NotificationHub | None = None,
    ) -> None:
        """``validation`` judges each object's name, size and head before it is ingested.

        With no event waiting, the processor wakes on NOTIFY or every ``poll_interval_s``;
        ``metrics`` defaults to the ingestor's.
        """
        self.validation = validation
        self.poll_interval_s = poll_interval_s
        self.db = db
        # The process's shared hub (else the processor opens its own while it runs).
        self.notifications = notifications
        self.ingestor = ingestor
        self.registry = registry
        self.metrics = metrics if metrics is not None else ingestor.metrics
        self.backoff = Backoff("S3 event processing")
        self.db_backoff = Backoff("database (S3 event processing)", base_s=0.5, cap_s=10.0)

    async def run(self, stop: asyncio.Event) -> None:
        async with (
            shared_or_own(self.db, self.notifications) as hub,
            hub.subscription(inbox.EVENTS_CHANNEL) as new_events,
        ):
            while not stop.is_set():
                try:
                    handled = await self.process_one()
                    self.db_backoff.succeeded()
                    if not handled:
                        await wait_for_notify(new_events, stop, self.poll_interval_s)
                except DatabaseUnavailable as exc:
                    # A claimed event stays hidden for a while, then is claimed again.
                    self.metrics.db_errors.labels("s3_processor").inc()
                    delay = self.db_backoff.failed(str(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)

    async def process_one(self) -> bool:
        """Handle the next due event; False when none is due."""
        async with self.db.connection() as conn:
            event = await inbox.claim_event(conn)
        if event is None:
            return False
        try:
            with structlog.contextvars.bound_contextvars(
                s3_event_id=event.id, bucket=event.bucket, key=event.key
            ):
                await self._handle(event)
            self.backoff.succeeded()
        except DatabaseUnavailable:
            raise  # the database is down: nothing can be recorded; the run loop waits
        except TransientError as exc:
            delay = self.backoff.failed(str(exc))
            async with self.db.connection() as conn:
                await inbox.defer_event(
                    conn, event.id, delay_s=delay, seen_etag=event.seen_etag, error=str(exc)
                )
        except PermanentError as exc:
            # E.g. the object was replaced between stat and read (412): its new version
            # has its own event, and reconcile finds it if that event was lost.
            await self._finish(event, "skipped", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop ingestion
            log.exception("S3 event could not be processed", event_id=event.id)
            await self._finish(event, "failed", error=f"internal error: {type(exc).__name__}")
        return True

    async def _handle(self, event: inbox.PendingEvent) -> None:
        source = self.registry.match(event.bucket, event.key)
        if (
            source is None
            or not source.wants(event.key)
            or "ObjectCreated" not in (event.event_name or "")
        ):
            await self._finish(event, "skipped", error="not a watched bucket, prefix or event")
            return
        async with self.db.connection() as conn:
            if await inbox.newer_event_done(conn, event):
                await inbox.finish_event(conn, event.id, "skipped", error="superseded")
                return
        with self.metrics.s3_call("stat"):
            obj = await asyncio.to_thread(source.bucket.describe, event.key)
        arrival = _arrival(event, source, obj)
        if obj is None:
            result = await self.ingestor.reject(
                arrival,
                "object no longer exists (deleted before it could be ingested)",
                code="vanished",
            )
            await self._finish(event, "failed", result=result, error=result.reason)
            return
        changed = _changed_since_event(event, obj)
        if changed is not None:
            # A newer version replaced what this event announced; that version has its own
            # event (or reconcile will find it), so this one is not ingested.
            await self._finish(event, "skipped", error=changed)
            return
        if not self._settled(event, obj, source):
            async with self.db.connection() as conn:
                await inbox.defer_event(
                    conn,
                    event.id,
                    delay_s=max(source.settings.quiet_period_s, 0.2),
                    seen_etag=obj.etag,
                    error=None,
                )
            return
        earlier = await self.ingestor.find_existing(arrival)
        result = earlier or await self._ingest(arrival, source, obj)
        await self._finish(event, "done", result=result)

    def _settled(self, event: inbox.PendingEvent, obj: SourceObject, source: WatchedSource) -> bool:
        if event.seen_etag is not None and event.seen_etag == obj.etag:
            return True
        if obj.last_modified is None:
            return False
        age = (datetime.now(UTC) - obj.last_modified).total_seconds()
        return age >= source.settings.quiet_period_s

    async def _ingest(
        self, arrival: Arrival, source: WatchedSource, obj: SourceObject
    ) -> IngestResult:
        try:
            info = await asyncio.to_thread(self._check_head, source, obj)
        except RejectedInput as rejection:
            return await self.ingestor.reject(
                arrival, rejection.reason, size=obj.size, code=rejection.code
            )
        where = RemoteObject(bucket=obj.bucket, key=obj.key, etag=obj.etag, size=obj.size)
        return await self.ingestor.record_remote(arrival, where, info, source.settings)

    def _check_head(self, source: WatchedSource, obj: SourceObject) -> HeadInfo:
        validation = self.validation
        ext = check_extension(obj.key, validation)
        check_size(obj.size, validation)
        with self.metrics.s3_call("get"):
            head = source.bucket.read_head(obj.key, HEAD_BYTES, etag=obj.etag)
        if ext == "wav":
            check_wav_header(io.BytesIO(head), obj.size)
        try:
            return probe_head(head, max_duration_s=validation.max_duration_s)
        except RejectedInput:
            if ext in _INDEX_AT_END and obj.size > len(head):
                return HeadInfo(
                    container=ext, codec="unknown", sample_rate=0, channels=0, duration_s=None
                )
            raise

    async def _finish(
        self,
        event: inbox.PendingEvent,
        state: inbox.EventOutcome,
        *,
        result: IngestResult | None = None,
        error: str | None = None,
    ) -> None:
        async with self.db.connection() as conn:
            await inbox.finish_event(
                conn, event.id, state, audio_id=result.audio_id if result else None, error=error
            )


def _changed_since_event(event: inbox.PendingEvent, obj: SourceObject) -> str | None:
    if event.etag and obj.etag and event.etag != obj.etag:
        return f"object changed since this event (etag {event.etag} is now {obj.etag})"
    if event.size is not None and event.size != obj.size:
        return f"object changed since this event (size {event.size} is now {obj.size})"
    return None


def _arrival(event: inbox.PendingEvent, source: WatchedSource, obj: SourceObject | None) -> Arrival:
    if obj is not None:
        version = obj.version_id or obj.etag
    else:
        # Recorded under its own name, so the same bytes uploaded again later are not
        # mistaken for this vanished delivery; repeats of this event still dedupe.
        announced = event.version_id or event.etag
        version = f"vanished:{announced}" if announced else None
    return Arrival(
        source="s3",
        original_name=event.key,
        source_uri=f"s3://{event.bucket}/{event.key}",
        source_version=version,
        tenant=source.settings.tenant,
    )
