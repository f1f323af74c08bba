"""Every read and write of transcript revisions (schema: migration 0011).

``transcripts`` holds each audio's newest revision; the triggers of migration 0011
copy a revision into ``transcript_revisions`` before it is replaced. Writing a
correction is raising the row's ``revision`` (the trigger archives it as it was),
then replacing its segments, in one transaction. Reads follow the tenant rule of
``pipeline.catalog``: another tenant's audio does not exist for the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.datasets.served import model_label
from pipeline.db.database import AsyncConn
from pipeline.db.segments import SegmentValues, insert_segments

# The fields of a segment, as ``catalog.get_transcript`` answers them.
SEGMENT_FIELDS = (
    "idx",
    "start_s",
    "end_s",
    "text",
    "language",
    "channel",
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
    "words",
)
# The figures behind a verdict, as ``catalog`` reports them.
FIGURES = (
    "language_probability",
    "mean_logprob",
    "compression_ratio",
    "no_speech_ratio",
    "coverage",
    "speech_s",
    "covered_speech_s",
    "detected_language",
    "detected_language_probability",
)
TRANSCRIPT_FIELDS = (
    "id",
    "audio_id",
    "language",
    "language_probability",
    "expected_language",
    "text",
    "model",
    "audio_duration_s",
    "processing_s",
    "real_time_factor",
    "options",
    "verdict",
    "review_reasons",
    "created_at",
    "revision",
    "verified",
    "verified_by",
    "verified_at",
)


@dataclass(frozen=True, slots=True)
class Locked:
    """The audio a correction names and its newest transcript, locked until commit."""

    audio_state: str
    # The audio whose transcript it is (a duplicate's original).
    owner_id: uuid.UUID
    duration_s: float
    transcript: dict[str, Any] | None
    segments: list[dict[str, Any]]


async def lock_newest(conn: AsyncConn, *, tenant: str | None, audio_id: uuid.UUID) -> Locked | None:
    """None when the caller has no such audio; ``transcript`` None when it has none yet."""
    cur = await conn.execute(
        "SELECT a.state, coalesce(a.duplicate_of, a.id) AS owner_id, a.duration_s"
        " FROM audio a WHERE a.id = %(id)s"
        " AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)",
        {"id": audio_id, "tenant": tenant},
    )
    audio = await cur.fetchone()
    if audio is None:
        return None
    owner = uuid.UUID(str(audio["owner_id"]))
    cur = await conn.execute(
        "SELECT id, revision, language, audio_duration_s, verified, verified_by, verified_at"
        " FROM transcripts WHERE audio_id = %s FOR UPDATE",
        (owner,),
    )
    transcript = await cur.fetchone()
    segments: list[dict[str, Any]] = []
    if transcript is not None:
        cur = await conn.execute(
            "SELECT idx, start_s, end_s, text, language, channel, avg_logprob, no_speech_prob,"
            " compression_ratio, words FROM segments WHERE transcript_id = %s ORDER BY idx",
            (transcript["id"],),
        )
        segments = list(await cur.fetchall())
    duration = audio["duration_s"] or (transcript or {}).get("audio_duration_s") or 0.0
    return Locked(str(audio["state"]), owner, float(duration), transcript, segments)  # type: ignore[arg-type]


async def write_correction(
    conn: AsyncConn,
    *,
    transcript_id: int,
    revision: int,
    segments: Sequence[SegmentValues],
    author: str,
    language: str | None = None,
) -> None:
    """Make ``segments`` the transcript's revision ``revision``, verified by ``author``.

    Inside the caller's transaction, on a row it locked with :func:`lock_newest`. A
    person's revision is trusted: the verdict becomes ``ok`` with no review reasons
    (the figures stay the model's, about the model's text). ``language``: the
    transcript's language as the person gives it (None keeps the model's).
    """
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    await conn.execute(
        "UPDATE transcripts SET revision = %(revision)s, verified = true,"
        " verified_by = %(author)s, verified_at = now(), text = %(text)s, verdict = 'ok',"
        " review_reasons = '{}',"
        " language = coalesce(%(language)s, language),"
        # The model's confidence was in its own guess, not in the person's word.
        " language_probability = CASE WHEN %(language)s::text IS NOT NULL"
        "  AND %(language)s::text IS DISTINCT FROM language THEN NULL"
        "  ELSE language_probability END"
        " WHERE id = %(id)s",
        {
            "revision": revision,
            "author": author,
            "text": text,
            "language": language,
            "id": transcript_id,
        },
    )
    await conn.execute("DELETE FROM segments WHERE transcript_id = %s", (transcript_id,))
    await insert_segments(conn, transcript_id, segments)


async def _owner(conn: AsyncConn, tenant: str | None, audio_id: uuid.UUID) -> uuid.UUID | None:
    cur = await conn.execute(
        "SELECT coalesce(a.duplicate_of, a.id) AS owner FROM audio a WHERE a.id = %(id)s"
        " AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)",
        {"id": audio_id, "tenant": tenant},
    )
    row = await cur.fetchone()
    return None if row is None else uuid.UUID(str(row["owner"]))


async def list_revisions(
    conn: AsyncConn, *, tenant: str | None, audio_id: uuid.UUID
) -> list[dict[str, Any]] | None:
    """Every revision of the audio's transcript, newest first; None: no such audio.

    Each: ``revision``, ``current``, ``verified``, ``verified_by``, ``made_at``,
    ``superseded_at`` (null for the current one), ``model``, ``segments`` (a count)
    and ``text``.
    """
    owner = await _owner(conn, tenant, audio_id)
    if owner is None:
        return None
    cur = await conn.execute(
        "SELECT revision, true AS current, verified, verified_by,"
        " coalesce(verified_at, created_at) AS made_at, NULL::timestamptz AS superseded_at,"
        " model, (SELECT count(*) FROM segments s WHERE s.transcript_id = t.id) AS segments,"
        " text FROM transcripts t WHERE audio_id = %(owner)s"
        " UNION ALL"
        " SELECT revision, false, verified, verified_by, made_at, superseded_at,"
        " transcript->>'model', jsonb_array_length(segments), transcript->>'text'"
        " FROM transcript_revisions WHERE audio_id = %(owner)s"
        " ORDER BY revision DESC",
        {"owner": owner},
    )
    rows = [dict(r) for r in await cur.fetchall()]
    for row in rows:
        row["model"] = model_label(str(row["model"]))  # never a server path
    return rows


async def get_archived(
    conn: AsyncConn, *, tenant: str | None, audio_id: uuid.UUID, revision: int
) -> dict[str, Any] | None:
    """An earlier revision as ``catalog.get_transcript`` shapes a transcript; None if the
    caller has no such audio or it has no such earlier revision."""
    owner = await _owner(conn, tenant, audio_id)
    if owner is None:
        return None
    cur = await conn.execute(
        "SELECT transcript, segments FROM transcript_revisions"
        " WHERE audio_id = %s AND revision = %s",
        (owner, revision),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    stored: dict[str, Any] = dict(row["transcript"])  # type: ignore[call-overload]
    doc = {name: stored.get(name) for name in TRANSCRIPT_FIELDS}
    doc["model"] = model_label(str(doc["model"]))
    for stamp in ("created_at", "verified_at"):  # JSON keeps them as text
        value = doc[stamp]
        if isinstance(value, str):
            doc[stamp] = datetime.fromisoformat(value)
    doc["review_reasons"] = doc["review_reasons"] or []
    doc["options"] = doc["options"] or {}
    doc["figures"] = {name: stored.get(name) for name in FIGURES}
    doc["segments"] = [
        {name: s.get(name) for name in SEGMENT_FIELDS}
        for s in row["segments"]  # type: ignore[attr-defined]
    ]
    return doc
