"""The operations endpoint every role process serves when ``metrics.port`` is set.

Plain, unauthenticated HTTP for Prometheus and orchestrator probes (bind it to a
private interface):

- ``GET /metrics``: the Prometheus text exposition of the process's registry;
- ``GET /healthz``: 200 while the event loop runs;
- ``GET /readyz``: 200 once the process's roles have started (a worker's model is
  loaded) and while the database answers ``SELECT 1`` within a short timeout;
  503 with the reason otherwise, and from the moment the process starts stopping.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.db.database import Database
from pipeline.errors import DatabaseError, DatabaseUnavailable
from pipeline.http_serve import serve_asgi, url_of
from pipeline.metrics import Metrics

log = structlog.get_logger(__name__)

# How long /readyz waits for the database before calling the process unready.
READY_DB_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Readiness:
    """The process's own part of readiness: started, and not yet stopping."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def problem(self) -> str | None:
        if self.stopping.is_set():
            return "stopping"
        if not self.started.is_set():
            return "starting"
        return None


async def database_problem(db: Database, timeout_s: float) -> str | None:
    """Why the database does not count as reachable, or None when ``SELECT 1`` answers."""
    try:
        async with asyncio.timeout(timeout_s):
            async with db.connection() as conn:
                await conn.execute("SELECT 1")
    except TimeoutError:
        return f"database did not answer within {timeout_s:g} s"
    except (DatabaseUnavailable, DatabaseError) as exc:
        return f"database unreachable: {type(exc).__name__}"
    return None


def create_ops_app(
    *,
    db: Database,
    metrics: Metrics,
    readiness: Readiness,
    db_timeout_s: float = READY_DB_TIMEOUT_S,
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problem = readiness.problem() or await database_problem(db, db_timeout_s)
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def render_metrics(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", render_metrics, methods=["GET"]),
        ]
    )


class OpsServer:
    """Serves the ops app on an already bound socket from ``start()`` until ``stop()``."""

    def __init__(
        self, sock: socket.socket, *, db: Database, metrics: Metrics, readiness: Readiness
    ) -> None:
        self.sock = sock
        self.app = create_ops_app(db=db, metrics=metrics, readiness=readiness)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return url_of(self.sock)

    def start(self) -> None:
        log.info("metrics listening", url=self.url)
        self._task = asyncio.create_task(serve_asgi(self.app, self.sock, self._stop))

    async def stop(self) -> None:
        """Stop serving (idempotent); returns once the server has shut down."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task
