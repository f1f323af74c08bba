"""``POST /v1/events/s3``: MinIO webhook and AWS S3 notifications, recorded durably.

The sender gets 2xx only after the events are committed to PostgreSQL, so a
failed write makes it retry (503). A body that is not a well-formed notification
gets 400 and one naming a bucket no ``s3_sources`` entry watches gets 422; both
store nothing, and a sender must not retry them. Authentication is a configured
bearer token compared in constant time (MinIO sends its ``auth_token`` as
``Bearer …``).
"""

from __future__ import annotations

import secrets
from collections.abc import Set

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.problems import problem
from gateway.schemas import RecordedEvents, answers
from pipeline.config import WebhookSettings
from pipeline.db.database import Database
from pipeline.errors import DatabaseError, DatabaseUnavailable, ValueRefused
from pipeline.sources import inbox
from pipeline.sources.events import MalformedEvent, parse_notification

log = structlog.get_logger(__name__)


class _TooLarge(Exception):
    pass


def events_router(settings: WebhookSettings, db: Database, buckets: Set[str]) -> APIRouter:
    """The receiver; ``buckets`` are the watched ones (see ``registry.watched_buckets``)."""
    router = APIRouter()

    @router.post(
        "/v1/events/s3", status_code=200, response_model=None, responses=answers(RecordedEvents)
    )
    async def receive_s3_events(request: Request) -> Response:
        if not _authorised(request, settings):
            return problem(
                401,
                "unauthorized",
                "Missing or wrong bearer token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        try:
            body = await _read_limited(request, settings.max_body_bytes)
        except _TooLarge:
            return problem(
                413,
                "body-too-large",
                "Request body too large",
                f"the limit is {settings.max_body_bytes} bytes",
            )
        try:
            parsed = parse_notification(body)
        except MalformedEvent as exc:
            log.warning("malformed S3 event rejected", reason=exc.reason)
            return problem(400, "malformed-event", "Malformed S3 event", exc.reason)
        unwatched = sorted({e.bucket for e in parsed} - buckets)
        if unwatched:
            log.warning("S3 events for unwatched buckets refused", buckets=unwatched[:5])
            return problem(
                422,
                "unwatched-bucket",
                "Bucket not watched",
                f"no s3_sources entry watches bucket {unwatched[0]!r}",
            )
        events = [e for e in parsed if e.is_created]
        try:
            async with db.connection() as conn:
                recorded = await inbox.record_events(conn, events, "webhook")
        except ValueRefused as exc:
            # A value the parser let through but the database refuses: still the sender's.
            log.warning("S3 event refused by the database", error=str(exc))
            return problem(400, "malformed-event", "Malformed S3 event", "a value is out of range")
        except (DatabaseUnavailable, DatabaseError) as exc:
            log.error("could not record S3 events; the sender will retry", error=str(exc))
            return problem(503, "unavailable", "Events could not be recorded; retry later")
        return JSONResponse({"recorded": recorded})

    return router


def _authorised(request: Request, settings: WebhookSettings) -> bool:
    if settings.token is None:
        return False  # no token configured: the receiver accepts nothing
    header = request.headers.get("authorization", "").strip()
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential:
        offered = credential.strip()
    else:
        # Recent MinIO releases send auth_token exactly as configured, without a scheme.
        offered = header
    if not offered:
        return False
    return secrets.compare_digest(offered.encode(), settings.token.get_secret_value().encode())


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
