"""Long files in windows, batched inference and GPU out-of-memory, on the real model.

The OOM cases wrap the real faster-whisper engine so that a window runs out of
memory as a GPU would (no GPU here); everything else is the real path. The same
behaviours over a fake engine, without a model, are in
``tests/unit/test_long_audio_layer.py``.
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
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, worker_of
from tests.sparse_audio import write_sparse_speech_wav
from tests.waiting import jobs_settled
from workers.asr import LongAudioTranscriber, build_transcriber
from workers.engines import Engine, OutOfMemory, Samples, WindowRequest, WindowResult, build_engine
from workers.windows import vad_cut_finder

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


def real(settings: AsrSettings) -> LongAudioTranscriber:
    return build_transcriber(settings, metrics=Metrics())


class Wrapped:
    """A real engine with one behaviour changed by a subclass; the rest passes through."""

    def __init__(self, real: Engine) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def over(engine: Engine, settings: AsrSettings, metrics: Metrics | None = None) -> Any:
    """The long-audio layer over a wrapped engine, cutting at pauses as the worker does."""
    return LongAudioTranscriber(
        engine, settings, metrics=metrics or Metrics(), cut_finder=vad_cut_finder()
    )


def test_long_file_is_transcribed_in_windows_with_timestamps_on_the_file_clock(
    three_speeches: Path,
) -> None:
    result = real(windowed()).transcribe(three_speeches, threading.Event())

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
    result = real(AsrSettings(device="cpu")).transcribe(three_speeches, threading.Event())
    assert result.windows == 1
    assert jfk_lines(result.text) == 3, result.text


def test_word_timestamps_are_moved_onto_the_file_clock(three_speeches: Path) -> None:
    result = real(windowed(word_timestamps=True)).transcribe(three_speeches, threading.Event())
    late = [w for s in result.segments for w in (s.words or []) if "country" in w["word"].lower()]
    assert any(140 < w["start"] < 152 for w in late), late


def test_batched_inference_gives_the_same_words_with_segment_timestamps(
    three_speeches: Path,
) -> None:
    transcriber = real(windowed(batch_size=4))
    result = transcriber.transcribe(three_speeches, threading.Event())
    assert transcriber.batch_size == 4
    assert jfk_lines(result.text) >= 2, result.text  # batched decoding may drop a word
    assert "country" in result.text.lower()
    # Segments carry real timestamps, not one segment per 30 s batch chunk.
    assert any(abs(s.start - 140) < 1.5 for s in result.segments), result.segments
    assert all(s.end - s.start <= 30 for s in result.segments)


class OomAbove(Wrapped):
    """The real engine, except that batches above ``limit`` run out of memory.

    CTranslate2 raises while the segment generator is consumed, so this does too.
    """

    def __init__(self, real: Engine, limit: int) -> None:
        super().__init__(real)
        self.limit = limit
        self.batches: list[int] = []

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.batches.append(request.batch_size)
        result = self.real.transcribe_window(samples, request)
        if request.batch_size <= self.limit:
            return result

        def failing() -> Iterator[Any]:
            raise OutOfMemory(CUDA_OOM)
            yield  # pragma: no cover - makes this a generator

        return WindowResult(failing(), result.language, result.language_probability)


def oom_count(metrics: Metrics) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == "ai2text_gpu_out_of_memory":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_gpu_out_of_memory_halves_the_batch_and_the_job_still_finishes(
    three_speeches: Path,
) -> None:
    metrics = Metrics()
    oom = OomAbove(build_engine(windowed(batch_size=8)), limit=2)
    transcriber = over(oom, windowed(batch_size=8), metrics)
    transcriber.load()

    result = transcriber.transcribe(three_speeches, threading.Event())

    assert oom.batches[:3] == [8, 4, 2]
    # Later windows of the same file start at the batch size that worked.
    assert set(oom.batches[3:]) == {2}
    assert oom_count(metrics) == 2
    assert "country" in result.text.lower()


class OomOnce(Wrapped):
    """The real engine, out of memory on its first call only."""

    def __init__(self, real: Engine) -> None:
        super().__init__(real)
        self.calls = 0

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.calls += 1
        if self.calls == 1:
            raise OutOfMemory(CUDA_OOM)
        return self.real.transcribe_window(samples, request)


def test_worker_survives_gpu_out_of_memory_and_retries_the_job(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings: Settings = make_settings(
        queue={"max_attempts": 3, "backoff_base_s": 0.2, "poll_interval_s": 0.2}
    )
    metrics = Metrics()
    flaky = OomOnce(build_engine(settings.asr))
    transcriber = over(flaky, settings.asr, metrics)
    transcriber.load()
    jfk = Path(__file__).resolve().parents[1] / "data" / "jfk.flac"

    async def scenario() -> uuid.UUID:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            with jfk.open("rb") as f:
                ingested = await ingestor_of(settings, database, store).ingest(
                    Arrival("folder", "jfk.flac", jfk.as_uri(), "v1"), f, jfk.stat().st_size
                )
            worker = worker_of(
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


class LanguageSpy(Wrapped):
    """The real engine, recording the language each window was asked for."""

    def __init__(self, real: Engine) -> None:
        super().__init__(real)
        self.languages: list[str | None] = []

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.languages.append(request.language)
        return self.real.transcribe_window(samples, request)


def test_silent_windows_are_left_to_the_model_and_speech_gets_its_detected_language(
    tmp_path: Path,
) -> None:
    path = tmp_path / "late-speech.wav"
    write_sparse_speech_wav(path, 200, [75, 140])  # the first 60 s window is silent
    spy = LanguageSpy(build_engine(windowed()))
    transcriber = over(spy, windowed())
    transcriber.load()

    result = transcriber.transcribe(path, threading.Event())

    assert len(spy.languages) >= 3
    # No speech: the model's own call. Speech: the language detected in it.
    assert spy.languages[0] is None
    assert "en" in spy.languages[1:] and set(spy.languages) <= {None, "en"}
    assert result.language == "en" and jfk_lines(result.text) == 2
    assert result.language_probability is not None and result.language_probability > 0.8
    assert {s.language for s in result.segments} == {"en"}
    # Coverage adds up over the windows: two speeches, each covered by its segments.
    # jfk.flac is 11 s long, with pauses: about 7 s of speech each time.
    assert result.speech_s is not None and 2 * 5 < result.speech_s < 2 * 9
    assert result.covered_speech_s is not None
    assert result.covered_speech_s / result.speech_s > 0.9
