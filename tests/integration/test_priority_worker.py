"""A worker busy with a long bulk file serves an interactive request between windows.

Real PostgreSQL, the real worker and long-audio layer over the fake engine (no model):
the long folder file is cut into windows; an API-priority job queued while it runs is
claimed at the next window boundary, transcribed and finished before the long file,
which then carries on where it stopped and loses nothing.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg

from pipeline.db.database import Database
from pipeline.ingest.core import Arrival
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, worker_of
from tests.fake_engine import fake_transcriber, write_tones_wav
from tests.waiting import jobs_settled
from workers.transcription import TranscribeOptions, Transcriber, Transcription

LONG_S = 200.0


class Recording:
    """The real transcriber, noting when each file starts and ends; the long file waits
    at its start until the test has queued the urgent request."""

    def __init__(self, real: Transcriber, long_name: str) -> None:
        self.real = real
        self.long_name = long_name
        self.model_name = real.model_name
        self.device = real.device
        self.compute_type = real.compute_type
        self.batch_size = real.batch_size
        self.device_label = real.device_label
        self.long_started = threading.Event()
        self.urgent_queued = threading.Event()
        self.log: list[str] = []

    def load(self) -> None:
        self.real.load()

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        kind = "long" if audio_path.stat().st_size > 1_000_000 else "short"
        self.log.append(f"{kind} start")
        if kind == "long":
            self.long_started.set()
            assert self.urgent_queued.wait(60), "the test never queued the urgent job"
        result = self.real.transcribe(audio_path, cancel, options)
        self.log.append(f"{kind} end")
        return result


def test_an_urgent_job_is_served_between_the_windows_of_a_long_bulk_file(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]], tmp_path: Path
) -> None:
    settings = make_settings(
        asr={"long_audio_s": 60.0, "window_s": 60.0},
        queue={"poll_interval_s": 0.2},
    )
    long_file, short_file = tmp_path / "long.wav", tmp_path / "short.wav"
    write_tones_wav(long_file, LONG_S, [(0.0, LONG_S, "en")])
    write_tones_wav(short_file, 8.0, [(0.5, 6.0, "en")])
    transcriber = Recording(fake_transcriber(settings.asr), "long.wav")
    transcriber.load()

    async def ingest(database: Database, path: Path, arrival: Arrival) -> uuid.UUID:
        ingestor = ingestor_of(settings, database, FilesystemStore(settings.data_dir / "objects"))
        with open(path, "rb") as f:
            result = await ingestor.ingest(arrival, f, path.stat().st_size)
        assert result.outcome == "accepted"
        return result.audio_id

    async def scenario() -> tuple[uuid.UUID, uuid.UUID]:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            long_id = await ingest(
                database, long_file, Arrival("folder", "long.wav", long_file.as_uri(), "v1")
            )
            store = FilesystemStore(settings.data_dir / "objects")
            worker = worker_of(settings, database, store, transcriber, worker_id="test:1:0")
            task = asyncio.create_task(worker.run(stop))
            started = await asyncio.to_thread(transcriber.long_started.wait, 60)
            assert started, "the worker never started the long file"
            urgent_id = await ingest(
                database,
                short_file,
                Arrival("upload", "short.wav", f"upload://t/{uuid.uuid4()}", None, priority="high"),
            )
            transcriber.urgent_queued.set()
            await jobs_settled(settings, timeout=120, at_least=2, watch=[task])
            stop.set()
            await asyncio.wait_for(task, 30)
            return long_id, urgent_id
        finally:
            await database.close()

    long_id, urgent_id = asyncio.run(scenario())

    assert transcriber.log == ["long start", "short start", "short end", "long end"]
    rows = {
        row["audio_id"]: row
        for row in db.execute("SELECT audio_id, state, finished_at, priority FROM jobs").fetchall()
    }
    assert rows[urgent_id]["state"] == rows[long_id]["state"] == "done"
    assert rows[urgent_id]["priority"] == 1 and rows[long_id]["priority"] == 0
    assert rows[urgent_id]["finished_at"] < rows[long_id]["finished_at"]
    # The long file was finished in full after the pause: its segments reach its end.
    end = db.execute(
        "SELECT max(s.end_s) AS end_s FROM segments s JOIN transcripts t"
        " ON t.id = s.transcript_id WHERE t.audio_id = %s",
        (long_id,),
    ).fetchone()
    assert end is not None and end["end_s"] > LONG_S - 10
