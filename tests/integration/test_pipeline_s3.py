"""The whole pipeline on the S3 backend: hot folder → ingest → queue → real model → bucket.

The object store is an in-process moto server on 127.0.0.1 reached through the
minio SDK; PostgreSQL is real; the watcher and the worker share one event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.storage import open_store
from pipeline.storage.s3 import S3Store
from tests.components import hotfolder_of, ingestor_of, worker_of
from tests.waiting import jobs_settled
from workers.asr import LongAudioTranscriber, build_transcriber

DATA = Path(__file__).resolve().parents[1] / "data"
JFK = DATA / "jfk.flac"
Row = dict[str, Any]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber() -> LongAudioTranscriber:
    from pipeline.config import AsrSettings

    t = build_transcriber(AsrSettings(), metrics=Metrics())
    t.load()
    return t


def s3_settings(make_settings: Any, endpoint: str) -> Settings:
    bucket = f"ai2text-{uuid.uuid4().hex[:12]}"
    settings: Settings = make_settings(
        storage={
            "endpoint": endpoint,
            "access_key": "testing",
            "secret_key": "testing",
            "secure": False,
            "bucket": bucket,
        },
        queue={"poll_interval_s": 0.5},
    )
    return settings


def download(store: S3Store, key: str) -> bytes:
    buf = io.BytesIO()
    store.download(key, buf)
    return buf.getvalue()


def test_folder_to_transcript_on_s3(
    make_settings: Any,
    db: psycopg.Connection[Row],
    moto_endpoint: str,
    transcriber: LongAudioTranscriber,
) -> None:
    settings = s3_settings(make_settings, moto_endpoint)
    store = open_store(settings.storage, settings.data_dir)
    assert isinstance(store, S3Store)
    bucket = settings.storage.bucket
    inbox = settings.watch.inbox

    async def scenario() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # as the runtime does
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            # In the inbox before the watcher starts: its start-up scan takes it, so the
            # test needs no signal that the event watch is live.
            inbox.mkdir(parents=True, exist_ok=True)
            staged = settings.data_dir / "jfk.flac.part"
            shutil.copyfile(JFK, staged)
            staged.rename(inbox / "jfk.flac")
            hotfolder = hotfolder_of(settings, ingestor_of(settings, database, store))
            worker = worker_of(settings, database, store, transcriber, worker_id="s3-test:0")
            tasks = [
                asyncio.create_task(hotfolder.run(stop)),
                asyncio.create_task(worker.run(stop)),
            ]
            await jobs_settled(settings, timeout=180, at_least=1, watch=tasks)
        finally:
            stop.set()
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await database.close()

    asyncio.run(scenario())

    audio = db.execute("SELECT * FROM audio WHERE original_name = 'jfk.flac'").fetchone()
    assert audio is not None
    assert audio["state"] == "transcribed"
    assert audio["source"] == "folder"
    jfk = JFK.read_bytes()
    assert audio["sha256"] == hashlib.sha256(jfk).hexdigest()
    job = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (audio["id"],)).fetchone()
    assert job is not None and job["state"] == "done" and job["attempts"] == 1
    transcript = db.execute(
        "SELECT * FROM transcripts WHERE audio_id = %s", (audio["id"],)
    ).fetchone()
    assert transcript is not None
    assert "country" in transcript["text"].lower()

    # The audio object, at the row's key, with the row's content.
    key = audio["storage_key"]
    info = store.stat(key)
    assert info is not None and info.size == len(jfk) == audio["size_bytes"]
    stored = download(store, key)
    assert hashlib.sha256(stored).hexdigest() == audio["sha256"]

    # The transcript document and the manifest shard, next to it in the bucket.
    assert transcript["json_key"] and transcript["manifest_key"]
    document = json.loads(store.get_bytes(transcript["json_key"]))
    assert document["audio_id"] == str(audio["id"])
    assert document["text"] == transcript["text"]
    assert document["segments"]
    shard = store.get_bytes(transcript["manifest_key"]).decode()
    lines = shard.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["audio_filepath"] == f"s3://{bucket}/{key}"
    assert entry["audio_id"] == str(audio["id"])
    assert entry["text"] == transcript["text"]
    assert entry["duration"] == pytest.approx(11.0, abs=0.2)

    # The source went to processed/, nothing else left in the inbox.
    assert (inbox / "processed" / "jfk.flac").read_bytes() == jfk
    assert not (inbox / "jfk.flac").exists()


def test_job_whose_object_vanished_from_bucket_ends_dead_after_one_attempt(
    make_settings: Any,
    db: psycopg.Connection[Row],
    moto_endpoint: str,
    transcriber: LongAudioTranscriber,
) -> None:
    settings = s3_settings(make_settings, moto_endpoint)
    store = open_store(settings.storage, settings.data_dir)
    assert isinstance(store, S3Store)

    async def scenario() -> uuid.UUID:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            ingestor = ingestor_of(settings, database, store)
            with open(JFK, "rb") as source:
                result = await ingestor.ingest(
                    Arrival("folder", "jfk.flac", JFK.as_uri(), "v1"),
                    source,
                    JFK.stat().st_size,
                )
            assert result.outcome == "accepted"
            row = db.execute(
                "SELECT storage_key FROM audio WHERE id = %s", (result.audio_id,)
            ).fetchone()
            assert row is not None
            assert store.stat(row["storage_key"]) is not None
            store.delete(row["storage_key"])
            assert store.stat(row["storage_key"]) is None

            worker = worker_of(settings, database, store, transcriber, worker_id="s3-test:1")
            tasks = [asyncio.create_task(worker.run(stop))]
            await jobs_settled(settings, timeout=60, audio_id=result.audio_id, watch=tasks)
            return result.audio_id
        finally:
            stop.set()
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await database.close()

    audio_id = asyncio.run(scenario())

    job = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None
    assert job["state"] == "dead"
    assert job["attempts"] == 1
    assert job["max_attempts"] > 1  # dead because the failure is permanent, not exhausted
    assert "missing" in job["last_error"]
    audio = db.execute("SELECT state, error FROM audio WHERE id = %s", (audio_id,)).fetchone()
    assert audio == {"state": "failed", "error": job["last_error"]}
    assert db.execute("SELECT count(*) AS n FROM transcripts").fetchone() == {"n": 0}
