"""Each component built from the whole ``Settings``, handed only the groups it takes.

The runtime wires processes from these; tests that hold one ``Settings`` use the same
functions, so the split is written once. Heavy modules (the worker, the orchestrator)
are imported only when built, keeping the command line quick.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from pipeline.choices import TranscriptionPolicy
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.ingest.core import Ingestor
from pipeline.metrics import Metrics
from pipeline.sources.registry import SourceRegistry
from pipeline.storage import ObjectStore

if TYPE_CHECKING:
    from pipeline.datasets.orchestrator import Orchestrator
    from pipeline.deliveries.base import DeliveryHandler
    from pipeline.sources.processor import S3EventProcessor
    from workers.model_follow import ModelFollower
    from workers.sizing import Plan
    from workers.transcription import Transcriber
    from workers.worker import WorkerSettings


def ingestor_of(settings: Settings, db: Database, store: ObjectStore, metrics: Metrics) -> Ingestor:
    return Ingestor(
        db,
        store,
        validation=settings.validation,
        max_attempts=settings.queue.max_attempts,
        metrics=metrics,
        policy=TranscriptionPolicy(settings.asr, settings.tenants),
        priority_head_start_s=settings.queue.priority_head_start_s,
    )


def sources_of(settings: Settings) -> SourceRegistry:
    return SourceRegistry(
        settings.s3_sources,
        storage=settings.storage,
        allowed_extensions=settings.validation.allowed_extensions,
    )


def worker_settings_of(settings: Settings) -> WorkerSettings:
    from workers.worker import WorkerSettings

    return WorkerSettings(
        queue=settings.queue,
        validation=settings.validation,
        temp_dir=settings.temp_dir,
        shutdown_grace_s=settings.shutdown_grace_s,
        quality=settings.quality,
    )


def asr_plan_of(settings: Settings) -> Plan:
    """Jobs at once and CPU threads per job for this machine (``"auto"``), logged once."""
    import structlog

    from workers import sizing
    from workers.engines.faster_whisper import resolve_device

    asr = settings.asr
    device, _index = resolve_device(asr.device)
    machine = sizing.Machine(
        cores=sizing.usable_cores(),
        memory_mib=sizing.available_memory_mib(),
        device="cuda" if device == "cuda" else "cpu",
        model=asr.model,
    )
    chosen = sizing.plan(machine, concurrency=asr.concurrency, cpu_threads=asr.cpu_threads)
    structlog.get_logger(__name__).info(
        "asr sizing",
        cores=machine.cores,
        memory_available_mib=machine.memory_mib,
        device=machine.device,
        model=machine.model,
        concurrency=chosen.concurrency,
        cpu_threads=chosen.cpu_threads,
        requested=f"concurrency={asr.concurrency} cpu_threads={asr.cpu_threads}",
        reason=chosen.reason,
    )
    return chosen


def transcriber_of(settings: Settings, metrics: Metrics) -> Transcriber:
    """The workers' transcriber: the long-audio layer, its channels split when asked."""
    from workers.asr import build_transcriber
    from workers.channels import ChannelSplitter

    jobs = settings.asr.concurrency
    num_workers = jobs if isinstance(jobs, int) else 1
    inner = build_transcriber(settings.asr, num_workers=num_workers, metrics=metrics)
    return ChannelSplitter(inner, default=settings.asr.channels)


def follower_of(
    settings: Settings, db: Database, store: ObjectStore, metrics: Metrics
) -> ModelFollower:
    """The process's model follower: builds the workers' transcriber for any model."""
    from pipeline.registry.candidates import cache_dir_of
    from workers.model_follow import Labelled, ModelFollower

    def build(model: str, label: str) -> Transcriber:
        asr = settings.asr.model_copy(update={"model": model})
        inner = transcriber_of(settings.model_copy(update={"asr": asr}), metrics)
        return inner if label == model else Labelled(inner, label)

    return ModelFollower(
        db,
        store,
        configured=settings.asr.model,
        build=build,
        cache_dir=cache_dir_of(settings.asr),
        check_interval_s=max(settings.queue.poll_interval_s, 1.0),
        extra_models=settings.asr.extra_models,
    )


def processor_of(
    settings: Settings,
    db: Database,
    ingestor: Ingestor,
    sources: SourceRegistry,
    *,
    metrics: Metrics | None = None,
    notifications: NotificationHub | None = None,
) -> S3EventProcessor:
    """The S3 event processor; without ``metrics`` it counts into the ingestor's."""
    from pipeline.sources.processor import S3EventProcessor

    return S3EventProcessor(
        db,
        ingestor,
        sources,
        validation=settings.validation,
        poll_interval_s=settings.queue.poll_interval_s,
        metrics=metrics,
        notifications=notifications,
    )


def orchestrator_of(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    metrics: Metrics,
    *,
    notifications: NotificationHub | None = None,
) -> Orchestrator:
    from pipeline.datasets.orchestrator import Orchestrator

    return Orchestrator(
        db,
        store,
        training=settings.training,
        dataset=settings.dataset,
        data_dir=settings.data_dir,
        temp_dir=settings.temp_dir,
        metrics=metrics,
        notifications=notifications,
        asr=settings.asr,
    )


def delivery_handlers_of(
    settings: Settings, db: Database, kinds: Collection[str]
) -> dict[str, DeliveryHandler]:
    """The outbox's handlers this process runs, by target kind ('webhook', ...)."""
    handlers: dict[str, DeliveryHandler] = {}
    if "webhook" in kinds:
        from pipeline.deliveries.addresses import private_addresses_allowed
        from pipeline.deliveries.webhook import WebhookHandler

        handlers["webhook"] = WebhookHandler(
            db, settings.deliveries, allow_private=private_addresses_allowed(settings)
        )
    if "outbox" in kinds:
        from pipeline.deliveries.outbox import OutboxHandler

        handlers["outbox"] = OutboxHandler(settings.watch, settings.subtitles, db)
    if "bucket" in kinds:
        from pipeline.deliveries.bucket import BucketHandler

        handlers["bucket"] = BucketHandler(
            settings.s3_sources, settings.storage, settings.subtitles, db
        )
    return handlers
