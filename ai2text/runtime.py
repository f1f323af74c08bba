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
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from ai2text.components import (
    asr_plan_of,
    delivery_handlers_of,
    follower_of,
    ingestor_of,
    orchestrator_of,
    processor_of,
    sources_of,
    worker_settings_of,
)
from pipeline.config import Settings
from pipeline.db.database import Database, build_database
from pipeline.db.notifications import NotificationHub
from pipeline.db.supervise import supervise_embedded
from pipeline.errors import ConfigError, TransientError
from pipeline.http_serve import bind_socket, url_of
from pipeline.ingest.core import Ingestor
from pipeline.ingest.hotfolder import HotFolder
from pipeline.locks import DATA_DIR_LOCK, INBOX_LOCK, DirectoryLock, claim_directory
from pipeline.metrics import Metrics
from pipeline.ops_http import OpsServer, Readiness
from pipeline.permissions import ensure_data_dir, restrict_data_dir
from pipeline.sampler import run_sampler
from pipeline.sources.registry import SourceRegistry
from pipeline.staging import prepare_staging
from pipeline.storage import ObjectStore, open_store

log = structlog.get_logger(__name__)

Role = Literal["watch", "worker", "gateway", "s3", "orchestrator"]
EXIT_ON_SECOND_SIGNAL = 130


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


@dataclass(slots=True)
class Listening:
    """The sockets a process claimed before anything else started (either may be absent)."""

    gateway: socket.socket | None = None
    ops: socket.socket | None = None

    def close(self) -> None:
        for sock in (self.gateway, self.ops):
            if sock is not None:
                sock.close()


async def run_roles(settings: Settings, roles: set[Role], *, exclusive: bool = False) -> int:
    """Run ``roles`` until a signal (exit code 0) or a role crashes (exit code 1).

    ``exclusive`` (``ai2text up``) claims the data directory: a second ``up`` on it is
    refused. Any process that watches the inbox claims the inbox the same way.
    """
    stop = asyncio.Event()
    install_signal_handlers(stop)
    ensure_data_dir(settings.data_dir)
    claims = _claim_directories(settings, roles, exclusive=exclusive)
    try:
        return await _run_claimed(settings, roles, stop)
    finally:
        for claim in claims:
            claim.release()


def _claim_directories(
    settings: Settings, roles: set[Role], *, exclusive: bool
) -> list[DirectoryLock]:
    claims: list[DirectoryLock] = []
    try:
        if exclusive:
            claims.append(
                claim_directory(
                    settings.data_dir,
                    DATA_DIR_LOCK,
                    what="data directory",
                    hint="stop it first, or give this one its own AI2TEXT_DATA_DIR",
                )
            )
        if "watch" in roles:
            claims.append(
                claim_directory(
                    settings.watch.inbox,
                    INBOX_LOCK,
                    what="inbox",
                    hint="stop it first, or watch another folder with AI2TEXT_WATCH__INBOX",
                )
            )
    except BaseException:
        for claim in claims:
            claim.release()
        raise
    return claims


async def _run_claimed(settings: Settings, roles: set[Role], stop: asyncio.Event) -> int:
    await asyncio.to_thread(prepare_staging, settings.temp_dir)
    # Claim the HTTP ports first: a busy port is a clear error before anything starts.
    listening = _bind_ports(settings, roles)
    if listening.gateway is not None:
        try:
            await asyncio.to_thread(_check_gateway_keys, settings)
        except ConfigError:
            listening.close()
            raise
    metrics = Metrics()
    readiness = Readiness(stopping=stop)
    db = build_database(settings)
    ops = None
    if listening.ops is not None:
        ops = OpsServer(listening.ops, db=db, metrics=metrics, readiness=readiness)
        ops.start()
    try:
        await db.open()
        restrict_data_dir(settings.data_dir)  # also data directories made by older versions
        try:
            if stop.is_set():
                return 0
            # One LISTEN connection for the whole process, closed once every role stopped.
            async with NotificationHub(db) as hub:
                coros = await _build_roles(settings, roles, db, hub, metrics, listening, stop)
                if db.embedded is not None:
                    coros.append(supervise_embedded(db, stop))
                if listening.gateway is not None or "orchestrator" in roles:
                    # Database-wide gauges come from the few control-plane processes, not
                    # from every worker: N workers would run the same counting queries N times.
                    interval_s = settings.metrics.queue_sample_interval_s
                    coros.append(
                        run_sampler(db, metrics, settings.dataset, stop, interval_s=interval_s)
                    )
                readiness.started.set()
                return await _supervise(coros, stop)
        finally:
            stop.set()  # /readyz says "stopping" from here on
            if ops is not None:
                await ops.stop()
            await db.close()
    finally:
        if ops is not None:
            await ops.stop()
        listening.close()


def _bind_ports(settings: Settings, roles: set[Role]) -> Listening:
    listening = Listening()
    try:
        if "gateway" in roles and settings.gateway.enabled:
            listening.gateway = _bind(
                settings.gateway.host,
                settings.gateway.port,
                "gateway",
                " or run without the API with AI2TEXT_GATEWAY__ENABLED=false",
                "AI2TEXT_GATEWAY__PORT",
            )
        if settings.metrics.port is not None:
            listening.ops = _bind(
                settings.metrics.host,
                settings.metrics.port,
                "metrics server",
                " or leave AI2TEXT_METRICS__PORT unset to serve no metrics endpoint",
                "AI2TEXT_METRICS__PORT",
            )
    except ConfigError:
        listening.close()
        raise
    return listening


def _bind(host: str, port: int, what: str, otherwise: str, variable: str) -> socket.socket:
    try:
        return bind_socket(host, port, what=what)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; choose another port with {variable} (0 = any free port){otherwise}"
        ) from None


async def _build_roles(
    settings: Settings,
    roles: set[Role],
    db: Database,
    hub: NotificationHub,
    metrics: Metrics,
    listening: Listening,
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    """Construct every role this process runs; the worker's model is loaded here."""
    store = open_store(settings.storage, settings.data_dir)
    try:
        await asyncio.to_thread(store.check)  # also creates a missing S3 bucket
    except TransientError as exc:
        log.warning("object store not reachable yet; work will be retried", error=str(exc))
    coros: list[Coroutine[Any, Any, None]] = []
    try:
        ingestor = ingestor_of(settings, db, store, metrics)
        sources = sources_of(settings)
        if "watch" in roles:
            hotfolder = HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)
            coros.append(hotfolder.run(stop))
        if "s3" in roles and sources:
            coros.extend(_s3_roles(settings, db, hub, ingestor, sources, metrics, stop))
        if "orchestrator" in roles and settings.training.enabled:
            orchestrator = orchestrator_of(settings, db, store, metrics, notifications=hub)
            coros.append(orchestrator.run(stop))
        if listening.gateway is not None:
            coros.append(
                _serve_http(settings, db, hub, store, ingestor, metrics, listening.gateway, stop)
            )
        if "worker" in roles and settings.asr.concurrency != 0:
            coros.extend(await _workers(settings, db, hub, store, sources, metrics, stop))
        coros.extend(await _deliveries(settings, db, hub, metrics, delivery_kinds(roles), stop))
    except BaseException:
        for coro in coros:  # built but never started (e.g. the model failed to load)
            coro.close()
        raise
    return coros


def delivery_kinds(roles: set[Role]) -> set[str]:
    """The outbox targets this process delivers: webhooks from the gateway (every
    deployment runs one; several share the work) and orchestrator roles, transcript
    files of folder drops from the watch role (it sees the inbox), of S3 objects from
    the s3 role (it has the sources' connections); ``up`` runs them all."""
    kinds: set[str] = set()
    if roles & {"gateway", "orchestrator"}:
        kinds.add("webhook")
    if "watch" in roles:
        kinds.add("outbox")
    if "s3" in roles:
        kinds.add("bucket")
    return kinds


async def _deliveries(
    settings: Settings,
    db: Database,
    hub: NotificationHub,
    metrics: Metrics,
    kinds: set[str],
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    """One runner for every outbox target this process delivers (none: no runner)."""
    from pipeline.db.deliveries import sync_config_webhooks
    from pipeline.deliveries.runner import DeliveryRunner

    if "webhook" in kinds:
        async with db.connection() as conn:
            await sync_config_webhooks(conn, settings.deliveries.webhooks)
    handlers = delivery_handlers_of(settings, db, kinds)
    if not handlers:
        return []
    runner = DeliveryRunner(db, hub, settings.deliveries, handlers, metrics=metrics)
    return [runner.run(stop)]


def _s3_roles(
    settings: Settings,
    db: Database,
    hub: NotificationHub,
    ingestor: Ingestor,
    sources: SourceRegistry,
    metrics: Metrics,
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    from pipeline.sources.listener import run_listener
    from pipeline.sources.reconcile import run_reconcile

    processor = processor_of(settings, db, ingestor, sources, metrics=metrics, notifications=hub)
    coros: list[Coroutine[Any, Any, None]] = [
        processor.run(stop),
        run_reconcile(db, sources, stop, metrics=metrics),
    ]
    coros.extend(
        run_listener(db, s, stop, metrics=metrics) for s in sources.sources if s.settings.listen
    )
    return coros


def _check_gateway_keys(settings: Settings) -> None:
    """Load the token keys once up front: a missing key file is one line, before anything."""
    from gateway.auth import TokenVerifier

    TokenVerifier(settings.auth, settings.data_dir)


async def _serve_http(
    settings: Settings,
    db: Database,
    hub: NotificationHub,
    store: ObjectStore,
    ingestor: Ingestor,
    metrics: Metrics,
    sock: socket.socket,
    stop: asyncio.Event,
) -> None:
    from gateway.app import create_app, serve

    app = create_app(settings, db, store, ingestor, metrics=metrics, notifications=hub)
    url = url_of(sock)
    log.info("gateway listening", url=url)
    await _announce_signin_link(app, settings, db, url)
    await serve(app, sock, stop)


async def _announce_signin_link(app: Any, settings: Settings, db: Database, url: str) -> None:
    """Print (and log) a one-time console sign-in link, as notebook servers do."""
    from gateway.console_auth import signin_link, wants_signin_link

    console = settings.console
    if not wants_signin_link(console, embedded_database=db.embedded is not None):
        return
    link = await signin_link(app.state.console.sessions, console, url)
    minutes = max(1, round(console.signin_code_ttl_s / 60))
    log.info("console sign-in link", url=link, valid_s=console.signin_code_ttl_s)
    if settings.log_format == "json":
        return  # stderr carries only JSON lines then; the event above has the link
    sys.stderr.write(
        f"\n    Open the console: {link}\n    (the link signs you in once, within {minutes} min;"
        " `ai2text console-link` makes a new one)\n\n"
    )


async def _workers(
    settings: Settings,
    db: Database,
    hub: NotificationHub,
    store: ObjectStore,
    sources: SourceRegistry,
    metrics: Metrics,
    stop: asyncio.Event,
) -> list[Coroutine[Any, Any, None]]:
    from workers.worker import AsrWorker, make_worker_id

    chosen = asr_plan_of(settings)
    sized = {"concurrency": chosen.concurrency, "cpu_threads": chosen.cpu_threads}
    settings = settings.model_copy(update={"asr": settings.asr.model_copy(update=sized)})
    follower = follower_of(settings, db, store, metrics)
    active = await follower.prepare()  # the promoted model, else asr.model
    worker_settings = worker_settings_of(settings)
    return [
        AsrWorker(
            worker_settings,
            db,
            store,
            active.transcriber,
            worker_id=make_worker_id(i),
            sources=sources,
            metrics=metrics,
            notifications=hub,
            follower=follower,
        ).run(stop)
        for i in range(chosen.concurrency)
    ]


async def _supervise(coros: list[Coroutine[Any, Any, None]], stop: asyncio.Event) -> int:
    tasks = [asyncio.create_task(c) for c in coros]
    exit_code = 0
    misconfigured: ConfigError | None = None
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except ConfigError as exc:  # e.g. the gateway's keys: the user's to fix, one line
                misconfigured = misconfigured or exc
                stop.set()
            except Exception:  # noqa: BLE001 - one crashed role stops the others cleanly
                log.exception("a role crashed; stopping the others")
                exit_code = 1
                stop.set()
    finally:
        stop.set()
    if misconfigured is not None:
        raise misconfigured
    log.info("stopped", exit_code=exit_code)
    return exit_code
