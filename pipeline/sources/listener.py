"""MinIO's ``listen_bucket_notification`` stream, kept open through outages.

The SDK call blocks, so each watched source listens in a daemon thread and
hands events to the event loop, which records them durably. A dropped stream
is reopened with capped backoff, logged once per change of state.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import structlog
from minio.error import MinioException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from pipeline.backoff import Backoff
from pipeline.db.database import Database
from pipeline.errors import DatabaseUnavailable
from pipeline.metrics import Metrics
from pipeline.sources import inbox
from pipeline.sources.events import MalformedEvent, parse_notification
from pipeline.sources.registry import WatchedSource

log = structlog.get_logger(__name__)


def listen_forever(
    source: WatchedSource,
    deliver: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    *,
    wait: Callable[[float], bool] | None = None,
    metrics: Metrics,
) -> None:
    """Blocking: feed every notification to ``deliver`` until ``stop`` is set."""
    backoff = Backoff(f"listening on s3://{source.settings.bucket}/{source.settings.prefix}")
    pause = wait or stop.wait
    while not stop.is_set():
        try:
            with source.bucket.client.listen_bucket_notification(
                source.settings.bucket,
                prefix=source.settings.prefix,
                events=("s3:ObjectCreated:*",),
            ) as stream:
                for notification in stream:
                    backoff.succeeded()
                    if stop.is_set():
                        return
                    if notification:
                        deliver(notification)
        except (MinioException, Urllib3HTTPError, OSError, ValueError) as exc:
            metrics.s3_errors.labels("listen").inc()
            if pause(backoff.failed(str(exc))):
                return


async def run_listener(
    db: Database,
    source: WatchedSource,
    stop: asyncio.Event,
    *,
    metrics: Metrics,
) -> None:
    loop = asyncio.get_running_loop()
    halt = threading.Event()

    def deliver(notification: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(_record(db, notification, metrics), loop)
        future.result(timeout=60)  # backpressure: the stream waits while we record

    thread = threading.Thread(
        target=listen_forever,
        args=(source, deliver, halt),
        kwargs={"metrics": metrics},
        daemon=True,
        name=f"s3-listen-{source.settings.bucket}",
    )
    thread.start()
    log.info(
        "listening for bucket notifications",
        bucket=source.settings.bucket,
        prefix=source.settings.prefix,
    )
    await stop.wait()
    halt.set()


async def _record(db: Database, notification: dict[str, Any], metrics: Metrics) -> None:
    try:
        events = [e for e in parse_notification(notification) if e.is_created]
    except MalformedEvent as exc:
        log.warning("ignoring malformed notification from the listen stream", reason=exc.reason)
        return
    try:
        async with db.connection() as conn:
            await inbox.record_events(conn, events, "listen")
    except DatabaseUnavailable as exc:
        # The next reconcile listing finds these objects; the stream itself stays open.
        metrics.db_errors.labels("s3_listener").inc()
        log.warning(
            "could not record bucket notifications; reconcile will find them", error=str(exc)
        )
