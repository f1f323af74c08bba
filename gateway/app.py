"""The HTTP application, built from the settings object and the open database."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from gateway.events import events_router
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.errors import ConfigError

log = structlog.get_logger(__name__)


def create_app(settings: Settings, db: Database) -> FastAPI:
    app = FastAPI(title="ai2text", version="0.1.0")

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    app.include_router(events_router(settings.webhook, db))
    if settings.webhook.token is None:
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


def make_server(settings: Settings, app: FastAPI) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return EmbeddedServer(config)
