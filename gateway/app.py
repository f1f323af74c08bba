"""The HTTP application, built from the settings object and the open database.

``create_app`` wires routers, error handlers and middleware; ``serve`` runs it
with uvicorn inside an ai2text process, under ai2text's own signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from gateway.auth import TokenVerifier
from gateway.context import AppContext
from gateway.errors import install_error_handlers
from gateway.events import events_router
from gateway.metrics import HttpMetrics, MetricsMiddleware
from gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from gateway.ratelimit import RateLimiter
from gateway.routes import audio, datasets, health, openai_compat
from gateway.waiter import TranscriptWaiter
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.errors import ConfigError
from pipeline.ingest.core import Ingestor
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

JSON_BODY_LIMIT = 1024 * 1024
# Multipart framing on top of the largest accepted file.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    ingestor: Ingestor,
    *,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    app = FastAPI(title="ai2text", version="0.1.0", docs_url="/docs", redoc_url=None)
    registry = CollectorRegistry()
    app.state.ctx = AppContext(
        settings=settings,
        db=db,
        store=store,
        ingestor=ingestor,
        verifier=verifier or TokenVerifier(settings),
        limiter=RateLimiter(settings.gateway.rate_limit_per_minute),
        waiter=TranscriptWaiter(db),
        metrics=registry,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(events_router(settings.webhook, db))
    app.include_router(openai_compat.router)
    app.include_router(audio.router)
    app.include_router(datasets.router)

    upload_limit = settings.validation.max_bytes + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimitMiddleware,
        default=JSON_BODY_LIMIT,
        limits={
            "/v1/events/s3": settings.webhook.max_body_bytes,
            "/v1/audio": upload_limit,
        },
    )
    if settings.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.gateway.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    app.add_middleware(RequestIdMiddleware)
    if settings.webhook.token is None and settings.s3_sources:
        log.warning("no webhook token configured: POST /v1/events/s3 refuses every request")
    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our process: our own signal handlers decide when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen before serving, so a busy port fails loudly and port 0 can be reported."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"gateway cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(app: FastAPI, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = EmbeddedServer(config)
    ctx: AppContext = app.state.ctx
    ctx.waiter.start()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stop_wait = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stop_wait.cancel()
        await serving
        await ctx.waiter.stop()
        sock.close()
