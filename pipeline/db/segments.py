"""Writing a transcript's segments: the one INSERT the worker and corrections share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from pipeline.db.database import AsyncConn


@dataclass(frozen=True, slots=True)
class SegmentValues:
    """A segment to write, in the ``segments`` table's terms."""

    start_s: float
    end_s: float
    text: str
    language: str | None
    channel: int | None
    avg_logprob: float | None
    no_speech_prob: float | None
    compression_ratio: float | None
    words: Any


async def insert_segments(
    conn: AsyncConn, transcript_id: int, segments: Sequence[SegmentValues]
) -> None:
    """Insert ``segments`` as the transcript's rows, numbered from 0 in order."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO segments (transcript_id, idx, start_s, end_s, text, avg_logprob,"
            " no_speech_prob, compression_ratio, words, language, channel)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    transcript_id,
                    i,
                    s.start_s,
                    s.end_s,
                    s.text,
                    s.avg_logprob,
                    s.no_speech_prob,
                    s.compression_ratio,
                    Jsonb(s.words) if s.words is not None else None,
                    s.language,
                    s.channel,
                )
                for i, s in enumerate(segments)
            ],
        )
