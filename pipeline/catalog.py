"""Tenant-aware questions about audio, transcripts, search, jobs and stats.

Asked by the HTTP API (per caller) and by the CLI (``tenant=None``).

Every query takes ``tenant``: a tenant name limits rows to that tenant, ``None``
(an admin) sees all. Rows of another tenant simply do not exist for the caller.
All SQL is parameterised; user text reaches PostgreSQL only as parameters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from pipeline.datasets.served import model_label
from pipeline.db import jobs as job_store
from pipeline.db.database import AsyncConn
from pipeline.db.rows import counts
from pipeline.errors import Ai2TextError
from pipeline.progress import eta_s, fraction

# Every query limits rows with: (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)

# Errors of jobs whose worker died name that worker, as job_store.reap_exhausted writes them.
_DEAD_WORKER = re.compile(r"worker \S+ stopped responding")


def _for_caller(rows: list[dict[str, Any]], tenant: str | None) -> list[dict[str, Any]]:
    """Rows as a tenant may read them: no worker ids (host name and pid), in fields or errors.

    Which machines serve the service is for operators (``tenant`` None) only.
    """
    if tenant is None:
        return rows
    for row in rows:
        if "worker_id" in row:
            row["worker_id"] = None
        for column in ("error", "last_error"):
            if isinstance(row.get(column), str):
                row[column] = _DEAD_WORKER.sub("a worker stopped responding", row[column])
    return rows


# The figures behind a transcript's verdict (alias t; NULL without a transcript).
_FIGURES = sql.SQL(
    "CASE WHEN t.id IS NULL THEN NULL ELSE jsonb_build_object("
    "'language_probability', t.language_probability, 'mean_logprob', t.mean_logprob,"
    " 'compression_ratio', t.compression_ratio, 'no_speech_ratio', t.no_speech_ratio,"
    " 'coverage', t.coverage, 'speech_s', t.speech_s, 'covered_speech_s', t.covered_speech_s,"
    " 'detected_language', t.detected_language,"
    " 'detected_language_probability', t.detected_language_probability)"
    " END AS figures"
)
# How far the running attempt has got (aliases a, j): progress written since it started.
_RUNNING = "a.state = 'processing' AND j.state = 'running' AND j.progress_at >= j.started_at"
_PROGRESS = sql.SQL(
    "CASE WHEN {running} THEN j.progress_s END AS progress_s,"
    " CASE WHEN {running} THEN extract(epoch FROM j.progress_at - j.started_at)::float8"
    " END AS progress_elapsed_s,"
    " CASE WHEN {running} THEN extract(epoch FROM now() - j.progress_at)::float8"
    " END AS progress_age_s"
).format(running=sql.SQL(_RUNNING))
# An audio row's transcript: a duplicate shares its original's.
_ITS_TRANSCRIPT = sql.SQL("LEFT JOIN transcripts t ON t.audio_id = coalesce(a.duplicate_of, a.id)")


class NotFound(Ai2TextError):
    """No such audio (or the id prefix is ambiguous)."""


class AmbiguousId(NotFound):
    """An id prefix that more than one audio id starts with."""


@dataclass(frozen=True, slots=True)
class AudioFilter:
    # One state, or any of several (``ai2text ls --state failed,queued``).
    state: str | tuple[str, ...] | None = None
    source: str | None = None
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # True: only audio whose transcript is in review; False: only those judged ok.
    review: bool | None = None


async def list_audio(
    conn: AsyncConn,
    *,
    tenant: str | None,
    filters: AudioFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT a.id, a.tenant, a.source, a.original_name, a.state, a.error, a.duration_s,"
        " a.language, a.size_bytes, a.duplicate_of, a.superseded_by, a.created_at, a.updated_at,"
        " j.attempts, t.verdict, t.review_reasons, {figures}, {progress}"
        " FROM audio a LEFT JOIN jobs j ON j.audio_id = a.id {transcript}"
        " WHERE (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
        " AND (%(states)s::text[] IS NULL OR a.state = ANY(%(states)s))"
        " AND (%(source)s::text IS NULL OR a.source = %(source)s)"
        " AND (%(language)s::text IS NULL OR a.language = %(language)s)"
        " AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR a.created_at < %(until)s)"
        " AND (%(review)s::boolean IS NULL OR (t.verdict = 'review') = %(review)s)"
        " AND (%(after_ts)s::timestamptz IS NULL"
        "      OR (a.created_at, a.id) < (%(after_ts)s, %(after_id)s))"
        " ORDER BY a.created_at DESC, a.id DESC LIMIT %(limit)s"
    ).format(figures=_FIGURES, transcript=_ITS_TRANSCRIPT, progress=_PROGRESS)
    cur = await conn.execute(
        query,
        {
            "tenant": tenant,
            "states": _states(filters.state),
            "source": filters.source,
            "language": filters.language,
            "since": filters.since,
            "until": filters.until,
            "review": filters.review,
            "after_ts": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return _for_caller(_with_progress(await cur.fetchall()), tenant)


def _with_progress(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``progress`` (0..1) and ``eta_s`` of each row from its running job's progress.

    The estimate is the audio left at the rate since the job started, less the time
    since progress was last written; both null until the worker first reports.
    """
    for row in rows:
        elapsed, age = row.pop("progress_elapsed_s", None), row.pop("progress_age_s", None)
        done, duration = row.get("progress_s"), row.get("duration_s")
        row["progress"] = None if done is None else fraction(done, duration)
        left = None if done is None or elapsed is None else eta_s(done, duration, elapsed)
        row["eta_s"] = None if left is None else round(max(0.0, left - (age or 0.0)), 1)
    return rows


def _states(state: str | tuple[str, ...] | None) -> list[str] | None:
    """A text[] parameter (psycopg sends a tuple as a record)."""
    if state is None:
        return None
    return [state] if isinstance(state, str) else list(state)


async def resolve_audio_id(conn: AsyncConn, ref: str) -> uuid.UUID:
    """Accept a full id or a unique prefix of one (like git); for the CLI.

    An ambiguous prefix names the audio it matches (a few), so the next try can be exact.
    """
    ref = ref.strip().lower()
    if not ref or any(c not in "0123456789abcdef-" for c in ref):
        raise NotFound(f"not an audio id: {ref!r}")
    cur = await conn.execute(
        "SELECT id, original_name FROM audio WHERE id::text LIKE %s ORDER BY id LIMIT %s",
        (ref + "%", _SHOWN_MATCHES + 1),
    )
    found = await cur.fetchall()
    if not found:
        raise NotFound(f"no audio with id {ref}")
    if len(found) > 1:
        raise AmbiguousId(f"id prefix {ref} is ambiguous: {_matches(found)}")
    return uuid.UUID(str(found[0]["id"]))


_SHOWN_MATCHES = 5


def _matches(rows: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{r['id']} ({r['original_name']})" for r in rows[:_SHOWN_MATCHES])
    return shown + (", and more" if len(rows) > _SHOWN_MATCHES else "")


async def resolve_job(conn: AsyncConn, ref: str) -> dict[str, Any]:
    """The job a CLI argument names: a job id (digits), else an audio id or prefix's job.

    Digits name a job when one has that id: small job ids are also the start of many
    audio ids, and a job id is what ``GET /v1/jobs`` shows. The row: ``id``, ``state``,
    ``audio_id``, ``original_name``, ``last_error``.
    """
    query = (
        "SELECT j.id, j.state, j.audio_id, a.original_name, j.last_error"
        " FROM jobs j JOIN audio a ON a.id = j.audio_id WHERE "
    )
    ref = ref.strip().lower()
    if ref.isdigit() and int(ref) < 2**63:
        cur = await conn.execute(query + "j.id = %s", (int(ref),))
        job = await cur.fetchone()
        if job is not None:
            return job
    try:
        audio_id = await resolve_audio_id(conn, ref)
    except AmbiguousId:
        raise
    except NotFound:
        raise NotFound(f"no job or audio with id {ref}") from None
    cur = await conn.execute(query + "j.audio_id = %s", (audio_id,))
    job = await cur.fetchone()
    if job is None:
        raise NotFound(f"audio {audio_id} has no job (it was not queued for transcription)")
    return job


async def get_audio(
    conn: AsyncConn, *, tenant: str | None, audio_id: uuid.UUID
) -> dict[str, Any] | None:
    query = sql.SQL(
        "SELECT a.id, a.tenant, a.source, a.original_name, a.source_uri, a.state, a.error,"
        " a.duration_s, a.sample_rate, a.channels, a.codec, a.container, a.language,"
        " a.size_bytes, a.sha256, a.duplicate_of, a.variant_of, a.superseded_by, a.created_at,"
        " a.updated_at, j.id AS job_id, j.state AS job_state, j.attempts, j.max_attempts,"
        " j.last_error, t.verdict, t.review_reasons, {figures}, {progress}"
        " FROM audio a LEFT JOIN jobs j ON j.audio_id = a.id {transcript}"
        " WHERE a.id = %(id)s AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
    ).format(figures=_FIGURES, transcript=_ITS_TRANSCRIPT, progress=_PROGRESS)
    cur = await conn.execute(
        query,
        {"id": audio_id, "tenant": tenant},
    )
    row = await cur.fetchone()
    return None if row is None else _for_caller(_with_progress([row]), tenant)[0]


async def get_transcript(
    conn: AsyncConn, *, tenant: str | None, audio_id: uuid.UUID
) -> dict[str, Any] | None:
    """The newest revision of the transcript with segments, verdict and figures, and
    whether a person verified it (``revision``, ``verified``, ``verified_by``,
    ``verified_at``); a duplicate answers with its original's."""
    query = sql.SQL(
        "SELECT t.id, t.audio_id, t.language, t.language_probability, t.expected_language,"
        " t.text, t.model, t.audio_duration_s, t.processing_s, t.real_time_factor, t.options,"
        " t.verdict, t.review_reasons, {figures}, t.created_at,"
        " t.revision, t.verified, t.verified_by, t.verified_at"
        " FROM audio a JOIN transcripts t ON t.audio_id = coalesce(a.duplicate_of, a.id)"
        " WHERE a.id = %(id)s AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
    ).format(figures=_FIGURES)
    cur = await conn.execute(
        query,
        {"id": audio_id, "tenant": tenant},
    )
    transcript = await cur.fetchone()
    if transcript is None:
        return None
    transcript["model"] = model_label(str(transcript["model"]))  # never a server path
    cur = await conn.execute(
        "SELECT idx, start_s, end_s, text, language, channel, avg_logprob, no_speech_prob,"
        " compression_ratio, words FROM segments WHERE transcript_id = %s ORDER BY idx",
        (transcript["id"],),
    )
    transcript["segments"] = await cur.fetchall()
    return transcript


async def search(
    conn: AsyncConn, *, tenant: str | None, query: str, limit: int
) -> list[dict[str, Any]]:
    """Ranked segment matches with a highlighted snippet and the segment's start time.

    Superseded audio is left out: its text is of an earlier, incomplete version.
    """
    cur = await conn.execute(
        "WITH q AS (SELECT websearch_to_tsquery('simple', %(q)s) AS query)"
        " SELECT a.id AS audio_id, a.original_name, s.idx AS segment, s.start_s, s.end_s,"
        "  ts_rank(s.tsv, q.query) AS rank,"
        "  ts_headline('simple', s.text, q.query,"
        "   'StartSel=<mark>, StopSel=</mark>, MaxFragments=1, MaxWords=30, MinWords=5')"
        "   AS snippet"
        " FROM q, segments s JOIN transcripts t ON t.id = s.transcript_id"
        " JOIN audio a ON a.id = t.audio_id"
        " WHERE s.tsv @@ q.query AND (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
        " AND a.superseded_by IS NULL"
        " ORDER BY rank DESC, a.created_at DESC, s.idx LIMIT %(limit)s",
        {"q": query, "tenant": tenant, "limit": limit},
    )
    return await cur.fetchall()


async def list_jobs(
    conn: AsyncConn,
    *,
    tenant: str | None,
    state: str | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Jobs newest first; a tenant's caller gets ``worker_id`` null (see ``_for_caller``)."""
    cur = await conn.execute(
        "SELECT j.id, j.audio_id, j.state, j.attempts, j.max_attempts, j.last_error,"
        " j.run_after, j.worker_id, j.created_at, j.started_at, j.finished_at"
        " FROM jobs j JOIN audio a ON a.id = j.audio_id"
        " WHERE (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
        " AND (%(state)s::text IS NULL OR j.state = %(state)s)"
        " AND (%(after_ts)s::timestamptz IS NULL"
        "      OR (j.created_at, j.id) < (%(after_ts)s, %(after_id)s))"
        " ORDER BY j.created_at DESC, j.id DESC LIMIT %(limit)s",
        {
            "tenant": tenant,
            "state": state,
            "after_ts": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return _for_caller(await cur.fetchall(), tenant)


async def jobs_by_state(conn: AsyncConn, *, tenant: str | None) -> dict[str, int]:
    """Job counts by state, for one tenant or (``None``) all of them."""
    if tenant is None:  # no join: the metrics sampler asks this every few seconds
        return await counts(conn, "SELECT state AS key, count(*) AS n FROM jobs GROUP BY state")
    return await counts(
        conn,
        "SELECT j.state AS key, count(*) AS n FROM jobs j JOIN audio a ON a.id = j.audio_id"
        " WHERE a.tenant = %s GROUP BY j.state",
        (tenant,),
    )


async def stats(conn: AsyncConn, *, tenant: str | None) -> dict[str, Any]:
    params = {"tenant": tenant}
    audio = await counts(
        conn,
        "SELECT a.state AS key, count(*) AS n FROM audio a"
        " WHERE (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s) GROUP BY a.state",
        params,
    )
    jobs = await jobs_by_state(conn, tenant=tenant)
    verdicts = await counts(
        conn,
        "SELECT t.verdict AS key, count(*) AS n FROM transcripts t JOIN audio a"
        " ON a.id = t.audio_id WHERE (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)"
        " GROUP BY t.verdict",
        params,
    )
    async with conn.cursor(row_factory=class_row(_Totals)) as cur:
        await cur.execute(
            "SELECT coalesce(sum(t.audio_duration_s), 0) / 3600.0 AS hours,"
            " avg(t.real_time_factor) AS rtf, count(*) AS transcripts"
            " FROM transcripts t JOIN audio a ON a.id = t.audio_id"
            " WHERE (%(tenant)s::text IS NULL OR a.tenant = %(tenant)s)",
            params,
        )
        totals = await cur.fetchone()
    assert totals is not None
    return {
        "audio_by_state": audio,
        "jobs_by_state": jobs,
        "queue_depth": jobs.get("queued", 0) + jobs.get("running", 0),
        "hours_transcribed": float(totals.hours),
        "transcripts": totals.transcripts,
        "transcripts_by_verdict": verdicts,
        "average_real_time_factor": float(totals.rtf) if totals.rtf is not None else None,
    }


@dataclass(frozen=True, slots=True)
class _Totals:
    hours: float
    rtf: float | None
    transcripts: int


async def list_workers(conn: AsyncConn, *, stale_after_s: float) -> list[dict[str, Any]]:
    """ASR workers, alive first (seen within ``stale_after_s`` and not stopped), newest first.

    Operators only: workers serve every tenant.
    """
    cur = await conn.execute(
        "SELECT worker_id, hostname, pid, device, compute_type, model, model_id, model_problem,"
        " batch_size, started_at, last_seen_at, stopped_at, current_job_id, jobs_done, jobs_failed,"
        " gpu_memory_used_bytes, gpu_memory_total_bytes,"
        " (stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => %s)) AS alive"
        " FROM workers ORDER BY alive DESC, last_seen_at DESC LIMIT 500",
        (stale_after_s,),
    )
    return [dict(r) for r in await cur.fetchall()]


async def s3_event_counts(conn: AsyncConn) -> dict[str, int]:
    """S3 notifications by processing state (operators only: events carry no tenant)."""
    return await counts(conn, "SELECT state AS key, count(*) AS n FROM s3_events GROUP BY state")


async def retry_job(conn: AsyncConn, job_id: int) -> dict[str, Any] | None:
    """Put a dead or failed job back in the queue (admin); the row as the API shows it."""
    retried = await job_store.retry_job(conn, job_id)
    return asdict(retried) if retried is not None else None
