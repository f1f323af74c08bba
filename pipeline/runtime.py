"""Running roles: build the shared resources from settings, run, stop cleanly.

``ai2text up`` runs every role in one process; ``ai2text worker`` and
``ai2text watch`` run one role each against a shared database and store.
The first SIGTERM/SIGINT asks every role to stop taking work and finish or
release what it holds; a second one exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Coroutine
from typing import Any, Literal

import structlog

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.db.embedded import EmbeddedPostgres
from pipeline.errors import ConfigError, TransientError
from pipeline.ingest.core import Ingestor
from pipeline.ingest.hotfolder import HotFolder
from pipeline.sources.registry import SourceRegistry
from pipeline.storage import ObjectStore, open_store

log = structlog.get_logger(__name__)

Role = Literal["watch", "worker", "gateway", "s3", "orchestrator"]
EXIT_ON_SECOND_SIGNAL = 130


def build_database(settings: Settings) -> Database:
    """An external PostgreSQL when a URL is configured, else the embedded one."""
    embedded = None
    if settings.database.url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
    return Database(settings.database, embedded)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
            os._exit(EXIT_ON_SECOND_SIGNAL)
        log.info(
            "stopping: finishing or releasing current work", signal=signal.Signals(signum).name
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def run_roles(settings: Settings, roles: set[Role]) -> int:
    """Run ``roles`` until a signal (exit code 0) or a role crashes (exit code 1)."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Claim the HTTP port first: a busy port is a clear error before anything starts.
    sock = _bind_gateway(settings) if "gateway" in roles and settings.gateway.enabled else None
    db = build_database(settings)
    await db.open()
    try:
        if stop.is_set():
            return 0
        store = open_store(settings)
        try:
            await asyncio.to_thread(store.check)  # also creates a missing S3 bucket
        except TransientError as exc:
            log.warning("object store not reachable yet; work will be retried", error=str(exc))
        coros: list[Coroutine[Any, Any, None]] = []
        ingestor = Ingestor(settings, db, store)
        sources = SourceRegistry(settings)
        if "watch" in roles:
            coros.append(HotFolder(settings, ingestor).run(stop))
        if "s3" in roles and sources:
            coros.extend(_s3_roles(settings, db, ingestor, sources, stop))
        if "orchestrator" in roles and settings.training.enabled:
            from pipeline.datasets.orchestrator import Orchestrator

            coros.append(Orchestrator(settings, db, store).run(stop))
        if sock is not None:
            coros.append(_serve_http(settings, db, store, ingestor, sock, stop))
        if "worker" in roles and settings.asr.concurrency > 0:
            coros.extend(await _workers(settings, db, store, sources, stop))
        return await _supervise(coros, stop)
    finally:
        await db.close()
        if sock is not None:
            sock.close()


def _bind_gateway(settings: Settings) -> socket.socket:
    from gateway.app import bind_socket

    try:
        return bind_socket(settings.gateway.host, settings.gateway.port)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; choose another port with AI2TEXT_GATEWAY__PORT (0 = any free port)"
            " or run without the API with AI2TEXT_GATEWAY__ENABLED=false"
        ) from None


def _s3_roles(
    settings: Settings,
    db: Database,
    ingestor: Ingestor,
    sources: SourceRegistry,
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    from pipeline.sources.listener import run_listener
    from pipeline.sources.processor import S3EventProcessor
    from pipeline.sources.reconcile import run_reconcile

    coros: list[Coroutine[Any, Any, None]] = [
        S3EventProcessor(settings, db, ingestor, sources).run(stop),
        run_reconcile(db, sources, stop),
    ]
    coros.extend(run_listener(db, s, stop) for s in sources.sources if s.settings.listen)
    return coros


async def _serve_http(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    ingestor: Ingestor,
    sock: socket.socket,
    stop: asyncio.Event,
) -> None:
    from gateway.app import create_app, serve

    app = create_app(settings, db, store, ingestor)
    host, port = sock.getsockname()[:2]
    log.info("gateway listening", url=f"http://{host}:{port}")
    await serve(app, sock, stop)


async def _workers(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    sources: SourceRegistry,
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    from workers.asr import WhisperTranscriber
    from workers.worker import AsrWorker, make_worker_id

    transcriber = WhisperTranscriber(settings.asr, num_workers=settings.asr.concurrency)
    await asyncio.to_thread(transcriber.load)
    return [
        AsrWorker(
            settings, db, store, transcriber, worker_id=make_worker_id(i), sources=sources
        ).run(stop)
        for i in range(settings.asr.concurrency)
    ]


async def _supervise(coros: list[Coroutine[Any, Any, None]], stop: asyncio.Event) -> int:
    tasks = [asyncio.create_task(c) for c in coros]
    exit_code = 0
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except Exception:  # noqa: BLE001 - one crashed role stops the others cleanly
                log.exception("a role crashed; stopping the others")
                exit_code = 1
                stop.set()
    finally:
        stop.set()
    log.info("stopped", exit_code=exit_code)
    return exit_code
