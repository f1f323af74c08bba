"""``GET /v1/audio/{id}/content``: the stored audio itself, with HTTP Range support.

What a browser's ``<audio>`` element needs to play and seek: ``Accept-Ranges: bytes``,
206 answers to a single ``Range`` (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), 416
with ``Content-Range: bytes */size`` for a range past the end, and the audio's own
content type. Bytes stream from the object store in its chunks (a ranged read), never
whole into memory. Tenant rules are those of ``GET /v1/audio/{id}``: another tenant's
audio does not exist for the caller. A duplicate plays its original's bytes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header
from fastapi.responses import Response, StreamingResponse

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.security import require
from pipeline.db.database import AsyncConn

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
AudioReader = Annotated[Principal, Depends(require("audio:read"))]

# By the stored object's extension (the content-addressed key keeps the file's).
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
    "aac": "audio/aac",
    "webm": "audio/webm",
    "aiff": "audio/aiff",
    "aif": "audio/aiff",
}
FALLBACK_MEDIA_TYPE = "application/octet-stream"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class UnsatisfiableRange(ValueError):
    """The range starts past the end of the object."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as Content-Range writes it

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of a ``Range`` header, clipped to ``size``; ``None``: send it all.

    Headers this server does not honour (several ranges, other units, malformed) mean
    the whole object, as RFC 9110 allows; a range that starts past the end raises
    :class:`UnsatisfiableRange`.
    """
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRange(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored, like any malformed range
    if start >= size:
        raise UnsatisfiableRange(header)
    return ByteRange(start, min(end, size - 1))


def media_type_of(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return MEDIA_TYPES.get(ext, FALLBACK_MEDIA_TYPE)


@router.get(
    "/audio/{audio_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole audio", "content": {"audio/*": {}}},
        206: {"description": "The requested byte range", "content": {"audio/*": {}}},
        416: {"description": "The range starts past the end of the audio"},
    },
)
async def get_audio_content(
    ctx: Ctx,
    principal: AudioReader,
    audio_id: str,
    range_header: Annotated[str | None, Header(alias="range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """The stored audio bytes, whole or one ``Range``; for players and downloads."""
    try:
        ident = uuid.UUID(audio_id)
    except ValueError:
        raise ApiError(404, "no such audio") from None
    async with ctx.db.connection() as conn:
        row = await _stored_object(conn, ident, principal.tenant_filter())
    if row is None:
        raise ApiError(404, "no such audio")
    key = row["storage_key"]
    if key is None:
        raise ApiError(
            409,
            f"the audio is {row['state']} and its bytes are not in the object store",
            kind="audio-not-stored",
            title="Audio not stored",
        )
    info = await asyncio.to_thread(ctx.store.stat, key)
    if info is None:
        raise ApiError(404, "the audio's bytes are gone from the object store")
    etag = f'"{row["sha256"]}"' if row["sha256"] else None
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "Content-Disposition": _disposition(row["original_name"]),
    }
    if etag is not None:
        headers["ETag"] = etag
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is another version: send it all
    try:
        wanted = parse_range(range_header, info.size)
    except UnsatisfiableRange:
        raise ApiError(
            416,
            f"the audio has {info.size} bytes",
            kind="range-not-satisfiable",
            title="Range not satisfiable",
            headers={"Content-Range": f"bytes */{info.size}"},
        ) from None
    media_type = media_type_of(key)
    if wanted is None:
        headers["Content-Length"] = str(info.size)
        return StreamingResponse(
            ctx.store.read_range(key, 0, info.size), media_type=media_type, headers=headers
        )
    headers["Content-Length"] = str(wanted.length)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{info.size}"
    return StreamingResponse(
        ctx.store.read_range(key, wanted.start, wanted.length),
        status_code=206,
        media_type=media_type,
        headers=headers,
    )


def _disposition(name: str) -> str:
    """``inline`` with the original file name (RFC 5987, any characters safe)."""
    return f"inline; filename*=UTF-8''{quote(name, safe='')}"


async def _stored_object(
    conn: AsyncConn, audio_id: uuid.UUID, tenant: str | None
) -> dict[str, Any] | None:
    """Where the caller's audio is stored: its own object, or its original's."""
    cur = await conn.execute(
        "SELECT a.state, a.original_name, coalesce(o.storage_key, a.storage_key) AS storage_key,"
        " coalesce(o.sha256, a.sha256) AS sha256"
        " FROM audio a LEFT JOIN audio o ON o.id = a.duplicate_of"
        " WHERE a.id = %(id)s AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)",
        {"id": audio_id, "tenant": tenant},
    )
    row: dict[str, Any] | None = await cur.fetchone()
    return row
