"""``/v1/audio``: list, show, upload, transcripts; ``/v1/jobs``, ``/v1/stats``, ``/v1/search``."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic_core import to_jsonable_python

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.pagination import BadCursor, decode_cursor, decode_uuid_cursor, page
from gateway.schemas import (
    AudioDetail,
    AudioPage,
    JobPage,
    RetriedJob,
    SearchResults,
    Stats,
    TranscriptWithSegments,
    Uploaded,
    Workers,
    answers,
)
from gateway.security import require
from gateway.uploads import StagingRoute
from pipeline import catalog
from pipeline.choices import UnsupportedLanguage
from pipeline.db import revisions
from pipeline.db.jobs import Priority
from pipeline.formats import FORMATS, JSON, api_formats, cues_of
from pipeline.ingest.core import Arrival, IngestResult

# Uploads spool under the data directory (see gateway.uploads).
router = APIRouter(prefix="/v1", route_class=StagingRoute)

Ctx = Annotated[AppContext, Depends(get_context)]
AudioReader = Annotated[Principal, Depends(require("audio:read"))]
AudioWriter = Annotated[Principal, Depends(require("audio:write"))]
TranscriptReader = Annotated[Principal, Depends(require("transcripts:read"))]
Admin = Annotated[Principal, Depends(require("admin"))]

if TYPE_CHECKING:
    TranscriptFormat = str
else:  # the allowed values come from the one table of formats
    TranscriptFormat = Literal[api_formats()]

# The values of pipeline.db.states (tests/integration/test_states.py holds them equal),
# spelled out so that type checkers see them too.
AudioState = Literal["queued", "processing", "transcribed", "failed", "rejected", "duplicate"]
JobState = Literal["queued", "running", "done", "failed", "dead"]
SourceName = Literal["folder", "s3", "upload"]


def _limit(ctx: AppContext, limit: int) -> int:
    return max(1, min(limit, ctx.settings.gateway.page_size_max))


def _parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "no such audio") from None


@router.get("/audio", responses=answers(AudioPage))
async def list_audio(
    ctx: Ctx,
    principal: AudioReader,
    state: AudioState | None = None,
    source: SourceName | None = None,
    language: Annotated[str | None, Query(max_length=16)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    review: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Audio newest first, filtered; follow ``next_cursor`` for the next page.

    ``review=true`` lists audio whose transcript is in review (not trusted, kept out of
    datasets; ``review_reasons`` say why), ``review=false`` those judged ``ok``; each
    row carries its transcript's ``verdict``, ``review_reasons`` and ``figures``.
    """
    try:
        after = decode_uuid_cursor(cursor) if cursor else None
    except BadCursor:
        raise ApiError(400, "invalid cursor") from None
    size = _limit(ctx, limit)
    async with ctx.db.connection() as conn:
        rows = await catalog.list_audio(
            conn,
            tenant=principal.tenant_filter(),
            filters=catalog.AudioFilter(state, source, language, since, until, review),
            after=after,
            limit=size,
        )
    return page(rows, size)


@router.get("/audio/{audio_id}", responses=answers(AudioDetail))
async def get_audio(ctx: Ctx, principal: AudioReader, audio_id: str) -> dict[str, Any]:
    """Metadata, state, error, duplicate-of, and its transcript's verdict and figures."""
    async with ctx.db.connection() as conn:
        row = await catalog.get_audio(
            conn, tenant=principal.tenant_filter(), audio_id=_parse_id(audio_id)
        )
    if row is None:
        raise ApiError(404, "no such audio")
    return row


@router.post(
    "/audio",
    status_code=201,
    responses={
        201: {"model": Uploaded},
        200: {"model": Uploaded, "description": "the same audio is here already"},
    },
)
async def upload_audio(
    ctx: Ctx,
    principal: AudioWriter,
    file: Annotated[UploadFile, File()],
    language: Annotated[str | None, Form(pattern=r"^[a-z]{2,3}$")] = None,
    channels: Annotated[Literal["mix", "split"] | None, Form()] = None,
    vocabulary: Annotated[list[str] | None, Form(max_length=200)] = None,
    priority: Annotated[Priority, Form()] = "normal",
) -> JSONResponse:
    """Upload a file; it goes through the same validation and dedupe as the hot folder.

    ``language``, ``channels`` and ``vocabulary`` (repeatable) override the tenant's
    defaults; a language the model cannot transcribe is refused (422). ``priority=high``
    queues it ahead of folder and bucket backlog (someone is waiting for it).
    """
    request = {"language": language, "channels": channels, "vocabulary": vocabulary}
    result = await ingest_upload(ctx, principal, file, request, priority=priority)
    body = {"id": str(result.audio_id), "outcome": result.outcome}
    if result.duplicate_of:
        body["duplicate_of"] = str(result.duplicate_of)
    return JSONResponse(body, status_code=201 if result.outcome == "accepted" else 200)


async def ingest_upload(
    ctx: AppContext,
    principal: Principal,
    file: UploadFile,
    options: dict[str, Any] | None = None,
    *,
    priority: Priority = "normal",
) -> IngestResult:
    name = PurePath((file.filename or "upload").replace("\\", "/")).name[:255] or "upload"
    size = file.size if file.size is not None else _size_of(file)
    arrival = Arrival(
        source="upload",
        original_name=name,
        source_uri=f"upload://{principal.subject}/{uuid.uuid4()}",
        source_version=None,
        tenant=principal.tenant or "default",
        priority=priority,
    )
    try:
        # Refused before anything is stored: the request, not the audio, is wrong.
        options = await ctx.ingestor.job_options(arrival, None, options)
    except UnsupportedLanguage as refusal:
        raise ApiError(
            422, refusal.reason, kind="unsupported-language", title="Language not supported"
        ) from refusal
    result = await ctx.ingestor.ingest(arrival, file.file, size, options=options)
    if result.outcome == "rejected":
        raise ApiError(422, result.reason, kind="rejected-audio", title="Audio rejected")
    return result


def _size_of(file: UploadFile) -> int:
    file.file.seek(0, 2)
    size = file.file.tell()
    file.file.seek(0)
    return size


@router.get(
    "/audio/{audio_id}/transcript",
    response_model=None,
    responses=answers(
        TranscriptWithSegments,
        content={
            "text/plain": {"schema": {"type": "string"}},
            "application/x-subrip": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
        },
    ),
)
async def get_transcript(
    ctx: Ctx,
    principal: TranscriptReader,
    audio_id: str,
    format: TranscriptFormat = JSON,  # noqa: A002 - the API's name
    revision: Annotated[int | None, Query(ge=1)] = None,
) -> Response | dict[str, Any]:
    """The transcript as JSON (with segments, verdict, reasons and figures), plain text,
    SRT or WebVTT: its newest revision, or ``revision`` N (see ``.../revisions``).

    ``revision``, ``verified``, ``verified_by`` and ``verified_at`` say whether a person
    corrected it; the ``ETag`` is the revision, for ``If-Match`` on a correction."""
    ident = _parse_id(audio_id)
    tenant = principal.tenant_filter()
    async with ctx.db.connection() as conn:
        transcript = await catalog.get_transcript(conn, tenant=tenant, audio_id=ident)
        if transcript is None:
            audio = await catalog.get_audio(conn, tenant=tenant, audio_id=ident)
        elif revision is not None and revision != transcript["revision"]:
            transcript = await revisions.get_archived(
                conn, tenant=tenant, audio_id=ident, revision=revision
            )
            if transcript is None:
                raise ApiError(404, f"the transcript has no revision {revision}")
    if transcript is None:
        if audio is None:
            raise ApiError(404, "no such audio")
        raise ApiError(
            409,
            f"no transcript yet: the audio is {audio['state']}",
            kind="transcript-not-ready",
            title="Transcript not ready",
        )
    tag = {"ETag": f'"{transcript["revision"]}"'}
    if format == JSON:
        # Times as every other route writes them (pydantic's ISO 8601, "...Z").
        return JSONResponse(to_jsonable_python(transcript), headers=tag)
    cues = cues_of(transcript["segments"])
    rendering = FORMATS[format]
    return PlainTextResponse(
        rendering.render(cues, ctx.settings.subtitles),
        media_type=rendering.media_type,
        headers=tag,
    )


@router.get("/search", responses=answers(SearchResults))
async def search(
    ctx: Ctx,
    principal: TranscriptReader,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: int = 20,
) -> dict[str, Any]:
    """Full-text search over transcript segments, ranked, with highlighted snippets."""
    async with ctx.db.connection() as conn:
        rows = await catalog.search(
            conn, tenant=principal.tenant_filter(), query=q, limit=_limit(ctx, limit)
        )
    return {"items": rows}


@router.get("/jobs", responses=answers(JobPage))
async def list_jobs(
    ctx: Ctx,
    principal: AudioReader,
    state: JobState | None = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Jobs newest first with state, attempts and last error."""
    try:
        after = None
        if cursor:
            stamp, raw_id = decode_cursor(cursor)
            after = (stamp, int(raw_id))
    except (BadCursor, ValueError):
        raise ApiError(400, "invalid cursor") from None
    size = _limit(ctx, limit)
    async with ctx.db.connection() as conn:
        rows = await catalog.list_jobs(
            conn, tenant=principal.tenant_filter(), state=state, after=after, limit=size
        )
    return page(rows, size)


@router.post("/jobs/{job_id}/retry", responses=answers(RetriedJob))
async def retry_job(ctx: Ctx, principal: Admin, job_id: int) -> dict[str, Any]:
    """Put a dead job back in the queue with its attempts reset (admin only)."""
    async with ctx.db.connection() as conn:
        row = await catalog.retry_job(conn, job_id)
    if row is None:
        raise ApiError(
            409,
            "only dead or failed jobs can be retried",
            kind="not-retryable",
            title="Job not retryable",
        )
    return row


@router.get("/workers", responses=answers(Workers))
async def workers(ctx: Ctx, principal: Admin) -> dict[str, Any]:
    """ASR workers: device, model, batch size, current job, GPU memory (admin only)."""
    async with ctx.db.connection() as conn:
        rows = await catalog.list_workers(conn, stale_after_s=ctx.settings.queue.lease_s)
    return {"items": rows}


@router.get("/stats", responses=answers(Stats))
async def stats(ctx: Ctx, principal: AudioReader) -> dict[str, Any]:
    """Counts by state, queue depth, hours transcribed, average real-time factor."""
    async with ctx.db.connection() as conn:
        return await catalog.stats(conn, tenant=principal.tenant_filter())
