"""The worker under faults, in-process: a lease taken away mid-transcription, and a
database that dies between the end of a transcription and its commit."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.db.embedded import EmbeddedPostgres
from pipeline.errors import DatabaseUnavailable
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, worker_of
from tests.conftest import public_tempdir
from tests.e2e.harness import write_long_wav
from tests.waiting import eventually
from workers.asr import LongAudioTranscriber, build_transcriber
from workers.transcription import Cancelled, TranscribeOptions, Transcription

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


class Observed:
    """The real transcriber, telling the test when a transcription starts and how it ends.

    With ``hold`` set, a finished transcription waits for ``release`` before returning
    its result, so the test can break something between the end of the work and the
    commit.
    """

    def __init__(self, real: LongAudioTranscriber, *, hold: bool = False) -> None:
        self.real = real
        self.model_name = real.model_name
        self.device = real.device
        self.compute_type = real.compute_type
        self.batch_size = real.batch_size
        self.device_label = real.device_label
        self.hold = hold
        self.started = threading.Event()
        self.ended = threading.Event()
        self.release = threading.Event()
        self.outcome = ""

    def load(self) -> None:
        self.real.load()

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        self.started.set()
        try:
            result = self.real.transcribe(audio_path, cancel, options)
        except Cancelled:
            self.outcome = "cancelled"
            raise
        finally:
            self.ended.set()
        self.outcome = "completed"
        if self.hold:
            self.release.wait(timeout=300)
        return result


async def _ingest(settings: Settings, db: Database, path: Path) -> uuid.UUID:
    store = FilesystemStore(settings.data_dir / "objects")
    with open(path, "rb") as f:
        result = await ingestor_of(settings, db, store).ingest(
            Arrival("folder", path.name, path.as_uri(), "v1"), f, path.stat().st_size
        )
    return result.audio_id


async def _job(db: Database, audio_id: uuid.UUID) -> dict[str, Any]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT j.id, j.state, j.attempts, count(t.id) AS transcripts,"
            " min(t.json_key) AS json_key"
            " FROM jobs j LEFT JOIN transcripts t ON t.audio_id = j.audio_id"
            " WHERE j.audio_id = %s GROUP BY j.id",
            (audio_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


def test_a_lost_lease_cancels_the_transcription_long_before_the_next_heartbeat(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    # A lease of 10 minutes: the next extension (a third of it) is minutes away, so only
    # the per-second lease check can notice that the job was taken away.
    settings = make_settings(queue={"lease_s": 600, "poll_interval_s": 0.2})
    long_wav = tmp_path / "long.wav"
    write_long_wav(long_wav, DATA / "multilingual.mp3", repeat=3)
    transcriber = Observed(build_transcriber(settings.asr, metrics=Metrics()))
    transcriber.load()

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            audio_id = await _ingest(settings, database, long_wav)
            store = FilesystemStore(settings.data_dir / "objects")
            worker = worker_of(settings, database, store, transcriber, worker_id="test:1:0")
            task = asyncio.create_task(worker.run(stop))
            await eventually(
                transcriber.started.is_set, timeout=120, what="transcription to start", watch=[task]
            )
            # Another worker took the job over (as after a partition): a new lease token.
            db.execute(
                "UPDATE jobs SET lease_token = gen_random_uuid() WHERE audio_id = %s",
                (audio_id,),
            )
            await eventually(
                transcriber.ended.is_set, timeout=300, what="transcription to end", watch=[task]
            )
            stop.set()
            await asyncio.wait_for(task, 60)
            job = await _job(database, audio_id)
        finally:
            await database.close()
        assert transcriber.outcome == "cancelled"
        assert job["transcripts"] == 0, "the worker that lost its lease committed nothing"

    asyncio.run(scenario())


def _kill_postmaster(pgdata: Path) -> None:
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)


def test_a_transcription_finished_during_a_database_outage_is_committed_when_it_returns(
    make_settings: Any,
) -> None:
    root = public_tempdir("ai2text-db-outage-")
    try:
        settings = make_settings(
            data_dir=root / "data",
            database={"url": None, "connect_timeout_s": 1},
            queue={"lease_s": 600, "poll_interval_s": 0.2},
        )
        transcriber = Observed(build_transcriber(settings.asr, metrics=Metrics()), hold=True)
        transcriber.load()
        embedded = EmbeddedPostgres(root / "data" / "pg")
        asyncio.run(_outage_scenario(settings, embedded, transcriber))
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _outage_scenario(
    settings: Settings, embedded: EmbeddedPostgres, transcriber: Observed
) -> None:
    database = Database(settings.database, embedded)
    await database.open()
    stop = asyncio.Event()
    try:
        audio_id = await _ingest(settings, database, DATA / "jfk.flac")
        store = FilesystemStore(settings.data_dir / "objects")
        worker = worker_of(settings, database, store, transcriber, worker_id="test:1:0")
        task = asyncio.create_task(worker.run(stop))
        await eventually(
            transcriber.ended.is_set, timeout=120, what="the transcription to end", watch=[task]
        )
        assert transcriber.outcome == "completed"

        _kill_postmaster(embedded.pgdata)
        await eventually(
            lambda: not embedded.is_running(), timeout=30, what="the database to be down"
        )
        transcriber.release.set()  # the result is handed over while the database is down

        def commit_failures() -> float:
            value = worker.metrics.registry.get_sample_value(
                "ai2text_db_errors_total", {"component": "worker"}
            )
            return value or 0.0

        await eventually(
            lambda: commit_failures() >= 2,
            timeout=120,
            what="the commit to be tried again while the database is down",
            watch=[task],
        )
        database.point_at(await asyncio.to_thread(embedded.restart))

        async def done() -> dict[str, Any] | None:
            try:
                job = await _job(database, audio_id)
            except DatabaseUnavailable:
                return None
            return job if job["state"] == "done" else None

        job = await eventually(done, timeout=120, what="the job to be done", watch=[task])
        stop.set()
        await asyncio.wait_for(task, 60)
    finally:
        await database.close()
    assert job["attempts"] == 1, "a database outage spends no attempt"
    assert job["transcripts"] == 1
    assert store.stat(job["json_key"]) is not None, "the transcript's JSON was kept"
