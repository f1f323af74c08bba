"""Long files in windows, batched inference and GPU out-of-memory, on the real model.

The OOM cases wrap the real model so that a call raises what CTranslate2 raises
when CUDA runs out of memory (no GPU here); everything else is the real path.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import AsrSettings, Settings
from pipeline.db.database import Database
from pipeline.errors import TransientError
from pipeline.ingest.core import Arrival, Ingestor
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore
from tests.sparse_audio import write_sparse_speech_wav
from tests.waiting import jobs_settled
from workers.asr import GpuOutOfMemory, WhisperTranscriber
from workers.worker import AsrWorker

pytestmark = pytest.mark.slow

CUDA_OOM = "CUDA failed with error out of memory"


def normalised(text: str) -> str:
    return re.sub(r"[^a-z ]+", " ", text.lower())


def jfk_lines(text: str) -> int:
    """How many whole JFK sentences the text holds: its opening and its close both count."""
    words = " ".join(normalised(text).split())
    return min(words.count("my fellow americans"), words.count("do for your country"))


@pytest.fixture(scope="module")
def three_speeches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 s: JFK at 0 s, at 55 s (across the 60 s window edge) and at 140 s."""
    path = tmp_path_factory.mktemp("long") / "three.wav"
    write_sparse_speech_wav(path, 200, [0, 55, 140])
    return path


def windowed(**overrides: Any) -> AsrSettings:
    return AsrSettings(device="cpu", long_audio_s=60, window_s=60, **overrides)


def test_long_file_is_transcribed_in_windows_with_timestamps_on_the_file_clock(
    three_speeches: Path,
) -> None:
    result = WhisperTranscriber(windowed()).transcribe(three_speeches, threading.Event())

    assert result.windows >= 3
    assert result.audio_duration_s == pytest.approx(200, abs=0.01)
    # Every utterance survives whole: the window edge at 60 s fell in a pause.
    assert jfk_lines(result.text) == 3, result.text
    starts = [s.start for s in result.segments]
    for expected in (0, 55, 140):
        assert any(abs(start - expected) < 1.5 for start in starts), (expected, starts)
    assert starts == sorted(starts)
    assert all(s.end <= 200 for s in result.segments)
    assert result.language == "en"


def test_the_same_file_under_the_long_audio_limit_is_one_window(three_speeches: Path) -> None:
    result = WhisperTranscriber(AsrSettings(device="cpu")).transcribe(
        three_speeches, threading.Event()
    )
    assert result.windows == 1
    assert jfk_lines(result.text) == 3, result.text


def test_word_timestamps_are_moved_onto_the_file_clock(three_speeches: Path) -> None:
    result = WhisperTranscriber(windowed(word_timestamps=True)).transcribe(
        three_speeches, threading.Event()
    )
    late = [w for s in result.segments for w in (s.words or []) if "country" in w["word"].lower()]
    assert any(140 < w["start"] < 152 for w in late), late


def test_batched_inference_gives_the_same_words_with_segment_timestamps(
    three_speeches: Path,
) -> None:
    transcriber = WhisperTranscriber(windowed(batch_size=4))
    result = transcriber.transcribe(three_speeches, threading.Event())
    assert transcriber.batch_size == 4
    assert jfk_lines(result.text) >= 2, result.text  # batched decoding may drop a word
    assert "country" in result.text.lower()
    # Segments carry real timestamps, not one segment per 30 s batch chunk.
    assert any(abs(s.start - 140) < 1.5 for s in result.segments), result.segments
    assert all(s.end - s.start <= 30 for s in result.segments)


class OomAbove:
    """The real batched pipeline, except that batches above ``limit`` run out of memory.

    CTranslate2 raises while the segment generator is consumed, so this does too.
    """

    def __init__(self, real: Any, limit: int) -> None:
        self.real = real
        self.limit = limit
        self.batches: list[int] = []

    def transcribe(self, audio: Any, *, batch_size: int, **kwargs: Any) -> tuple[Any, Any]:
        self.batches.append(batch_size)
        segments, info = self.real.transcribe(audio, batch_size=batch_size, **kwargs)
        if batch_size <= self.limit:
            return segments, info

        def failing() -> Iterator[Any]:
            raise RuntimeError(CUDA_OOM)
            yield  # pragma: no cover - makes this a generator

        return failing(), info


def oom_count(metrics: Metrics) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == "ai2text_gpu_out_of_memory":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_gpu_out_of_memory_halves_the_batch_and_the_job_still_finishes(
    three_speeches: Path,
) -> None:
    metrics = Metrics()
    transcriber = WhisperTranscriber(windowed(batch_size=8), metrics=metrics)
    transcriber.load()
    assert transcriber.new_batched_pipeline is not None
    oom = OomAbove(transcriber.new_batched_pipeline(), limit=2)
    transcriber.new_batched_pipeline = lambda: oom

    result = transcriber.transcribe(three_speeches, threading.Event())

    assert oom.batches[:3] == [8, 4, 2]
    # Later windows of the same file start at the batch size that worked.
    assert set(oom.batches[3:]) == {2}
    assert oom_count(metrics) == 2
    assert "country" in result.text.lower()


def test_out_of_memory_at_batch_size_one_is_a_transient_error(three_speeches: Path) -> None:
    transcriber = WhisperTranscriber(windowed(batch_size=2))
    transcriber.load()
    assert transcriber.new_batched_pipeline is not None
    oom = OomAbove(transcriber.new_batched_pipeline(), limit=0)
    transcriber.new_batched_pipeline = lambda: oom
    transcriber._model = OomAlways(transcriber._model)

    with pytest.raises(GpuOutOfMemory) as raised:
        transcriber.transcribe(three_speeches, threading.Event())
    assert isinstance(raised.value, TransientError)
    assert "batch size 1" in str(raised.value)


class OomAlways:
    """The sequential model, out of memory on every call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.calls += 1
        raise RuntimeError(CUDA_OOM)


class OomOnce:
    """The sequential model, out of memory on its first call only."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(CUDA_OOM)
        return self.real.transcribe(audio, **kwargs)  # type: ignore[no-any-return]


def test_worker_survives_gpu_out_of_memory_and_retries_the_job(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings: Settings = make_settings(
        queue={"max_attempts": 3, "backoff_base_s": 0.2, "poll_interval_s": 0.2}
    )
    metrics = Metrics()
    transcriber = WhisperTranscriber(settings.asr, metrics=metrics)
    transcriber.load()
    flaky = OomOnce(transcriber._model)
    transcriber._model = flaky
    jfk = Path(__file__).resolve().parents[1] / "data" / "jfk.flac"

    async def scenario() -> uuid.UUID:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            with jfk.open("rb") as f:
                ingested = await Ingestor(settings, database, store).ingest(
                    Arrival("folder", "jfk.flac", jfk.as_uri(), "v1"), f, jfk.stat().st_size
                )
            worker = AsrWorker(
                settings, database, store, transcriber, worker_id="oom:1:0", metrics=metrics
            )
            task = asyncio.create_task(worker.run(stop))
            await jobs_settled(settings, timeout=120, watch=[task])
            stop.set()
            await asyncio.wait_for(task, 30)
            return ingested.audio_id
        finally:
            await database.close()

    audio_id = asyncio.run(scenario())
    job = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None
    assert job["state"] == "done"
    assert job["attempts"] == 2
    assert flaky.calls == 2
    transcript = db.execute(
        "SELECT text FROM transcripts WHERE audio_id = %s", (audio_id,)
    ).fetchone()
    assert transcript is not None and "country" in transcript["text"].lower()
    worker_row = db.execute("SELECT * FROM workers WHERE worker_id = 'oom:1:0'").fetchone()
    assert worker_row is not None
    assert worker_row["jobs_done"] == 1 and worker_row["jobs_failed"] == 1
    assert worker_row["stopped_at"] is not None
    assert worker_row["device"] == "cpu" and worker_row["batch_size"] == 1
    finished = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == "ai2text_jobs_finished"
        for s in family.samples
        if s.name == "ai2text_jobs_finished_total"
    }
    assert finished == {"retry": 1.0, "done": 1.0}
    assert oom_count(metrics) == 1


class LanguageSpy:
    """The real sequential model, recording the language each window was asked for."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.languages: list[str | None] = []

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.languages.append(kwargs.get("language"))
        return self.real.transcribe(audio, **kwargs)  # type: ignore[no-any-return]


def test_language_is_kept_from_the_first_window_with_speech_not_from_silence(
    tmp_path: Path,
) -> None:
    path = tmp_path / "late-speech.wav"
    write_sparse_speech_wav(path, 200, [75, 140])  # the first 60 s window is silent
    transcriber = WhisperTranscriber(windowed())
    transcriber.load()
    spy = LanguageSpy(transcriber._model)
    transcriber._model = spy

    result = transcriber.transcribe(path, threading.Event())

    assert len(spy.languages) >= 3
    # Detected afresh until a window had speech, then pinned for every later window.
    assert spy.languages[:2] == [None, None]
    assert set(spy.languages[2:]) == {"en"}
    assert result.language == "en" and jfk_lines(result.text) == 2
