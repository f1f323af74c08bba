"""What every request handler may use, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from gateway.ratelimit import RateLimiter
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.ingest.core import Ingestor
from pipeline.metrics import Metrics
from pipeline.storage import ObjectStore

if TYPE_CHECKING:
    from gateway.auth import TokenVerifier
    from gateway.waiter import TranscriptWaiter


@dataclass(slots=True)
class AppContext:
    settings: Settings
    db: Database
    store: ObjectStore
    ingestor: Ingestor
    verifier: TokenVerifier
    limiter: RateLimiter
    waiter: TranscriptWaiter
    metrics: Metrics


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx
