"""Segments of running transcriptions (``job_partial_segments``, migration 0014).

The worker adds a job's new segments with its progress, fenced by its lease; readers
(the event stream, the OpenAI stream, ``show --follow``) read those after the last they
saw, woken by the progress notice sent in the same transaction and by
``SEGMENTS_CHANNEL`` (payload: the audio id). A job's rows go when its claim ends (a
trigger); rows of a new claim come after, with another ``claim`` value, and start the
text again: a reader that sees the claim change drops what it had.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.rows import class_row

from pipeline.db.database import AsyncConn

SEGMENTS_CHANNEL = "ai2text_segments"


@dataclass(frozen=True, slots=True)
class PartialSegment:
    id: int  # the reader's cursor
    claim: uuid.UUID  # which claim of the job made it
    seq: int  # its number within the claim
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True, slots=True)
class NewSegment:
    """A segment the worker has just produced (its number within the attempt)."""

    seq: int
    start_s: float
    end_s: float
    text: str


# A data-modifying WITH runs whether or not the query reads it; a row comes back (and
# the notice goes out at commit) only while the lease is held.
_ADD = """
WITH held AS (
    SELECT id, lease_token, audio_id FROM jobs
    WHERE id = %(job_id)s AND lease_token = %(token)s AND state = 'running'
), added AS (
    INSERT INTO job_partial_segments (job_id, lease_token, seq, audio_id, start_s, end_s, text)
    SELECT held.id, held.lease_token, s.seq, held.audio_id, s.start_s, s.end_s, s.text
    FROM held, unnest(%(seqs)s::int[], %(starts)s::float8[], %(ends)s::float8[],
                      %(texts)s::text[]) AS s(seq, start_s, end_s, text)
    ON CONFLICT DO NOTHING
)
SELECT pg_notify(%(channel)s, held.audio_id::text) FROM held
"""


async def add_segments(
    conn: AsyncConn, job_id: int, lease_token: uuid.UUID, segments: Sequence[NewSegment]
) -> bool:
    """Add ``segments`` of the job's current claim; False if the lease is not held."""
    if not segments:
        return True
    cur = await conn.execute(
        _ADD,
        {
            "job_id": job_id,
            "token": lease_token,
            "seqs": [s.seq for s in segments],
            "starts": [s.start_s for s in segments],
            "ends": [s.end_s for s in segments],
            "texts": [s.text for s in segments],
            "channel": SEGMENTS_CHANNEL,
        },
    )
    return await cur.fetchone() is not None


async def segments_after(
    conn: AsyncConn, audio_id: uuid.UUID, after: int = 0
) -> list[PartialSegment]:
    """The audio's running segments with ids above ``after``, in order."""
    async with conn.cursor(row_factory=class_row(PartialSegment)) as cur:
        await cur.execute(
            "SELECT id, lease_token AS claim, seq, start_s, end_s, text"
            " FROM job_partial_segments WHERE audio_id = %s AND id > %s ORDER BY id",
            (audio_id, after),
        )
        return await cur.fetchall()


@dataclass(slots=True)
class Follower:
    """One reader's place in one audio's running segments."""

    after: int = 0
    claim: uuid.UUID | None = None

    def take(self, segments: Sequence[PartialSegment]) -> tuple[bool, list[PartialSegment]]:
        """(whether the text started again, the segments to show) of a read."""
        restarted = False
        for segment in segments:
            if self.claim is not None and segment.claim != self.claim:
                restarted = True
            self.claim = segment.claim
        if segments:
            self.after = segments[-1].id
        if restarted:  # only the latest claim's text counts
            latest = segments[-1].claim
            return True, [s for s in segments if s.claim == latest]
        return False, list(segments)
