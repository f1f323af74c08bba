"""Components built from one whole ``Settings``, handing each the groups it takes.

The runtime does the same split (``ai2text.runtime``); tests that hold one
``Settings`` build their components here instead of repeating it. ``metrics``
is a fresh ``Metrics()`` unless the test reads the one it passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.auth import TokenVerifier
from pipeline.config import Settings
from pipeline.datasets.freeze import Freezer
from pipeline.datasets.orchestrator import Orchestrator
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.ingest.core import Ingestor
from pipeline.ingest.hotfolder import HotFolder
from pipeline.metrics import Metrics
from pipeline.sources.processor import S3EventProcessor
from pipeline.sources.registry import SourceRegistry
from pipeline.storage import ObjectStore
from workers.transcription import Transcriber
from workers.worker import AsrWorker, WorkerSettings


def ingestor_of(
    settings: Settings, db: Database, store: ObjectStore, *, metrics: Metrics | None = None
) -> Ingestor:
    return Ingestor(
        db,
        store,
        validation=settings.validation,
        max_attempts=settings.queue.max_attempts,
        metrics=Metrics() if metrics is None else metrics,
    )


def hotfolder_of(settings: Settings, ingestor: Ingestor) -> HotFolder:
    return HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)


def sources_of(settings: Settings) -> SourceRegistry:
    return SourceRegistry(
        settings.s3_sources,
        storage=settings.storage,
        allowed_extensions=settings.validation.allowed_extensions,
    )


def worker_settings_of(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        queue=settings.queue,
        validation=settings.validation,
        temp_dir=settings.temp_dir,
        shutdown_grace_s=settings.shutdown_grace_s,
    )


def worker_of(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    transcriber: Transcriber,
    *,
    worker_id: str | None = None,
    metrics: Metrics | None = None,
    notifications: NotificationHub | None = None,
) -> AsrWorker:
    return AsrWorker(
        worker_settings_of(settings),
        db,
        store,
        transcriber,
        sources=sources_of(settings),
        metrics=Metrics() if metrics is None else metrics,
        worker_id=worker_id,
        notifications=notifications,
    )


def processor_of(
    settings: Settings, db: Database, ingestor: Ingestor, sources: SourceRegistry
) -> S3EventProcessor:
    """The S3 event processor; it counts into the ingestor's metrics."""
    return S3EventProcessor(
        db,
        ingestor,
        sources,
        validation=settings.validation,
        poll_interval_s=settings.queue.poll_interval_s,
    )


def freezer_of(settings: Settings, db: Database, store: ObjectStore) -> Freezer:
    return Freezer(db, store, dataset=settings.dataset, temp_dir=settings.temp_dir)


def orchestrator_of(
    settings: Settings, db: Database, store: ObjectStore, *, metrics: Metrics | None = None
) -> Orchestrator:
    return Orchestrator(
        db,
        store,
        training=settings.training,
        dataset=settings.dataset,
        data_dir=settings.data_dir,
        temp_dir=settings.temp_dir,
        metrics=Metrics() if metrics is None else metrics,
    )


def verifier_of(settings: Settings, **options: Any) -> TokenVerifier:
    return TokenVerifier(settings.auth, settings.data_dir, **options)


@asynccontextmanager
async def opened(
    settings: Settings, *, pool_max_size: int | None = None
) -> AsyncIterator[Database]:
    """The settings' (external, test) database, open for the block."""
    database = Database(settings.database, embedded=None)
    await database.open(pool_max_size=pool_max_size)
    try:
        yield database
    finally:
        await database.close()
