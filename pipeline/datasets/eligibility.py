"""Which audio is training data, and how many hours it holds, in SQL.

Eligible audio is transcribed, not a duplicate, and its transcript is one the
``dataset.labels`` setting admits, with at least one segment that passes the
filters. A transcript a person verified (a correction, see ``pipeline.corrections``)
is trusted: only its segments' text and length are checked. A pseudo-label (the
model's own transcript) must have the verdict ``ok`` (never ``review``: see
``pipeline.quality``) and its segments must pass the quality filters too; it is
admitted with ``labels = "all"``, and with ``"auto"`` (the default) only while the
tenant has no verified transcript of eligible audio at all. Hours come from the
durations recorded at ingest, never from downloading audio or reading manifests.
Datasets are per tenant: a tenant's hours count towards its own versions only.

Datasets are also per language (:mod:`pipeline.datasets.languages`). A segment's
language is its own, else its transcript's (rows from before languages per
segment), else ``und``. A file's hours go to the languages of its passing
segments in proportion to their length: a file in one language gives all its
hours to it, a file half English and half German half to each. So the hours of
every language together are the eligible hours, and a frozen version's
``audio_hours`` are the hours of its languages, counted the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from pipeline.config import DatasetSettings
from pipeline.datasets.languages import Languages, dataset_hours, datasets_for
from pipeline.db.database import AsyncConn
from pipeline.db.rows import amounts, one_value

# The audio may be training data, whatever its transcript (alias a).
USABLE_AUDIO = sql.SQL("""
    a.state = 'transcribed' AND a.duplicate_of IS NULL
    AND a.superseded_by IS NULL AND NOT a.supersede_pending
""")

# Tenants with at least one verified transcript of usable audio: under ``auto`` their
# datasets are made of verified transcripts only. Uncorrelated, so computed once.
TENANTS_WITH_VERIFIED = sql.SQL(
    "SELECT a.tenant FROM audio a JOIN transcripts t ON t.audio_id = a.id WHERE t.verified AND {}"
).format(USABLE_AUDIO)

# The transcript's labels are admitted by %(labels)s (auto, verified, all) (aliases a, t).
ADMITTED_LABELS = sql.SQL("""
    (t.verified OR (t.verdict = 'ok' AND (%(labels)s = 'all'
        OR (%(labels)s = 'auto' AND a.tenant NOT IN ({tenants_with_verified})))))
""").format(tenants_with_verified=TENANTS_WITH_VERIFIED)

# The audio and its transcript may be training data (aliases a, t).
USABLE_TRANSCRIPT = sql.SQL("{} AND {}").format(USABLE_AUDIO, ADMITTED_LABELS)

# One segment passes the filters (aliases s, t); a verified one is not judged by the
# model's scores (they were the model's, about its own text).
PASSING_SEGMENT = sql.SQL("""
    s.text ~ '[^[:space:]]'
    AND s.end_s - s.start_s BETWEEN %(min_seg)s AND %(max_seg)s
    AND (t.verified OR (
        (s.no_speech_prob IS NULL OR s.no_speech_prob <= %(max_nsp)s)
        AND (s.avg_logprob IS NULL OR s.avg_logprob >= %(min_lp)s)
        AND (s.compression_ratio IS NULL OR s.compression_ratio <= %(max_cr)s)))
""")

ELIGIBLE_AUDIO = sql.SQL(
    "{} AND EXISTS (SELECT 1 FROM segments s WHERE s.transcript_id = t.id AND {})"
).format(USABLE_TRANSCRIPT, PASSING_SEGMENT)

# The language a segment's utterances are filed under (aliases s, t).
SEGMENT_LANGUAGE = sql.SQL("coalesce(s.language, t.language, 'und')")

# Per eligible audio of %(tenant)s (NULL: every tenant) and language: ``seconds``, the
# audio's duration times that language's share of its passing segments' length (by
# count where they all last 0 s).
LANGUAGE_SHARES = sql.SQL("""
    SELECT id, tenant, language, duration_s * coalesce(
               seconds / nullif(sum(seconds) OVER per_audio, 0),
               segments::float8 / sum(segments) OVER per_audio) AS seconds
      FROM (SELECT a.id, a.tenant, a.duration_s, {language} AS language,
                   sum(s.end_s - s.start_s) AS seconds, count(*) AS segments
              FROM audio a JOIN transcripts t ON t.audio_id = a.id
              JOIN segments s ON s.transcript_id = t.id
             WHERE {usable} AND {passing}
               AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)
             GROUP BY a.id, a.tenant, a.duration_s, 4) AS per_language
    WINDOW per_audio AS (PARTITION BY id)
""").format(language=SEGMENT_LANGUAGE, usable=USABLE_TRANSCRIPT, passing=PASSING_SEGMENT)


def filter_params(rules: DatasetSettings) -> dict[str, Any]:
    return {
        "min_seg": rules.min_segment_s,
        "max_seg": rules.max_segment_s,
        "max_nsp": rules.max_no_speech_prob,
        "min_lp": rules.min_avg_logprob,
        "max_cr": rules.max_compression_ratio,
        "labels": rules.labels,
    }


async def admits_pseudo_labels(conn: AsyncConn, rules: DatasetSettings, tenant: str) -> bool:
    """Whether ``tenant``'s datasets take the model's own transcripts (``dataset.labels``)."""
    if rules.labels != "auto":
        return rules.labels == "all"
    has_verified = await one_value(
        conn,
        sql.SQL("SELECT EXISTS ({} AND a.tenant = %(tenant)s) AS value").format(
            TENANTS_WITH_VERIFIED
        ),
        {"tenant": tenant},
    )
    return not has_verified


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


@dataclass(frozen=True, slots=True)
class _TenantLanguageHours:
    tenant: str
    language: str
    hours: float | None


async def eligible_hours_by_language(
    conn: AsyncConn, rules: DatasetSettings, tenant: str | None = None
) -> dict[str, dict[str, float]]:
    """Eligible hours per tenant and language (of ``tenant`` only, unless ``None``)."""
    query = sql.SQL(
        "SELECT tenant, language, sum(seconds) / 3600.0 AS hours FROM ({}) AS shares"
        " GROUP BY tenant, language ORDER BY tenant, language"
    ).format(LANGUAGE_SHARES)
    by_tenant: dict[str, dict[str, float]] = defaultdict(dict)
    async with conn.cursor(row_factory=class_row(_TenantLanguageHours)) as cur:
        await cur.execute(query, {**filter_params(rules), "tenant": tenant})
        for row in await cur.fetchall():
            by_tenant[row.tenant][row.language] = float(row.hours or 0.0)
    return dict(by_tenant)


@dataclass(frozen=True, slots=True)
class _RunVersion:
    id: int
    version: int
    languages: list[str] | None
    audio_hours: float | None


async def hours_at_last_run(
    conn: AsyncConn,
    rules: DatasetSettings,
    *,
    tenant: str,
    datasets: list[Languages],
) -> dict[Languages, float]:
    """Per dataset of ``tenant``, the hours of the version its latest run was made on.

    A dataset that never had a run has 0. A version frozen before datasets were per
    language (``languages`` NULL) held every language: it counts as each dataset's
    last run, if no later one of that dataset's own, with the hours it held of that
    dataset's languages.
    """
    async with conn.cursor(row_factory=class_row(_RunVersion)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (v.languages) v.id, v.version, v.languages, v.audio_hours"
            " FROM training_runs r JOIN dataset_versions v ON v.id = r.version_id"
            " WHERE v.name = %s AND v.tenant = %s ORDER BY v.languages, v.version DESC",
            (rules.name, tenant),
        )
        runs = await cur.fetchall()
    own = {tuple(r.languages): r for r in runs if r.languages is not None}
    legacy = next((r for r in runs if r.languages is None), None)
    held: dict[str, float] | None = None
    result: dict[Languages, float] = {}
    for languages in datasets:
        mine = own.get(languages)
        if legacy is not None and (mine is None or legacy.version > mine.version):
            if held is None:
                held = await _hours_held_by_language(conn, rules, tenant, legacy.id)
            result[languages] = sum(held.get(code, 0.0) for code in languages)
        else:
            result[languages] = float(mine.audio_hours or 0.0) if mine is not None else 0.0
    return result


async def _hours_held_by_language(
    conn: AsyncConn, rules: DatasetSettings, tenant: str, version_id: int
) -> dict[str, float]:
    """The hours per language of a version's audio (that is still eligible)."""
    return await amounts(
        conn,
        sql.SQL(
            "SELECT shares.language AS key, sum(shares.seconds) / 3600.0 AS value"
            " FROM ({}) AS shares JOIN dataset_items i ON i.audio_id = shares.id"
            " WHERE i.version_id = %(version_id)s GROUP BY shares.language"
        ).format(LANGUAGE_SHARES),
        {**filter_params(rules), "tenant": tenant, "version_id": version_id},
    )


@dataclass(frozen=True, slots=True)
class DatasetStanding:
    """Where one tenant's dataset of some languages stands against the threshold."""

    tenant: str
    languages: Languages
    eligible_hours: float
    hours_at_last_run: float


async def dataset_standings(
    conn: AsyncConn, rules: DatasetSettings, tenant: str | None = None
) -> list[DatasetStanding]:
    """Every dataset with eligible hours (of ``tenant``, or of all), by tenant then languages.

    Configured datasets without eligible hours are left out: there is nothing to freeze.
    """
    standings: list[DatasetStanding] = []
    by_tenant = await eligible_hours_by_language(conn, rules, tenant)
    for name, by_language in sorted(by_tenant.items()):
        datasets = datasets_for(rules.language_groups, by_language)
        totals = {k: h for k, h in dataset_hours(datasets, by_language).items() if h > 0}
        before = await hours_at_last_run(conn, rules, tenant=name, datasets=list(totals))
        standings.extend(
            DatasetStanding(name, languages, hours, before[languages])
            for languages, hours in totals.items()
        )
    return standings
