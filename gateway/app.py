"""The HTTP application, built from the settings object and the open database.

``create_app`` wires routers, error handlers and middleware; ``serve`` runs it
with uvicorn inside an ai2text process, under ai2text's own signal handling.
"""

from __future__ import annotations

import asyncio
import socket

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gateway import console_auth
from gateway.auth import TokenVerifier
from gateway.console import mount_console
from gateway.context import AppContext
from gateway.docs import install_docs
from gateway.errors import install_error_handlers
from gateway.events import events_router
from gateway.headers import SecurityHeadersMiddleware
from gateway.metrics import MetricsMiddleware
from gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from gateway.ratelimit import RateLimiter
from gateway.routes import audio, datasets, health, openai_compat, stream, transcripts
from gateway.routes.audio_content import router as audio_content_router
from gateway.routes.disk import router as disk_router
from gateway.routes.models import router as models_router
from gateway.routes.webhooks import router as webhooks_router
from gateway.security import AuthGate
from gateway.sessions import SessionStore
from gateway.waiter import TranscriptWaiter
from pipeline.config import GatewaySettings, Settings
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.http_serve import ConnectionLimits, serve_asgi
from pipeline.ingest.core import Ingestor
from pipeline.metrics import Metrics
from pipeline.sources.registry import watched_buckets
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

JSON_BODY_LIMIT = 1024 * 1024
# What a request that no token admitted may send: enough for a small form, not an upload.
ANONYMOUS_BODY_LIMIT = 8 * 1024
WEBHOOK_PATH = "/v1/events/s3"
# Multipart framing on top of the largest accepted file.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    ingestor: Ingestor,
    *,
    verifier: TokenVerifier | None = None,
    metrics: Metrics | None = None,
    notifications: NotificationHub | None = None,
) -> FastAPI:
    """The API; ``/metrics`` serves ``metrics`` (default: the ingestor's), the whole process's.

    ``notifications`` is the process's shared hub (else the API listens on its own).
    """
    # The docs pages are gateway.docs's: local assets, no inline script.
    app = FastAPI(title="ai2text", version="0.1.0", docs_url=None, redoc_url=None)
    metrics = metrics if metrics is not None else ingestor.metrics
    app.state.ctx = AppContext(
        settings=settings,
        db=db,
        store=store,
        ingestor=ingestor,
        verifier=verifier or TokenVerifier(settings.auth, settings.data_dir),
        limiter=RateLimiter(settings.gateway.rate_limit_per_minute),
        waiter=TranscriptWaiter(db, notifications),
        metrics=metrics,
    )
    app.state.streams = stream.StreamControl(db, notifications)
    sessions = SessionStore(db)
    app.state.console = console_auth.ConsoleAuth(
        sessions,
        app.state.ctx.verifier,
        settings.console,
        failures_per_minute=settings.gateway.auth_failures_per_minute,
    )
    install_error_handlers(app)
    routers = [
        health.router,
        events_router(settings.webhook, db, watched_buckets(settings.s3_sources)),
        openai_compat.router,
        audio.router,
        audio_content_router,
        transcripts.router,
        datasets.router,
        webhooks_router,
        models_router,
        stream.router,
        console_auth.router,
        disk_router,
    ]
    for router in routers:
        app.include_router(router)
    install_docs(app)
    mount_console(app)

    upload_limit = settings.validation.max_bytes + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimitMiddleware,
        default=JSON_BODY_LIMIT,
        limits={
            WEBHOOK_PATH: settings.webhook.max_body_bytes,
            "/v1/audio": upload_limit,
        },
        anonymous=ANONYMOUS_BODY_LIMIT,
        # The webhook checks its own token.
        self_authenticated=(WEBHOOK_PATH,),
    )
    # Outside the body limit, which reads the principal the gate admits.
    app.add_middleware(
        AuthGate,
        ctx=app.state.ctx,
        routes=[route for router in routers for route in router.routes],
        sessions=sessions,
    )
    if settings.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.gateway.cors_origins),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "If-Match"],
            expose_headers=["ETag"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.webhook.token is None and settings.s3_sources:
        log.warning("no webhook token configured: POST /v1/events/s3 refuses every request")
    return app


async def serve(app: FastAPI, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    ctx: AppContext = app.state.ctx
    ctx.waiter.start()
    app.state.streams.stop_with(stop)  # event streams end, so the server can stop
    try:
        await serve_asgi(app, sock, stop, limits=connection_limits(ctx.settings.gateway))
    finally:
        await ctx.waiter.stop()


def connection_limits(gateway: GatewaySettings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout_s=gateway.header_timeout_s,
        body_idle_timeout_s=gateway.body_idle_timeout_s,
        max_connections=gateway.max_connections,
        trusted_proxies=gateway.trusted_proxies,
    )
