"""A transcript as the files users get: ``.txt``, ``.srt``, ``.vtt``, ``.json``.

The outbox (folder drops) and the output bucket (S3 sources) write the same bytes:
txt, srt and vtt are ``pipeline.formats``' renderings with the ``subtitles`` limits,
json is the document ``GET /v1/audio/{id}/transcript`` answers.

Both also must never let an older version of a source overwrite a newer one's files
(a delivery retried late, a slow runner). ``current_version`` answers, under a lock
held to the end of its block, whether the audio is still its source's latest
transcribed version: the newer version's delivery waits on that lock, so files are
written in version order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from pipeline import catalog
from pipeline.config import OutputFormat, SubtitleSettings
from pipeline.db.database import AsyncConn, Database
from pipeline.deliveries.base import DeliveryFailed
from pipeline.formats import FORMATS, JSON, cues_of

# Deliveries of one handler that may hold a database connection at once (the pool is
# shared with every other role of the process).
DB_SLOTS = 2

MEDIA_TYPES: dict[str, str] = {
    **{name: f.media_type for name, f in FORMATS.items()},
    JSON: "application/json",
}


@dataclass(frozen=True, slots=True)
class SourceAudio:
    """The audio row a delivery is about: where it came from."""

    id: uuid.UUID
    tenant: str
    source: str
    original_name: str
    source_uri: str
    source_bucket: str | None
    source_key: str | None
    state: str = "transcribed"
    duplicate_of: uuid.UUID | None = None


def render_files(
    transcript: dict[str, Any], formats: Iterable[OutputFormat], limits: SubtitleSettings
) -> dict[OutputFormat, bytes]:
    """Each format's file content (UTF-8), from a ``catalog.get_transcript`` document."""
    cues = cues_of(transcript["segments"])
    files: dict[OutputFormat, bytes] = {}
    for fmt in dict.fromkeys(formats):
        if fmt == JSON:
            text = json.dumps(to_jsonable_python(transcript), ensure_ascii=False, indent=2) + "\n"
        else:
            text = FORMATS[fmt].render(cues, limits)
        files[fmt] = text.encode("utf-8")
    return files


@dataclass(frozen=True, slots=True)
class Current:
    """The audio and its transcript, while it is its source's latest transcribed version."""

    audio: SourceAudio
    transcript: dict[str, Any]


@asynccontextmanager
async def current_version(
    db: Database, audio_id: uuid.UUID, *, target: str
) -> AsyncIterator[Current | None]:
    """The audio and its transcript if it is still current, else None (nothing to write).

    Not current: the audio is gone or not transcribed, it was superseded, or a newer
    version of the same source (same ``source_uri``) has been transcribed since. The
    block runs holding a transaction lock on (``target``, source), so deliveries of
    one source's versions to one target never interleave.
    """
    async with db.connection() as conn, conn.transaction():
        audio = await _audio(conn, audio_id)
        if audio is None:
            yield None
            return
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"{target}|{audio.source_uri}",),
        )
        if not await _is_latest(conn, audio_id):
            yield None
            return
        transcript = await catalog.get_transcript(conn, tenant=None, audio_id=audio_id)
        if transcript is None and audio.duplicate_of is not None:
            await _original_still_coming(conn, audio.duplicate_of)
        yield None if transcript is None else Current(audio, transcript)


async def _audio(conn: AsyncConn, audio_id: uuid.UUID) -> SourceAudio | None:
    cur = await conn.execute(
        "SELECT id, tenant, source, original_name, source_uri, source_bucket, source_key,"
        " state, duplicate_of FROM audio WHERE id = %s",
        (audio_id,),
    )
    row = await cur.fetchone()
    return None if row is None else SourceAudio(**row)  # type: ignore[arg-type]


async def _original_still_coming(conn: AsyncConn, original: uuid.UUID) -> None:
    """A duplicate's files wait for its original's transcript (retried, not dropped)."""
    cur = await conn.execute("SELECT state FROM audio WHERE id = %s", (original,))
    row = await cur.fetchone()
    if row is not None and row["state"] in ("queued", "processing"):
        raise DeliveryFailed(f"the same audio ({original}) is not transcribed yet")


async def _is_latest(conn: AsyncConn, audio_id: uuid.UUID) -> bool:
    """Read after taking the lock: sees every version committed before it was granted."""
    cur = await conn.execute(
        "SELECT a.state IN ('transcribed', 'duplicate') AND a.superseded_by IS NULL"
        " AND NOT EXISTS ("
        "  SELECT 1 FROM audio n WHERE n.source_uri = a.source_uri AND n.id <> a.id"
        "   AND n.state IN ('transcribed', 'duplicate') AND n.superseded_by IS NULL"
        "   AND (n.created_at, n.id) > (a.created_at, a.id)) AS latest"
        " FROM audio a WHERE a.id = %s",
        (audio_id,),
    )
    row = await cur.fetchone()
    return bool(row and row["latest"])
