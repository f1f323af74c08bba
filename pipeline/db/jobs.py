"""The job store: every write to ``jobs`` (and the audio state that moves with it).

Workers claim with ``FOR UPDATE SKIP LOCKED`` and hold a lease (a token and an
expiry) that they extend while working. Every later write by the worker names
the token, so a worker that lost its lease (paused, partitioned) can neither
extend it nor complete the job: completion is fenced. A job whose lease expired
is claimable again; one that used up its attempts ends ``dead`` with its error.

Operators put dead jobs back (``retry_job``) through here too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pipeline.db.database import AsyncConn
from pipeline.db.states import AudioState, JobState
from pipeline.errors import LeaseLost

JOBS_CHANNEL = "ai2text_jobs"
# Sent when a transcript is committed (the dataset orchestrator listens).
TRANSCRIPTS_CHANNEL = "ai2text_transcripts"

# Interactive requests ("high") are claimed before bulk backlog ("normal"): a job's
# priority moves its run_after earlier by the queue's head start, so the claim keeps
# its one index order and bulk work that waited longer than the head start still goes
# first (aging: nothing starves).
Priority = Literal["normal", "high"]
PRIORITY_LEVELS: dict[Priority, int] = {"normal": 0, "high": 1}


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds the lease of, with what it needs to know about its audio."""

    id: int
    audio_id: uuid.UUID
    attempt: int
    max_attempts: int
    lease_token: uuid.UUID
    storage_key: str | None
    original_name: str
    duration_s: float
    tenant: str
    source_bucket: str | None = None
    source_key: str | None = None
    source_etag: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    priority: int = 0  # PRIORITY_LEVELS


@dataclass(frozen=True, slots=True)
class RetriedJob:
    """A dead or failed job an operator put back in the queue."""

    id: int
    audio_id: uuid.UUID
    state: JobState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float
    max_s: float
    # A retried high-priority job keeps its head start over bulk work.
    priority_head_start_s: float = 0.0

    def delay_s(self, attempt: int) -> float:
        """Exponential backoff: base, 2·base, 4·base … capped at ``max_s``."""
        return float(min(self.max_s, self.base_s * 2.0 ** min(max(0, attempt - 1), 64)))


async def enqueue(
    conn: AsyncConn,
    audio_id: uuid.UUID,
    *,
    max_attempts: int,
    options: dict[str, object] | None = None,
    priority: Priority = "normal",
    head_start_s: float = 0.0,
) -> None:
    """Queue transcription of ``audio_id`` (once) and wake the workers on commit.

    A ``high`` priority job is ready ``head_start_s`` before a normal one queued now.
    """
    level = PRIORITY_LEVELS[priority]
    await conn.execute(
        "INSERT INTO jobs (audio_id, max_attempts, options, priority, run_after)"
        " VALUES (%s, %s, %s, %s, now() - make_interval(secs => %s))"
        " ON CONFLICT (audio_id, kind) DO NOTHING",
        (audio_id, max_attempts, Jsonb(options or {}), level, level * head_start_s),
    )
    await conn.execute(f"NOTIFY {JOBS_CHANNEL}")


async def enqueue_many(
    conn: AsyncConn,
    jobs: list[tuple[uuid.UUID, dict[str, object], Priority]],
    *,
    max_attempts: int,
    head_start_s: float = 0.0,
) -> None:
    """``enqueue`` for many (audio id, options, priority) at once, with one wake-up."""
    if not jobs:
        return
    levels = [PRIORITY_LEVELS[priority] for _, _, priority in jobs]
    await conn.execute(
        "INSERT INTO jobs (audio_id, max_attempts, options, priority, run_after)"
        " SELECT audio_id, %s, options, level, now() - make_interval(secs => level * %s)"
        " FROM unnest(%s::uuid[], %s::jsonb[], %s::smallint[]) AS t(audio_id, options, level)"
        " ON CONFLICT (audio_id, kind) DO NOTHING",
        (
            max_attempts,
            head_start_s,
            [audio_id for audio_id, _, _ in jobs],
            [Jsonb(options) for _, options, _ in jobs],
            levels,
        ),
    )
    await conn.execute(f"NOTIFY {JOBS_CHANNEL}")


# States are literals in the SQL (not parameters) so that the planner can match the
# partial indexes; tests/integration/test_states.py keeps them within ``states``.
#
# Two index-backed lookups, not one OR: with an OR PostgreSQL sorts every matching row
# to find the first (a sequential scan that grows with the queue: 23 ms a claim at
# 100,000 queued jobs); each lookup here is an index scan that stops at its first row.
# A job whose worker stopped renewing its lease goes first: it is the oldest work, and
# ``ready`` is not even scanned (nothing locked) when there is one.
_CLAIM_TEMPLATE = """
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_expires_at < now() AND attempts < max_attempts
    ORDER BY lease_expires_at
    FOR UPDATE SKIP LOCKED
    LIMIT {expired_limit}
), ready AS (
    SELECT id FROM jobs
    WHERE state = 'queued' {priority_filter}AND run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM expired)
    ORDER BY run_after, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
), next AS (
    SELECT id FROM expired UNION ALL SELECT id FROM ready
), claimed AS (
    UPDATE jobs j
    SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => %(lease_s)s),
        worker_id = %(worker_id)s, started_at = now(), updated_at = now()
    FROM next WHERE j.id = next.id
    RETURNING j.id, j.audio_id, j.attempts, j.max_attempts, j.lease_token, j.options,
              j.priority
), touched AS (
    UPDATE audio a SET state = 'processing', updated_at = now()
    FROM claimed WHERE a.id = claimed.audio_id
    RETURNING a.id, a.storage_key, a.original_name, a.duration_s, a.tenant,
              a.source_bucket, a.source_key, a.source_etag
)
SELECT c.id, c.audio_id, c.attempts AS attempt, c.max_attempts, c.lease_token,
       coalesce(c.options, '{{}}'::jsonb) AS options, c.priority,
       t.storage_key, t.original_name, coalesce(t.duration_s, 0.0) AS duration_s, t.tenant,
       t.source_bucket, t.source_key, t.source_etag
FROM claimed c JOIN touched t ON t.id = c.audio_id
"""
_CLAIM = _CLAIM_TEMPLATE.format(expired_limit=1, priority_filter="")
# Only a ready high-priority job (index ``jobs_ready_urgent``), for a worker that pauses
# bulk work between windows to serve someone waiting.
_CLAIM_URGENT = _CLAIM_TEMPLATE.format(expired_limit=0, priority_filter="AND priority = 1 ")


async def claim(conn: AsyncConn, *, worker_id: str, lease_s: float) -> ClaimedJob | None:
    """Take the next ready job, or a job whose worker's lease ran out."""
    return await _claim(conn, _CLAIM, worker_id=worker_id, lease_s=lease_s)


async def claim_urgent(conn: AsyncConn, *, worker_id: str, lease_s: float) -> ClaimedJob | None:
    """Take the next ready high-priority job, if one waits (nothing else)."""
    return await _claim(conn, _CLAIM_URGENT, worker_id=worker_id, lease_s=lease_s)


async def _claim(
    conn: AsyncConn, query: str, *, worker_id: str, lease_s: float
) -> ClaimedJob | None:
    params = {"lease_s": lease_s, "worker_id": worker_id}
    async with conn.transaction(), conn.cursor(row_factory=class_row(ClaimedJob)) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def heartbeat(conn: AsyncConn, job: ClaimedJob, *, lease_s: float) -> None:
    """Extend the lease; raise ``LeaseLost`` if another worker owns the job now."""
    cur = await conn.execute(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s), updated_at = now()"
        " WHERE id = %s AND lease_token = %s AND state = 'running'",
        (lease_s, job.id, job.lease_token),
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"job {job.id} lease lost")


# Only the job's holder writes, and only forwards: a stale worker or a late write from
# an earlier attempt cannot move another attempt's progress. The notice goes out in the
# same statement (and only when the row was written).
_RECORD_PROGRESS = """
WITH written AS (
    UPDATE jobs SET progress_s = %(progress_s)s, progress_at = now()
    WHERE id = %(job_id)s AND lease_token = %(token)s AND state = 'running'
    RETURNING id
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM written
"""


async def record_progress(
    conn: AsyncConn, job: ClaimedJob, progress_s: float, *, channel: str, payload: str
) -> bool:
    """Store how far the transcription has got and notify ``channel``; False once the
    lease is no longer this worker's."""
    cur = await conn.execute(
        _RECORD_PROGRESS,
        {
            "progress_s": progress_s,
            "job_id": job.id,
            "token": job.lease_token,
            "channel": channel,
            "payload": payload,
        },
    )
    return await cur.fetchone() is not None


async def holds_lease(conn: AsyncConn, job: ClaimedJob) -> bool:
    """Whether ``job`` is still running under this worker's lease (a read; extends nothing)."""
    cur = await conn.execute(
        "SELECT 1 FROM jobs WHERE id = %s AND lease_token = %s AND state = 'running'",
        (job.id, job.lease_token),
    )
    return await cur.fetchone() is not None


async def mark_done(conn: AsyncConn, job: ClaimedJob, *, language: str | None) -> None:
    """Finish the job; call inside the transaction that stores the transcript.

    Raises ``LeaseLost`` (so the caller's transaction rolls back) unless this
    worker still holds the lease: the fencing check.
    """
    await finish_without_transcript(conn, job)
    await conn.execute(
        "UPDATE audio SET state = 'transcribed', error = NULL, language = %s, updated_at = now()"
        " WHERE id = %s",
        (language, job.audio_id),
    )


async def finish_without_transcript(conn: AsyncConn, job: ClaimedJob) -> None:
    """Close the job (fenced) when there is nothing to transcribe, e.g. a duplicate."""
    cur = await conn.execute(
        "UPDATE jobs SET state = 'done', finished_at = now(), updated_at = now(),"
        " lease_token = NULL, lease_expires_at = NULL, last_error = NULL"
        " WHERE id = %s AND lease_token = %s AND state = 'running'",
        (job.id, job.lease_token),
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"job {job.id} lease lost before completion")


async def fail(
    conn: AsyncConn, job: ClaimedJob, error: str, *, transient: bool, policy: RetryPolicy
) -> JobState:
    """Record a failure; retry later if transient and attempts remain. Return the new state."""
    retry = transient and job.attempt < job.max_attempts
    new_state = JobState.QUEUED if retry else JobState.DEAD
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE jobs SET state = %s, last_error = %s, updated_at = now(),"
            " run_after = now() + make_interval(secs => %s - priority * %s),"
            " lease_token = NULL, lease_expires_at = NULL,"
            " finished_at = CASE WHEN %s = 'dead' THEN now() END"
            " WHERE id = %s AND lease_token = %s AND state = 'running'",
            (
                new_state,
                error,
                policy.delay_s(job.attempt),
                policy.priority_head_start_s,
                new_state,
                job.id,
                job.lease_token,
            ),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"job {job.id} lease lost before recording failure")
        await conn.execute(
            "UPDATE audio SET state = %s, error = %s, updated_at = now() WHERE id = %s",
            (AudioState.QUEUED if retry else AudioState.FAILED, error, job.audio_id),
        )
        if not retry:
            await notify_finished(conn, job.audio_id)
    return new_state


async def notify_finished(conn: AsyncConn, audio_id: uuid.UUID) -> None:
    """Tell waiters (e.g. a synchronous API call) that this audio's job has ended."""
    await conn.execute("SELECT pg_notify(%s, %s)", (TRANSCRIPTS_CHANNEL, str(audio_id)))


async def release(
    conn: AsyncConn,
    job: ClaimedJob,
    *,
    delay_s: float = 0.0,
    error: str | None = None,
    head_start_s: float = 0.0,
) -> bool:
    """Give the lease back unfinished; the attempt is not counted.

    Used on shutdown, and (with a delay and the error) while a dependency such as
    the object store is down: the job waits instead of using up its attempts. A
    high-priority job keeps ``head_start_s`` over bulk work.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE jobs SET state = 'queued', attempts = greatest(attempts - 1, 0),"
            " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
            " run_after = now() + make_interval(secs => %s - priority * %s),"
            " last_error = coalesce(%s, last_error)"
            " WHERE id = %s AND lease_token = %s AND state = 'running'",
            (delay_s, head_start_s, error, job.id, job.lease_token),
        )
        if cur.rowcount != 1:
            return False
        await conn.execute(
            "UPDATE audio SET state = 'queued', updated_at = now() WHERE id = %s", (job.audio_id,)
        )
        await conn.execute(f"NOTIFY {JOBS_CHANNEL}")
    return True


async def reap_exhausted(conn: AsyncConn) -> int:
    """Jobs whose last allowed attempt lost its worker end ``dead``."""
    # %%s is PostgreSQL format()'s placeholder, escaped from psycopg's.
    async with conn.transaction():
        cur = await conn.execute(
            "WITH dead AS ("
            " UPDATE jobs SET state = 'dead', finished_at = now(), updated_at = now(),"
            "  last_error = coalesce(last_error || '; ', '') ||"
            "   format('worker %%s stopped responding (lease expired) on attempt %%s of %%s',"
            "          worker_id, attempts, max_attempts),"
            "  lease_token = NULL, lease_expires_at = NULL"
            " WHERE state = 'running' AND lease_expires_at < now() AND attempts >= max_attempts"
            " RETURNING audio_id, last_error)"
            " UPDATE audio a SET state = 'failed', error = dead.last_error, updated_at = now()"
            " FROM dead WHERE a.id = dead.audio_id"
            # Wake waiters as notify_finished() does.
            " RETURNING a.id, pg_notify(%(channel)s, a.id::text)",
            {"channel": TRANSCRIPTS_CHANNEL},
        )
        return cur.rowcount


async def retry_job(conn: AsyncConn, job_id: int) -> RetriedJob | None:
    """Put a dead or failed job back in the queue with fresh attempts (admin)."""
    async with conn.transaction(), conn.cursor(row_factory=class_row(RetriedJob)) as cur:
        await cur.execute(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_after = now(), last_error = NULL,"
            " lease_token = NULL, lease_expires_at = NULL, finished_at = NULL, updated_at = now()"
            " WHERE id = %s AND state IN ('dead', 'failed') RETURNING id, audio_id, state",
            (job_id,),
        )
        row = await cur.fetchone()
        if row is not None:
            await conn.execute(
                "UPDATE audio SET state = 'queued', error = NULL, updated_at = now() WHERE id = %s",
                (row.audio_id,),
            )
            await conn.execute(f"NOTIFY {JOBS_CHANNEL}")
    return row
