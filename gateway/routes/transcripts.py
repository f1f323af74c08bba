"""``PUT /v1/audio/{id}/transcript`` (corrections) and ``GET .../transcript/revisions``.

A correction makes a new revision of the transcript, verified by the token's
subject; earlier revisions are kept (``GET /v1/audio/{id}/transcript?revision=N``).
The transcript's ``ETag`` is its revision (``"3"``): sending it back as ``If-Match``
(or the JSON's ``revision``/``base_revision``) makes a correction of a revision
someone else has corrected since a 409, never a silent overwrite.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.security import require
from pipeline.corrections import (
    CorrectionRefused,
    RevisionConflict,
    TranscriptMissing,
    apply_correction,
    parse_body,
    with_language,
)
from pipeline.corrections.errors import UnsupportedFormat
from pipeline.corrections.parse import kind_of_media_type, request_body_schema
from pipeline.db import revisions

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
TranscriptReader = Annotated[Principal, Depends(require("transcripts:read"))]
TranscriptWriter = Annotated[Principal, Depends(require("transcripts:write"))]

_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


def etag(revision: int) -> str:
    """The ``ETag`` of a transcript revision."""
    return f'"{revision}"'


class TranscriptSegment(BaseModel):
    model_config = ConfigDict(extra="allow")

    idx: int
    start_s: float
    end_s: float
    text: str
    language: str | None = None
    channel: int | None = None


class Transcript(BaseModel):
    """A transcript revision, as ``GET /v1/audio/{id}/transcript`` answers it."""

    model_config = ConfigDict(extra="allow")

    audio_id: uuid.UUID
    revision: int
    verified: bool
    verified_by: str | None
    verified_at: datetime | None
    language: str | None
    text: str
    segments: list[TranscriptSegment]


class Revision(BaseModel):
    revision: int
    current: bool
    verified: bool
    verified_by: str | None
    made_at: datetime
    superseded_at: datetime | None
    model: str
    segments: int
    text: str


class Revisions(BaseModel):
    items: list[Revision]


def _parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "no such audio") from None


def _if_match(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "*":
        return None
    match = _ETAG.match(raw.strip())
    if match is None:
        raise ApiError(
            422,
            f'If-Match must be a transcript revision\'s ETag, like "3" (got {raw[:40]!r})',
            kind="bad-correction",
            title="Correction not acceptable",
        )
    return int(match[1])


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is longer than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"a correction may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"a correction may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.put(
    "/audio/{audio_id}/transcript",
    response_model=Transcript,
    responses={
        404: {"description": "no such audio (or another tenant's)"},
        409: {"description": "no transcript yet, or the revision edited is not the newest"},
        413: {"description": "the correction is too large"},
        415: {"description": "a Content-Type other than JSON, text, SRT or WebVTT"},
        422: {"description": "the correction cannot be used; the detail says why"},
    },
    openapi_extra={"requestBody": request_body_schema()},
)
async def correct_transcript(
    ctx: Ctx,
    principal: TranscriptWriter,
    request: Request,
    audio_id: str,
    if_match: Annotated[str | None, Header(max_length=100)] = None,
    base_revision: Annotated[int | None, Query(ge=1)] = None,
    language: Annotated[
        str | None,
        Query(
            max_length=20,
            description="what is spoken, where the model got it wrong (ISO 639-1, e.g. 'en'):"
            " the transcript and every segment that names no language of its own",
        ),
    ] = None,
) -> JSONResponse:
    """Correct the transcript: the body's segments become a new revision, verified by you.

    JSON (``application/json``, see the schema; the document ``GET`` answers can be
    sent back with edited texts), plain text (``text/plain``: one line per segment,
    as the txt export), SRT (``application/x-subrip``) or WebVTT (``text/vtt``).
    ``If-Match`` (the ETag of the revision edited), the JSON's ``base_revision`` or
    ``revision``, or ``?base_revision=`` turn a correction of an outdated revision
    into a 409. ``?language=`` (or the JSON's ``language``) corrects the language
    too: a corrected transcript is training data, filed under its language. Answers
    the new revision, with its ``ETag``.
    """
    ident = _parse_id(audio_id)
    expected = _if_match(if_match)
    body = await _body(request, ctx.settings.corrections.max_body_bytes)
    try:
        kind = kind_of_media_type(request.headers.get("content-type"), body)
        proposal = with_language(parse_body(body, kind), language)
        async with ctx.db.connection() as conn:
            applied = await apply_correction(
                conn,
                tenant=principal.tenant_filter(),
                audio_id=ident,
                proposal=proposal,
                author=principal.subject,
                limits=ctx.settings.corrections,
                if_match=expected if expected is not None else base_revision,
            )
    except UnsupportedFormat as exc:
        raise ApiError(415, exc.reason) from None
    except CorrectionRefused as exc:
        raise ApiError(
            422, exc.reason, kind="bad-correction", title="Correction not acceptable"
        ) from None
    except RevisionConflict as exc:
        raise ApiError(
            409,
            exc.reason,
            kind="revision-conflict",
            title="Transcript changed meanwhile",
            headers={"ETag": etag(exc.current)},
        ) from None
    except TranscriptMissing as exc:
        raise ApiError(
            409, str(exc), kind="transcript-not-ready", title="Transcript not ready"
        ) from None
    if applied is None:
        raise ApiError(404, "no such audio")
    return JSONResponse(
        to_jsonable_python(applied.transcript), headers={"ETag": etag(applied.revision)}
    )


@router.get("/audio/{audio_id}/transcript/revisions", response_model=Revisions)
async def list_revisions(ctx: Ctx, principal: TranscriptReader, audio_id: str) -> dict[str, Any]:
    """Every revision of the transcript, newest first: who made it (the model, or the
    person who verified it) and when; read one with ``GET .../transcript?revision=N``."""
    async with ctx.db.connection() as conn:
        rows = await revisions.list_revisions(
            conn, tenant=principal.tenant_filter(), audio_id=_parse_id(audio_id)
        )
    if rows is None:
        raise ApiError(404, "no such audio")
    return {"items": rows}
