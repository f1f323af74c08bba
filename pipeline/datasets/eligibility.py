"""Which audio is training data, and how many hours it holds, in SQL.

Eligible audio is transcribed, not a duplicate, its transcript's verdict is
``ok`` (never ``review``: see ``pipeline.quality``), and it has at least one
segment that passes the quality filters. Hours come from the durations recorded at
ingest, never from downloading audio or reading manifests. Datasets are per
tenant: a tenant's hours count towards its own versions only.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pipeline.config import DatasetSettings
from pipeline.db.database import AsyncConn
from pipeline.db.rows import amounts, one_value

ELIGIBLE_AUDIO = sql.SQL("""
    a.state = 'transcribed' AND a.duplicate_of IS NULL
    AND a.superseded_by IS NULL AND NOT a.supersede_pending
    AND t.verdict = 'ok' AND EXISTS (
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


async def eligible_hours(
    conn: AsyncConn, rules: DatasetSettings, tenant: str | None = None
) -> float:
    """Eligible hours of ``tenant``'s audio, or of every tenant's with ``None``."""
    hours = await one_value(
        conn,
        sql.SQL(
            "SELECT coalesce(sum(a.duration_s), 0) / 3600.0 AS value"
            " FROM audio a JOIN transcripts t ON t.audio_id = a.id WHERE {}"
            " AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
        ).format(ELIGIBLE_AUDIO),
        {**filter_params(rules), "tenant": tenant},
    )
    return float(hours)


async def eligible_hours_by_tenant(conn: AsyncConn, rules: DatasetSettings) -> dict[str, float]:
    """Eligible hours per tenant (tenants without eligible audio are absent)."""
    return await amounts(
        conn,
        sql.SQL(
            "SELECT a.tenant AS key, sum(a.duration_s) / 3600.0 AS value"
            " FROM audio a JOIN transcripts t ON t.audio_id = a.id WHERE {} GROUP BY a.tenant"
        ).format(ELIGIBLE_AUDIO),
        filter_params(rules),
    )


async def hours_at_last_run_by_tenant(conn: AsyncConn, name: str) -> dict[str, float]:
    """Per tenant, the audio hours of the version its latest training run was made on.

    Tenants whose dataset ``name`` never had a run are absent (0 hours).
    """
    return await amounts(
        conn,
        "SELECT DISTINCT ON (v.tenant) v.tenant AS key, v.audio_hours AS value"
        " FROM training_runs r JOIN dataset_versions v ON v.id = r.version_id WHERE v.name = %s"
        " ORDER BY v.tenant, v.version DESC",
        (name,),
    )
