"""The PostgreSQL job queue: claims, leases, fencing, retries and wake-ups.

Every test runs against a real, freshly migrated database. Where a lease must
run out, it is shortened to a fraction of a second and the test polls for the
consequence with a deadline instead of sleeping for a fixed time.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from pipeline.db import jobs
from pipeline.db.database import AsyncConn, Database
from pipeline.db.jobs import RetryPolicy
from pipeline.errors import LeaseLost
from tests.components import opened
from tests.waiting import eventually

T = TypeVar("T")
LONG = 60.0  # a lease that cannot run out during a test
NO_BACKOFF = RetryPolicy(base_s=0.0, max_s=0.0)


# ---------------------------------------------------------------- helpers


@asynccontextmanager
async def connections(database: Database, n: int) -> AsyncIterator[list[AsyncConn]]:
    """``n`` separate autocommit connections (one per simulated worker)."""
    conns = [await database.listen_connection() for _ in range(n)]
    try:
        yield conns
    finally:
        for c in conns:
            await c.close()


async def add_audio(conn: AsyncConn, name: str = "a.flac") -> uuid.UUID:
    """A queued audio row, as ingest would have left it (without the job)."""
    sha = hashlib.sha256(f"{name}-{uuid.uuid4()}".encode()).hexdigest()
    cur = await conn.execute(
        "INSERT INTO audio (source, original_name, source_uri, sha256, storage_key, state,"
        " duration_s) VALUES ('folder', %s, %s, %s, %s, 'queued', 11.0) RETURNING id",
        (name, f"/inbox/{name}", sha, f"audio/sha256/{sha[:2]}/{sha}.flac"),
    )
    row = await cur.fetchone()
    assert row is not None
    audio_id: uuid.UUID = row["id"]  # type: ignore[assignment]
    return audio_id


async def add_job(conn: AsyncConn, name: str = "a.flac", *, max_attempts: int = 5) -> uuid.UUID:
    audio_id = await add_audio(conn, name)
    await jobs.enqueue(conn, audio_id, max_attempts=max_attempts)
    return audio_id


async def job_row(conn: AsyncConn, job_id: int) -> dict[str, Any]:
    cur = await conn.execute("SELECT *, now() AS db_now FROM jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    return row


async def audio_row(conn: AsyncConn, audio_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute("SELECT * FROM audio WHERE id = %s", (audio_id,))
    row = await cur.fetchone()
    assert row is not None
    return row


async def db_now_after(conn: AsyncConn, moment: Any) -> bool:
    cur = await conn.execute("SELECT now() > %s AS past", (moment,))
    row = await cur.fetchone()
    assert row is not None
    return bool(row["past"])


# ---------------------------------------------------------------- claim


def test_claim_returns_job_with_attempt_1_and_marks_audio_processing(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            audio_id = await add_job(conn, "one.flac")
            job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)

            assert job is not None
            assert job.audio_id == audio_id
            assert job.attempt == 1
            assert job.max_attempts == 5
            assert job.original_name == "one.flac"
            assert job.storage_key.startswith("audio/sha256/")
            assert job.duration_s == pytest.approx(11.0)
            assert job.tenant == "default"
            row = await job_row(conn, job.id)
            assert row["state"] == "running"
            assert row["attempts"] == 1
            assert row["worker_id"] == "w1"
            assert row["lease_token"] == job.lease_token
            assert row["started_at"] is not None
            assert row["lease_expires_at"] - row["db_now"] > timedelta(seconds=LONG - 10)
            assert (await audio_row(conn, audio_id))["state"] == "processing"

    asyncio.run(scenario())


def test_claim_on_empty_queue_returns_none(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            assert await jobs.claim(conn, worker_id="w1", lease_s=LONG) is None

    asyncio.run(scenario())


def test_second_claim_returns_none_while_lease_is_valid(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            await add_job(c1)
            first = await jobs.claim(c1, worker_id="w1", lease_s=LONG)
            assert first is not None
            assert await jobs.claim(c2, worker_id="w2", lease_s=LONG) is None
            assert await jobs.claim(c1, worker_id="w1", lease_s=LONG) is None
            row = await job_row(c1, first.id)
            assert (row["attempts"], row["worker_id"]) == (1, "w1")

    asyncio.run(scenario())


def test_eight_concurrent_claimers_get_eight_distinct_jobs(make_settings: Any) -> None:
    n = 8

    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, n) as conns:
            audio_ids = {await add_job(conns[0], f"f{i}.flac") for i in range(n)}
            claimed = await asyncio.gather(
                *(jobs.claim(c, worker_id=f"w{i}", lease_s=LONG) for i, c in enumerate(conns))
            )
            assert all(j is not None for j in claimed)
            taken = [j for j in claimed if j is not None]
            assert len({j.id for j in taken}) == n
            assert {j.audio_id for j in taken} == audio_ids
            assert len({j.lease_token for j in taken}) == n
            cur = await conns[0].execute(
                "SELECT count(*) AS n, count(DISTINCT worker_id) AS workers, max(attempts) AS a"
                " FROM jobs WHERE state = 'running'"
            )
            assert await cur.fetchone() == {"n": n, "workers": n, "a": 1}
            # Nothing left for a ninth worker.
            assert await jobs.claim(conns[0], worker_id="w9", lease_s=LONG) is None

    asyncio.run(scenario())


def test_concurrent_claimers_through_the_pool_never_share_a_job(make_settings: Any) -> None:
    """More workers than jobs, each claiming in a loop: every job goes to exactly one."""
    jobs_n, workers_n = 20, 6

    async def scenario() -> None:
        async with opened(make_settings(), pool_max_size=workers_n + 1) as database:
            async with database.connection() as conn:
                for i in range(jobs_n):
                    await add_job(conn, f"p{i}.flac")

            async def worker(name: str) -> list[int]:
                got: list[int] = []
                while True:
                    async with database.connection() as conn:
                        job = await jobs.claim(conn, worker_id=name, lease_s=LONG)
                    if job is None:
                        return got
                    got.append(job.id)

            results = await asyncio.gather(*(worker(f"w{i}") for i in range(workers_n)))
            ids = [j for r in results for j in r]
            assert len(ids) == jobs_n
            assert len(set(ids)) == jobs_n

    asyncio.run(scenario())


# ---------------------------------------------------------------- leases and fencing


def test_heartbeat_extends_the_lease(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            await add_job(c1)
            job = await jobs.claim(c1, worker_id="w1", lease_s=0.5)
            assert job is not None
            first_expiry = (await job_row(c1, job.id))["lease_expires_at"]

            await jobs.heartbeat(c1, job, lease_s=LONG)

            row = await job_row(c1, job.id)
            assert row["lease_expires_at"] - first_expiry > timedelta(seconds=LONG - 10)
            assert row["lease_token"] == job.lease_token
            # Once the original lease would have run out, the job is still not claimable.
            await eventually(
                lambda: db_now_after(c2, first_expiry), what="first lease to pass", timeout=10
            )
            assert await jobs.claim(c2, worker_id="w2", lease_s=LONG) is None
            row = await job_row(c1, job.id)
            assert (row["state"], row["worker_id"], row["attempts"]) == ("running", "w1", 1)

    asyncio.run(scenario())


def test_expired_lease_is_claimed_again_and_old_holder_is_fenced(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            audio_id = await add_job(c1)
            old = await jobs.claim(c1, worker_id="w1", lease_s=LONG)
            assert old is not None
            # Worker 1 stalls: its lease runs out (shortened through its own heartbeat).
            await jobs.heartbeat(c1, old, lease_s=0.2)

            new = await eventually(
                lambda: jobs.claim(c2, worker_id="w2", lease_s=LONG),
                what="expired lease",
                timeout=10,
            )
            assert new.id == old.id
            assert new.attempt == 2
            assert new.lease_token != old.lease_token
            row = await job_row(c2, new.id)
            assert (row["worker_id"], row["attempts"]) == ("w2", 2)

            # The old holder can neither extend nor complete nor fail the job.
            with pytest.raises(LeaseLost):
                await jobs.heartbeat(c1, old, lease_s=LONG)
            with pytest.raises(LeaseLost):
                async with c1.transaction():
                    await c1.execute("UPDATE audio SET language = 'xx' WHERE id = %s", (audio_id,))
                    await jobs.mark_done(c1, old, language="xx")
            with pytest.raises(LeaseLost):
                await jobs.fail(c1, old, "late", transient=False, policy=NO_BACKOFF)
            assert not await jobs.release(c1, old)

            row = await job_row(c2, new.id)
            assert (row["state"], row["lease_token"]) == ("running", new.lease_token)
            audio = await audio_row(c2, audio_id)
            assert (audio["state"], audio["language"]) == ("processing", None)

            async with c2.transaction():
                await jobs.mark_done(c2, new, language="en")
            row = await job_row(c2, new.id)
            assert row["state"] == "done"
            assert row["lease_token"] is None and row["lease_expires_at"] is None
            assert row["finished_at"] is not None
            audio = await audio_row(c2, audio_id)
            assert (audio["state"], audio["language"], audio["error"]) == (
                "transcribed",
                "en",
                None,
            )
            # Done is final: neither holder can touch it again, nobody can claim it.
            with pytest.raises(LeaseLost):
                await jobs.heartbeat(c2, new, lease_s=LONG)
            with pytest.raises(LeaseLost):
                async with c2.transaction():
                    await jobs.mark_done(c2, new, language="en")
            assert await jobs.claim(c1, worker_id="w3", lease_s=LONG) is None

    asyncio.run(scenario())


# ---------------------------------------------------------------- failures and retries


def test_transient_failure_requeues_with_backoff(make_settings: Any) -> None:
    policy = RetryPolicy(base_s=1.0, max_s=30.0)

    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            audio_id = await add_job(c1)
            job = await jobs.claim(c1, worker_id="w1", lease_s=LONG)
            assert job is not None

            state = await jobs.fail(c1, job, "storage timeout", transient=True, policy=policy)

            assert state == "queued"
            row = await job_row(c1, job.id)
            assert row["state"] == "queued"
            assert row["last_error"] == "storage timeout"
            assert row["lease_token"] is None and row["finished_at"] is None
            assert row["attempts"] == 1
            delay = row["run_after"] - row["db_now"]
            assert timedelta(seconds=0.5) < delay <= timedelta(seconds=1.0)
            audio = await audio_row(c1, audio_id)
            assert (audio["state"], audio["error"]) == ("queued", "storage timeout")

            # Not claimable before run_after ...
            assert await jobs.claim(c2, worker_id="w2", lease_s=LONG) is None
            # ... and claimable after it, as attempt 2.
            again = await eventually(
                lambda: jobs.claim(c2, worker_id="w2", lease_s=LONG),
                what="backoff to end",
                timeout=10,
            )
            claimed_row = await job_row(c2, again.id)
            assert claimed_row["started_at"] >= row["run_after"]
            assert again.id == job.id
            assert again.attempt == 2

            # The second failure waits twice as long.
            await jobs.fail(c2, again, "again", transient=True, policy=policy)
            row = await job_row(c2, job.id)
            delay = row["run_after"] - row["db_now"]
            assert timedelta(seconds=1.5) < delay <= timedelta(seconds=2.0)

    asyncio.run(scenario())


def test_retry_policy_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_s=5.0, max_s=30.0)
    assert [policy.delay_s(a) for a in range(1, 6)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert policy.delay_s(0) == 5.0


def test_permanent_failure_is_dead_at_once(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            audio_id = await add_job(conn, max_attempts=5)
            job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
            assert job is not None

            state = await jobs.fail(
                conn, job, "undecodable audio", transient=False, policy=NO_BACKOFF
            )

            assert state == "dead"
            row = await job_row(conn, job.id)
            assert (row["state"], row["last_error"], row["attempts"]) == (
                "dead",
                "undecodable audio",
                1,
            )
            assert row["finished_at"] is not None and row["lease_token"] is None
            audio = await audio_row(conn, audio_id)
            assert (audio["state"], audio["error"]) == ("failed", "undecodable audio")
            assert await jobs.claim(conn, worker_id="w1", lease_s=LONG) is None

    asyncio.run(scenario())


def test_transient_failures_up_to_max_attempts_end_dead(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            audio_id = await add_job(conn, max_attempts=3)
            states = []
            attempts = []
            for i in range(3):
                job = await eventually(
                    lambda: jobs.claim(conn, worker_id="w1", lease_s=LONG),
                    what="retry",
                    timeout=10,
                )
                attempts.append(job.attempt)
                states.append(
                    await jobs.fail(conn, job, f"timeout {i}", transient=True, policy=NO_BACKOFF)
                )

            assert attempts == [1, 2, 3]
            assert states == ["queued", "queued", "dead"]
            row = await job_row(conn, job.id)
            assert (row["state"], row["attempts"], row["last_error"]) == ("dead", 3, "timeout 2")
            audio = await audio_row(conn, audio_id)
            assert (audio["state"], audio["error"]) == ("failed", "timeout 2")
            assert await jobs.claim(conn, worker_id="w1", lease_s=LONG) is None

    asyncio.run(scenario())


def test_release_requeues_without_counting_the_attempt(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            audio_id = await add_job(c1)
            job = await jobs.claim(c1, worker_id="w1", lease_s=LONG)
            assert job is not None

            assert await jobs.release(c1, job) is True

            row = await job_row(c1, job.id)
            assert (row["state"], row["attempts"], row["lease_token"]) == ("queued", 0, None)
            assert row["run_after"] <= row["db_now"]
            assert (await audio_row(c1, audio_id))["state"] == "queued"
            # Released twice: the second is a no-op.
            assert await jobs.release(c1, job) is False

            again = await jobs.claim(c2, worker_id="w2", lease_s=LONG)
            assert again is not None
            assert again.id == job.id
            assert again.attempt == 1
            assert again.lease_token != job.lease_token

    asyncio.run(scenario())


# ---------------------------------------------------------------- reaping


def test_reap_exhausted_marks_dead_a_job_whose_last_lease_expired(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 2) as (c1, c2):
            audio_id = await add_job(c1, max_attempts=1)
            other_audio = await add_job(c1, "other.flac", max_attempts=1)
            job = await jobs.claim(c1, worker_id="w1", lease_s=LONG)
            other = await jobs.claim(c1, worker_id="w9", lease_s=LONG)
            assert job is not None and other is not None

            assert await jobs.reap_exhausted(c2) == 0  # lease still valid
            await jobs.heartbeat(c1, job, lease_s=0.2)  # then the worker goes silent

            # On its last attempt an expired job is not claimable, only reapable.
            reaped = await eventually(lambda: jobs.reap_exhausted(c2), what="reap", timeout=10)
            assert reaped == 1
            assert await jobs.claim(c2, worker_id="w2", lease_s=LONG) is None

            row = await job_row(c2, job.id)
            assert row["state"] == "dead"
            assert row["lease_token"] is None and row["finished_at"] is not None
            assert "lease expired" in row["last_error"]
            audio = await audio_row(c2, audio_id)
            assert audio["state"] == "failed"
            assert audio["error"] == row["last_error"]
            # The job with a live lease is untouched.
            assert (await job_row(c2, other.id))["state"] == "running"
            assert (await audio_row(c2, other_audio))["state"] == "processing"
            with pytest.raises(LeaseLost):
                await jobs.heartbeat(c1, job, lease_s=LONG)

    asyncio.run(scenario())


def test_reap_exhausted_error_names_the_worker_and_attempts(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            await add_job(conn, max_attempts=1)
            job = await jobs.claim(conn, worker_id="worker-7", lease_s=0.2)
            assert job is not None
            await eventually(lambda: jobs.reap_exhausted(conn), what="reap", timeout=10)
            row = await job_row(conn, job.id)
            assert row["last_error"] == (
                "worker worker-7 stopped responding (lease expired) on attempt 1 of 1"
            )

    asyncio.run(scenario())


# ---------------------------------------------------------------- enqueue


def test_enqueue_twice_for_the_same_audio_yields_one_job(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            audio_id = await add_job(conn, max_attempts=3)
            await jobs.enqueue(conn, audio_id, max_attempts=7)
            cur = await conn.execute(
                "SELECT max_attempts, state FROM jobs WHERE audio_id = %s", (audio_id,)
            )
            assert await cur.fetchall() == [{"max_attempts": 3, "state": "queued"}]

            # Also once it has been claimed: no second job appears.
            job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
            assert job is not None
            await jobs.enqueue(conn, audio_id, max_attempts=3)
            cur = await conn.execute("SELECT count(*) AS n FROM jobs")
            assert await cur.fetchone() == {"n": 1}
            assert await jobs.claim(conn, worker_id="w2", lease_s=LONG) is None

    asyncio.run(scenario())


def test_enqueue_notifies_listeners_on_commit(
    make_settings: Any, db: psycopg.Connection[Any]
) -> None:
    db.execute(f"LISTEN {jobs.JOBS_CHANNEL}")
    assert jobs.JOBS_CHANNEL == "ai2text_jobs"

    async def scenario() -> None:
        async with opened(make_settings()) as database:
            async with database.connection() as conn:  # not autocommit: one transaction
                audio_id = await add_audio(conn)
                await jobs.enqueue(conn, audio_id, max_attempts=3)
                # Not delivered before the transaction commits.
                assert list(db.notifies(timeout=0.3, stop_after=1)) == []
            # The pool's context commits on exit.
            received = list(db.notifies(timeout=10, stop_after=1))
            assert len(received) == 1
            assert received[0].channel == "ai2text_jobs"
            # When the listener hears it, the job is visible.
            row = db.execute("SELECT state FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
            assert row == {"state": "queued"}

    asyncio.run(scenario())


def test_enqueue_rolled_back_sends_no_notification(
    make_settings: Any, db: psycopg.Connection[Any]
) -> None:
    db.execute(f"LISTEN {jobs.JOBS_CHANNEL}")

    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            audio_id = await add_audio(conn)

            class Abort(Exception):
                pass

            with pytest.raises(Abort):
                async with conn.transaction():
                    await jobs.enqueue(conn, audio_id, max_attempts=3)
                    raise Abort
            assert list(db.notifies(timeout=0.3, stop_after=1)) == []
            cur = await conn.execute("SELECT count(*) AS n FROM jobs")
            assert await cur.fetchone() == {"n": 0}

    asyncio.run(scenario())


# ---------------------------------------------------------------- priority


HEAD_START = 600.0


async def add_prioritised_job(conn: AsyncConn, name: str, priority: jobs.Priority) -> uuid.UUID:
    audio_id = await add_audio(conn, name)
    await jobs.enqueue(conn, audio_id, max_attempts=5, priority=priority, head_start_s=HEAD_START)
    return audio_id


async def claim_order(conn: AsyncConn, n: int) -> list[uuid.UUID]:
    order = []
    for _ in range(n):
        job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
        assert job is not None
        order.append(job.audio_id)
    return order


def test_a_high_priority_job_is_claimed_before_bulk_backlog(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            backlog = [await add_prioritised_job(conn, f"bulk{i}.flac", "normal") for i in range(5)]
            urgent = await add_prioritised_job(conn, "api.flac", "high")

            order = await claim_order(conn, 6)

            assert order == [urgent, *backlog]

    asyncio.run(scenario())


def test_bulk_work_that_waited_longer_than_the_head_start_still_goes_first(
    make_settings: Any,
) -> None:
    """Aging: a flood of interactive requests never starves the folder backlog."""

    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            old_bulk = await add_prioritised_job(conn, "old.flac", "normal")
            # As if it had been queued 20 minutes ago.
            await conn.execute(
                "UPDATE jobs SET run_after = now() - interval '20 minutes',"
                " created_at = now() - interval '20 minutes' WHERE audio_id = %s",
                (old_bulk,),
            )
            new_bulk = await add_prioritised_job(conn, "new.flac", "normal")
            urgent = await add_prioritised_job(conn, "api.flac", "high")

            assert await claim_order(conn, 3) == [old_bulk, urgent, new_bulk]

    asyncio.run(scenario())


def test_a_retried_or_released_high_priority_job_keeps_its_head_start(
    make_settings: Any,
) -> None:
    policy = RetryPolicy(base_s=0.0, max_s=0.0, priority_head_start_s=HEAD_START)

    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            urgent = await add_prioritised_job(conn, "api.flac", "high")
            bulk = await add_prioritised_job(conn, "bulk.flac", "normal")
            job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
            assert job is not None and job.audio_id == urgent and job.priority == 1

            assert await jobs.fail(conn, job, "boom", transient=True, policy=policy) == "queued"
            retried = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
            assert retried is not None and retried.audio_id == urgent

            assert await jobs.release(conn, retried, head_start_s=HEAD_START)
            assert await claim_order(conn, 2) == [urgent, bulk]

    asyncio.run(scenario())


def test_claim_urgent_takes_only_a_waiting_high_priority_job(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            await add_prioritised_job(conn, "bulk.flac", "normal")
            assert await jobs.claim_urgent(conn, worker_id="w1", lease_s=LONG) is None

            urgent = await add_prioritised_job(conn, "api.flac", "high")
            job = await jobs.claim_urgent(conn, worker_id="w1", lease_s=LONG)
            assert job is not None and job.audio_id == urgent
            assert (await audio_row(conn, urgent))["state"] == "processing"
            assert await jobs.claim_urgent(conn, worker_id="w1", lease_s=LONG) is None

    asyncio.run(scenario())
