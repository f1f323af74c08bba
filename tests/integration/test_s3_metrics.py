"""S3 sources count what they ingest, refuse and cannot reach: moto, real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from typing import Any

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.metrics import Metrics
from pipeline.sources import inbox
from pipeline.sources.events import ObjectEvent
from pipeline.sources.reconcile import run_reconcile
from pipeline.storage import FilesystemStore
from pipeline.storage.s3 import S3Store
from tests.components import ingestor_of, processor_of, sources_of
from tests.waiting import eventually
from tests.wav import tone_pcm, wav_bytes


def tone_wav() -> bytes:
    return wav_bytes(tone_pcm(0.2))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source_settings(make_settings: Any, endpoint: str, bucket: str) -> Settings:
    settings: Settings = make_settings(
        storage={
            "endpoint": endpoint,
            "access_key": "testing",
            "secret_key": "testing",
            "secure": False,
            "bucket": bucket,
            "timeout_s": 2,
        },
        s3_sources=[{"bucket": bucket, "quiet_period_s": 0}],
    )
    return settings


def created(bucket: str, key: str) -> ObjectEvent:
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name="s3:ObjectCreated:Put",
        size=None,
        etag=None,
        version_id=None,
        sequencer=None,
    )


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_processor_counts_s3_ingests_and_rejections_by_reason_code(
    make_settings: Any, moto_endpoint: str
) -> None:
    bucket = f"src-{uuid.uuid4().hex[:12]}"
    settings = source_settings(make_settings, moto_endpoint, bucket)
    source = S3Store.from_settings(settings.storage)
    source.ensure_bucket()
    good, text = tone_wav(), b"just some text, not audio\n"
    source.client.put_object(bucket, "good.wav", io.BytesIO(good), len(good))
    source.client.put_object(bucket, "notes.wav", io.BytesIO(text), len(text))

    async def scenario() -> Metrics:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            metrics = Metrics()
            store = FilesystemStore(settings.data_dir / "objects")
            ingestor = ingestor_of(settings, database, store, metrics=metrics)
            processor = processor_of(settings, database, ingestor, sources_of(settings))
            async with database.connection() as conn:
                events = [created(bucket, k) for k in ("good.wav", "notes.wav", "gone.wav")]
                await inbox.record_events(conn, events, "webhook")
            while await processor.process_one():
                pass
            return metrics
        finally:
            await database.close()

    metrics = asyncio.run(scenario())
    assert counted(metrics, "ai2text_files_ingested_total", source="s3") == 1
    rejected = "ai2text_files_rejected_total"
    assert counted(metrics, rejected, source="s3", reason="not_audio") == 1
    assert counted(metrics, rejected, source="s3", reason="vanished") == 1
    assert counted(metrics, "ai2text_s3_errors_total", operation="stat") == 0


def test_unreachable_endpoint_counts_s3_errors_by_operation_and_the_event_waits(
    make_settings: Any, db: Any
) -> None:
    bucket = f"src-{uuid.uuid4().hex[:12]}"
    settings = source_settings(make_settings, f"127.0.0.1:{closed_port()}", bucket)

    async def scenario() -> Metrics:
        database = Database(settings.database, embedded=None)
        await database.open()
        metrics = Metrics()
        stop = asyncio.Event()
        sources = sources_of(settings)
        reconcile = asyncio.create_task(run_reconcile(database, sources, stop, metrics=metrics))
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            ingestor = ingestor_of(settings, database, store, metrics=metrics)
            processor = processor_of(settings, database, ingestor, sources)
            async with database.connection() as conn:
                await inbox.record_events(conn, [created(bucket, "a.wav")], "webhook")
            assert await processor.process_one()
            await eventually(
                lambda: counted(metrics, "ai2text_s3_errors_total", operation="list"),
                timeout=30,
                what="a counted listing error",
                watch=[reconcile],
            )
            return metrics
        finally:
            stop.set()
            await asyncio.wait_for(reconcile, 10)
            await database.close()

    metrics = asyncio.run(scenario())
    assert counted(metrics, "ai2text_s3_errors_total", operation="stat") == 1
    assert counted(metrics, "ai2text_s3_errors_total", operation="list") >= 1
    event = db.execute("SELECT state, error FROM s3_events").fetchone()
    assert event["state"] == "pending" and "127.0.0.1" in event["error"], event
    assert counted(metrics, "ai2text_files_rejected_total", source="s3", reason="vanished") == 0
