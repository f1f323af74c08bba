"""Which audio is training data, and how many hours it holds, in SQL.

Eligible audio is transcribed, not a duplicate, and has at least one segment
that passes the quality filters. Hours come from the durations recorded at
ingest, never from downloading audio or reading manifests.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pipeline.config import DatasetSettings
from pipeline.db.database import AsyncConn

ELIGIBLE_AUDIO = sql.SQL("""
    a.state = 'transcribed' AND a.duplicate_of IS NULL
    AND a.superseded_by IS NULL AND NOT a.supersede_pending AND EXISTS (
        SELECT 1 FROM segments s WHERE s.transcript_id = t.id
          AND s.text ~ '[^[:space:]]'
          AND s.end_s - s.start_s BETWEEN %(min_seg)s AND %(max_seg)s
          AND (s.no_speech_prob IS NULL OR s.no_speech_prob <= %(max_nsp)s)
          AND (s.avg_logprob IS NULL OR s.avg_logprob >= %(min_lp)s)
          AND (s.compression_ratio IS NULL OR s.compression_ratio <= %(max_cr)s))
""")


def filter_params(rules: DatasetSettings) -> dict[str, Any]:
    return {
        "min_seg": rules.min_segment_s,
        "max_seg": rules.max_segment_s,
        "max_nsp": rules.max_no_speech_prob,
        "min_lp": rules.min_avg_logprob,
        "max_cr": rules.max_compression_ratio,
    }


async def eligible_hours(conn: AsyncConn, rules: DatasetSettings) -> float:
    cur = await conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(a.duration_s), 0) / 3600.0 AS hours"
            " FROM audio a JOIN transcripts t ON t.audio_id = a.id WHERE {}"
        ).format(ELIGIBLE_AUDIO),
        filter_params(rules),
    )
    row = await cur.fetchone()
    assert row is not None
    return float(row["hours"])  # type: ignore[arg-type]


async def hours_at_last_run(conn: AsyncConn, name: str) -> float:
    """Audio hours of the dataset version the latest training run was made on (0 if none)."""
    cur = await conn.execute(
        "SELECT v.audio_hours FROM training_runs r JOIN dataset_versions v ON v.id = r.version_id"
        " WHERE v.name = %s ORDER BY v.version DESC LIMIT 1",
        (name,),
    )
    row = await cur.fetchone()
    return float(row["audio_hours"] or 0.0) if row else 0.0  # type: ignore[arg-type]
