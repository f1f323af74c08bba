"""The ASR worker's queue behaviour, in-process against real PostgreSQL.

These tests need some transcription, not a good one: the worker runs the real
long-audio layer and real decoding over the fake engine (``tests.fake_engine``), so
no model is loaded. The worker with the real model is in test_long_audio.py,
test_worker_faults.py and test_pipeline_s3.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.errors import TransientError
from pipeline.ingest.core import Arrival
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, worker_of
from tests.fake_engine import SOUND_TEXT, fake_transcriber
from tests.waiting import jobs_settled
from workers.transcription import TranscribeOptions, Transcriber, Transcription

DATA = Path(__file__).resolve().parents[1] / "data"


class FailsFor:
    """A transcriber, except that audio named ``doomed`` always fails transiently.

    Stands in for a storage or GPU fault that never clears, on one job only.
    """

    def __init__(self, real: Transcriber, doomed: str) -> None:
        self.real = real
        self.doomed = doomed
        self.model_name = real.model_name
        self.device = real.device
        self.compute_type = real.compute_type
        self.batch_size = real.batch_size
        self.device_label = real.device_label
        self.calls: list[str] = []
        self.doomed_at: list[float] = []

    def load(self) -> None:
        self.real.load()

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        self.calls.append(audio_path.suffix)
        if audio_path.suffix == self.doomed:
            self.doomed_at.append(time.monotonic())
            raise TransientError("storage timed out (injected)")
        return self.real.transcribe(audio_path, cancel, options)


async def _ingest_all(settings: Settings, db: Database, names: list[str]) -> dict[str, uuid.UUID]:
    store = FilesystemStore(settings.data_dir / "objects")
    ingestor = ingestor_of(settings, db, store)
    ids = {}
    for name in names:
        path = DATA / name
        with open(path, "rb") as f:
            result = await ingestor.ingest(
                Arrival("folder", name, path.as_uri(), "v1"), f, path.stat().st_size
            )
        ids[name] = result.audio_id
    return ids


def test_job_failing_transiently_backs_off_and_ends_dead_while_others_flow(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings(
        queue={
            "max_attempts": 3,
            "backoff_base_s": 0.2,
            "backoff_max_s": 1.0,
            "poll_interval_s": 0.2,
        },
    )
    transcriber = FailsFor(fake_transcriber(settings.asr), doomed=".mp3")
    transcriber.load()

    async def scenario() -> dict[str, uuid.UUID]:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            ids = await _ingest_all(settings, database, ["hotwords.mp3", "jfk.flac"])
            store = FilesystemStore(settings.data_dir / "objects")
            worker = worker_of(settings, database, store, transcriber, worker_id="test:1:0")
            task = asyncio.create_task(worker.run(stop))
            await jobs_settled(settings, timeout=120, watch=[task])
            stop.set()
            await asyncio.wait_for(task, 30)
            return ids
        finally:
            await database.close()

    ids = asyncio.run(scenario())
    doomed = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (ids["hotwords.mp3"],)).fetchone()
    assert doomed is not None
    assert doomed["state"] == "dead"
    assert doomed["attempts"] == 3
    assert "storage timed out" in doomed["last_error"]
    audio = db.execute(
        "SELECT state, error FROM audio WHERE id = %s", (ids["hotwords.mp3"],)
    ).fetchone()
    assert audio == {"state": "failed", "error": doomed["last_error"]}
    # Backed off exponentially: base (0.2 s), then 2·base, between the attempts.
    assert transcriber.calls.count(".mp3") == 3
    first, second, third = transcriber.doomed_at
    assert second - first >= 0.2
    assert third - second >= 0.4

    ok = db.execute("SELECT state FROM jobs WHERE audio_id = %s", (ids["jfk.flac"],)).fetchone()
    assert ok == {"state": "done"}
    text = db.execute(
        "SELECT text FROM transcripts WHERE audio_id = %s", (ids["jfk.flac"],)
    ).fetchone()
    expected = fake_transcriber(settings.asr).transcribe(DATA / "jfk.flac", threading.Event())
    assert SOUND_TEXT in expected.text
    assert text == {"text": expected.text}


def test_permanent_failure_is_not_retried(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings(queue={"max_attempts": 5, "poll_interval_s": 0.2})

    async def scenario() -> uuid.UUID:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            ids = await _ingest_all(settings, database, ["jfk.flac"])
            # The stored object vanishes: retrying cannot bring it back.
            store = FilesystemStore(settings.data_dir / "objects")
            row = db.execute(
                "SELECT storage_key FROM audio WHERE id = %s", (ids["jfk.flac"],)
            ).fetchone()
            assert row is not None
            store.delete(row["storage_key"])
            transcriber = fake_transcriber(settings.asr)
            worker = worker_of(settings, database, store, transcriber, worker_id="test:2:0")
            task = asyncio.create_task(worker.run(stop))
            await jobs_settled(settings, timeout=60, watch=[task])
            stop.set()
            await asyncio.wait_for(task, 30)
            return ids["jfk.flac"]
        finally:
            await database.close()

    audio_id = asyncio.run(scenario())
    job = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None
    assert job["state"] == "dead" and job["attempts"] == 1
    assert "stored audio is missing" in job["last_error"]
