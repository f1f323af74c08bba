"""Read-only questions about what the pipeline knows (CLI now, the gateway later)."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.db.database import AsyncConn
from pipeline.errors import Ai2TextError


class NotFound(Ai2TextError):
    """No such audio (or the id prefix is ambiguous)."""


async def recent_audio(conn: AsyncConn, *, limit: int = 50) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT a.id, a.original_name, a.source, a.state, a.duration_s, a.language, a.error,"
        " a.duplicate_of, a.created_at, a.size_bytes, j.attempts, t.real_time_factor"
        " FROM audio a"
        " LEFT JOIN jobs j ON j.audio_id = a.id"
        " LEFT JOIN transcripts t ON t.audio_id = a.id"
        " ORDER BY a.created_at DESC, a.id LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()


async def resolve_audio_id(conn: AsyncConn, ref: str) -> uuid.UUID:
    """Accept a full id or a unique prefix of one (like git)."""
    ref = ref.strip().lower()
    if not ref or any(c not in "0123456789abcdef-" for c in ref):
        raise NotFound(f"not an audio id: {ref!r}")
    cur = await conn.execute(
        "SELECT id FROM audio WHERE id::text LIKE %s ORDER BY id LIMIT 2", (ref + "%",)
    )
    rows = await cur.fetchall()
    if not rows:
        raise NotFound(f"no audio with id {ref}")
    if len(rows) > 1:
        raise NotFound(f"id prefix {ref} is ambiguous; give more characters")
    found: uuid.UUID = rows[0]["id"]  # type: ignore[assignment]
    return found


async def audio_detail(conn: AsyncConn, audio_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT a.*, j.state AS job_state, j.attempts, j.max_attempts, j.last_error"
        " FROM audio a LEFT JOIN jobs j ON j.audio_id = a.id WHERE a.id = %s",
        (audio_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no audio with id {audio_id}")
    return row


async def transcript_of(conn: AsyncConn, audio_id: uuid.UUID) -> dict[str, Any] | None:
    """The transcript and its segments; a duplicate shows its original's transcript."""
    cur = await conn.execute(
        "SELECT t.* FROM transcripts t"
        " WHERE t.audio_id = (SELECT coalesce(duplicate_of, id) FROM audio WHERE id = %s)",
        (audio_id,),
    )
    transcript = await cur.fetchone()
    if transcript is None:
        return None
    cur = await conn.execute(
        "SELECT idx, start_s, end_s, text, avg_logprob, no_speech_prob, compression_ratio, words"
        " FROM segments WHERE transcript_id = %s ORDER BY idx",
        (transcript["id"],),
    )
    transcript["segments"] = await cur.fetchall()
    return transcript


async def pipeline_status(conn: AsyncConn) -> dict[str, Any]:
    cur = await conn.execute("SELECT state, count(*) AS n FROM audio GROUP BY state ORDER BY state")
    audio_by_state = {str(r["state"]): int(r["n"]) for r in await cur.fetchall()}  # type: ignore[call-overload]
    cur = await conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state ORDER BY state")
    jobs_by_state = {str(r["state"]): int(r["n"]) for r in await cur.fetchall()}  # type: ignore[call-overload]
    cur = await conn.execute(
        "SELECT state, count(*) AS n FROM s3_events GROUP BY state ORDER BY state"
    )
    events_by_state = {str(r["state"]): int(r["n"]) for r in await cur.fetchall()}  # type: ignore[call-overload]
    cur = await conn.execute(
        "SELECT coalesce(sum(audio_duration_s), 0) / 3600.0 AS hours,"
        " avg(real_time_factor) AS avg_rtf, count(*) AS transcripts FROM transcripts"
    )
    totals = await cur.fetchone()
    assert totals is not None
    return {
        "audio": audio_by_state,
        "jobs": jobs_by_state,
        "queue_depth": jobs_by_state.get("queued", 0) + jobs_by_state.get("running", 0),
        "s3_events": events_by_state,
        "hours_transcribed": float(totals["hours"]),  # type: ignore[arg-type]
        "transcripts": int(totals["transcripts"]),  # type: ignore[call-overload]
        "average_real_time_factor": (
            float(totals["avg_rtf"]) if totals["avg_rtf"] is not None else None  # type: ignore[arg-type]
        ),
    }
