"""Segments published while a job runs: written with progress, fenced, cleared, streamed.

A real database and LISTEN hub; segments are handed to the reporter as the
transcription thread would. The real model on real speech is in tests/e2e
(test_events.py, test_openai_parity.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.routes.stream import StreamControl, _stream
from pipeline.db import jobs
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.db.partials import SEGMENTS_CHANNEL, segments_after
from tests.components import opened
from tests.integration.test_event_stream import Client, started
from tests.integration.test_progress import Clock, claimed
from tests.integration.test_queue import LONG, connections
from workers.progress import ProgressReporter
from workers.transcription import Segment, TranscribeOptions


def made(reporter: ProgressReporter, *spans: tuple[float, float, str]) -> None:
    """What the transcription thread does for each segment it produces."""
    options = reporter.attach(TranscribeOptions())
    assert options.on_segment is not None and options.on_progress is not None
    for start, end, text in spans:
        options.on_segment(Segment(start=start, end=end, text=text))
        options.on_progress(end)


async def texts(database: Database, job: jobs.ClaimedJob) -> list[tuple[Any, int, str]]:
    """(claim, number, text) of the audio's running segments."""
    async with database.connection() as conn:
        return [(s.claim, s.seq, s.text) for s in await segments_after(conn, job.audio_id)]


def test_segments_go_out_with_progress_only_while_the_lease_is_held_and_go_when_it_ends(
    make_settings: Any,
) -> None:
    async def scenario() -> None:
        async with (
            opened(make_settings()) as database,
            connections(database, 1) as (conn,),
            NotificationHub(database) as hub,
            hub.subscription(SEGMENTS_CHANNEL) as notices,
        ):
            job = await claimed(database)
            clock = Clock()
            reporter = ProgressReporter(database, job, interval_s=1.0, clock=clock)

            made(reporter, (0.0, 2.0, " And so, my fellow Americans"), (2.0, 2.5, "  "))
            assert await reporter.write_due()
            notice = await notices.wait(10)
            assert notice is not None and notice.payload == str(job.audio_id)
            # Blank text is not shown, but keeps its number.
            assert await texts(database, job) == [
                (job.lease_token, 0, "And so, my fellow Americans")
            ]

            made(reporter, (2.5, 5.0, " ask not"))
            clock.now += 0.5
            assert not await reporter.write_due()  # throttled with the progress
            assert len(await texts(database, job)) == 1
            clock.now += 0.5
            assert await reporter.write_due()
            async with database.connection() as c:
                first, later = await segments_after(c, job.audio_id)
                assert await segments_after(c, job.audio_id, first.id) == [later]
            assert (later.seq, later.start_s, later.end_s, later.text) == (2, 2.5, 5.0, "ask not")

            # Given back and claimed again: the earlier attempt's preview is gone.
            assert await jobs.release(conn, job)
            assert await texts(database, job) == []
            again = await jobs.claim(conn, worker_id="w2", lease_s=LONG)
            assert again is not None and again.id == job.id
            # The first worker, which lost the lease, publishes nothing more.
            made(reporter, (5.0, 8.0, " what your country"))
            clock.now += 2
            assert not await reporter.write_due()
            assert await texts(database, job) == []

            second = ProgressReporter(database, again, interval_s=1.0, clock=clock)
            made(second, (0.0, 3.0, " And so"))
            assert await second.write_due()
            assert await texts(database, job) == [(again.lease_token, 0, "And so")]
            # Done: the transcript is the truth from now on.
            async with database.connection() as c:
                await jobs.finish_without_transcript(c, again)
            assert await texts(database, job) == []

    asyncio.run(scenario())


def test_the_event_stream_sends_new_segments_after_progress_once_each(
    make_settings: Any,
) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database, NotificationHub(database) as hub:
            job = await claimed(database)
            stream = _stream(
                Client(),  # type: ignore[arg-type]
                StreamControl(database, hub),
                tenant="default",
                audio_id=None,
                resume=None,
                keepalive_s=5,
            )
            await started(stream)
            clock = Clock()
            reporter = ProgressReporter(database, job, interval_s=1.0, clock=clock)
            made(reporter, (0.0, 2.0, " one"), (2.0, 4.0, " two"))
            assert await reporter.write_due()
            made(reporter, (4.0, 6.0, " three"))
            clock.now += 1
            assert await reporter.write_due()

            seen: list[str] = []
            async with asyncio.timeout(20):
                async for text in stream:
                    seen += [b for b in text.split("\n\n") if b.startswith("event:")]
                    progress = sum(b.startswith("event: audio.progress") for b in seen)
                    if progress == 2 and sum(b.startswith("event: segment") for b in seen) >= 3:
                        break
            # However the two notices and reads interleave: each segment once, in order,
            # each after a progress event.
            assert seen[0].startswith("event: audio.progress")
            segments = [b.splitlines()[1] for b in seen if b.startswith("event: segment")]
            assert [json.loads(d.removeprefix("data: "))["text"] for d in segments] == [
                "one",
                "two",
                "three",
            ]
            assert json.loads(segments[-1].removeprefix("data: ")) == {
                "audio_id": str(job.audio_id),
                "index": 2,
                "start": 4.0,
                "end": 6.0,
                "text": "three",
            }
            await stream.aclose()

    asyncio.run(scenario())
