"""Progress of a running job: written throttled and fenced, notified, and read back.

A real, freshly migrated database; the reporter's clock is a counter the test moves,
so throttling is checked without waiting for real time to pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from typing import Any

import pytest

from pipeline import catalog
from pipeline.db import jobs
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub, Subscription
from pipeline.metrics import Metrics
from pipeline.progress import PROGRESS_CHANNEL
from tests.components import opened
from tests.e2e.harness import REPO
from tests.integration.test_queue import LONG, add_job, connections, job_row
from tests.waiting import eventually
from workers.progress import ProgressReporter
from workers.transcription import TranscribeOptions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def claimed(database: Database) -> jobs.ClaimedJob:
    async with database.connection() as conn:
        await add_job(conn, "talk.flac")  # 11 s long
        job = await jobs.claim(conn, worker_id="w1", lease_s=LONG)
    assert job is not None
    return job


async def progress_of(database: Database, job: jobs.ClaimedJob) -> float | None:
    async with database.connection() as conn:
        row = await job_row(conn, job.id)
    value: float | None = row["progress_s"]
    return value


async def next_payload(sub: Subscription) -> dict[str, Any]:
    notice = await sub.wait(10)
    assert notice is not None and not notice.missed, notice
    payload: dict[str, Any] = json.loads(notice.payload)
    return payload


def test_progress_is_written_at_most_once_an_interval_and_only_forwards(make_settings: Any) -> None:
    async def scenario() -> None:
        async with (
            opened(make_settings()) as database,
            NotificationHub(database) as hub,
            hub.subscription(PROGRESS_CHANNEL) as notices,
        ):
            job = await claimed(database)
            clock, metrics = Clock(), Metrics()
            reporter = ProgressReporter(database, job, metrics=metrics, interval_s=1.0, clock=clock)

            reporter.report(2.0)
            assert await reporter.write_due()
            assert await progress_of(database, job) == 2.0
            payload = await next_payload(notices)
            assert payload["audio_id"] == str(job.audio_id)
            assert payload["tenant"] == "default"
            assert payload["progress_s"] == 2.0
            assert payload["duration_s"] == 11.0
            assert payload["progress"] == pytest.approx(2 / 11, abs=1e-3)

            reporter.report(3.0)
            reporter.report(2.5)  # an earlier point never moves progress back
            clock.now += 0.5
            assert not await reporter.write_due()  # within the interval: not yet
            assert await progress_of(database, job) == 2.0
            clock.now += 0.5
            assert await reporter.write_due()
            assert await progress_of(database, job) == 3.0
            payload = await next_payload(notices)
            assert payload["progress_s"] == 3.0
            # 3 s of audio in 1 s since the start: 8 s left at that rate.
            assert payload["eta_s"] == pytest.approx(8 / 3, abs=0.05)

            clock.now += 5
            assert not await reporter.write_due()  # nothing new: nothing written
            assert notices.get_nowait() is None
            assert metrics.audio_progress_seconds._value.get() == 3.0

    asyncio.run(scenario())


def test_a_worker_that_lost_the_lease_writes_no_progress(make_settings: Any) -> None:
    async def scenario() -> None:
        async with (
            opened(make_settings()) as database,
            connections(database, 1) as (conn,),
            NotificationHub(database) as hub,
            hub.subscription(PROGRESS_CHANNEL) as notices,
        ):
            job = await claimed(database)
            clock = Clock()
            reporter = ProgressReporter(database, job, interval_s=1.0, clock=clock)
            reporter.report(1.0)
            assert await reporter.write_due()
            await next_payload(notices)

            # Another worker took the job over (its lease ran out meanwhile).
            await conn.execute(
                "UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = %s", (job.id,)
            )
            reporter.report(4.0)
            clock.now += 2
            assert not await reporter.write_due()
            assert await progress_of(database, job) == 1.0
            reporter.report(6.0)
            clock.now += 2
            assert not await reporter.write_due()  # and never again
            assert await progress_of(database, job) == 1.0
            assert notices.get_nowait() is None

    asyncio.run(scenario())


def test_progress_reported_from_the_transcription_thread_reaches_the_database(
    make_settings: Any,
) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database:
            job = await claimed(database)
            reporter = ProgressReporter(database, job, interval_s=0.05)
            options = reporter.attach(TranscribeOptions(language="en"))
            assert options.language == "en"
            hook = options.on_progress
            assert hook is not None

            def transcribe() -> None:  # what the engine thread does, segment by segment
                for end in (0.5, 1.5, 2.5, 7.25):
                    hook(end)

            async with reporter.running():
                thread = threading.Thread(target=transcribe)
                thread.start()
                await asyncio.to_thread(thread.join)
                await eventually(
                    lambda: _equals(progress_of(database, job), 7.25),
                    timeout=10,
                    what="the last progress to be written",
                )

    asyncio.run(scenario())


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


def test_audio_rows_show_the_running_attempts_progress_and_an_estimate(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, connections(database, 1) as (conn,):
            job = await claimed(database)
            row = await catalog.get_audio(conn, tenant=None, audio_id=job.audio_id)
            assert row is not None
            assert (row["progress"], row["progress_s"], row["eta_s"]) == (None, None, None)

            # Started 10 s ago, 5.5 s of 11 s done 2 s ago: 2 more seconds at that rate.
            await conn.execute(
                "UPDATE jobs SET progress_s = 5.5, started_at = now() - interval '10 s',"
                " progress_at = now() - interval '2 s' WHERE id = %s",
                (job.id,),
            )
            row = await catalog.get_audio(conn, tenant=None, audio_id=job.audio_id)
            assert row is not None
            assert row["progress"] == 0.5
            assert row["progress_s"] == 5.5
            assert row["eta_s"] == pytest.approx(6.0, abs=0.2)
            assert "progress_elapsed_s" not in row and "progress_age_s" not in row
            listed = await catalog.list_audio(
                conn, tenant="default", filters=catalog.AudioFilter(), after=None, limit=10
            )
            assert [(r["id"], r["progress"]) for r in listed] == [(job.audio_id, 0.5)]
            assert listed[0]["eta_s"] == pytest.approx(6.0, abs=0.2)

            # Given back and claimed again: the earlier attempt's progress is not this one's.
            assert await jobs.release(conn, job)
            again = await jobs.claim(conn, worker_id="w2", lease_s=LONG)
            assert again is not None and again.id == job.id
            row = await catalog.get_audio(conn, tenant=None, audio_id=job.audio_id)
            assert row is not None
            assert (row["state"], row["progress"], row["eta_s"]) == ("processing", None, None)

    asyncio.run(scenario())


def test_ls_and_show_print_the_progress_of_running_audio(
    make_settings: Any, database_url: str
) -> None:
    settings = make_settings()

    async def running() -> jobs.ClaimedJob:
        async with opened(settings) as database, connections(database, 1) as (conn,):
            job = await claimed(database)
            await conn.execute(
                "UPDATE jobs SET progress_s = 5.5, started_at = now() - interval '10 s',"
                " progress_at = now() - interval '2 s' WHERE id = %s",
                (job.id,),
            )
            return job

    job = asyncio.run(running())
    env = {
        **os.environ,
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(settings.data_dir),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ai2text", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )

    listed = cli("ls")
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1]
    assert row.startswith(f"{str(job.audio_id)[:8]}  processing 50%  "), listed.stdout
    shown = cli("show", str(job.audio_id))
    assert shown.returncode == 1  # no transcript yet
    assert "state processing" in shown.stderr
    assert re.search(r"^progress 50% \(0:05\.5 of 0:11\.0\), about \d s left$", shown.stderr, re.M)
    as_json = json.loads(cli("ls", "--json").stdout)
    assert as_json[0]["progress"] == 0.5 and as_json[0]["progress_s"] == 5.5
