"""Components built from one whole ``Settings``, handing each the groups it takes.

The split itself lives in ``ai2text.components`` (the runtime's); these wrappers
only make ``metrics`` optional: a fresh ``Metrics()`` unless the test reads the one
it passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ai2text import components as built
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
    return built.ingestor_of(settings, db, store, Metrics() if metrics is None else metrics)


def hotfolder_of(settings: Settings, ingestor: Ingestor) -> HotFolder:
    return HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)


def sources_of(settings: Settings) -> SourceRegistry:
    return built.sources_of(settings)


def worker_settings_of(settings: Settings) -> WorkerSettings:
    return built.worker_settings_of(settings)


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
    return built.processor_of(settings, db, ingestor, sources)


def freezer_of(settings: Settings, db: Database, store: ObjectStore) -> Freezer:
    return Freezer(db, store, dataset=settings.dataset, temp_dir=settings.temp_dir)


def orchestrator_of(
    settings: Settings, db: Database, store: ObjectStore, *, metrics: Metrics | None = None
) -> Orchestrator:
    return built.orchestrator_of(settings, db, store, Metrics() if metrics is None else metrics)


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
