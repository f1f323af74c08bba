"""The long-audio layer over any engine (workers.asr), shown with a fake engine.

Real decoding of real WAV files, real window planning; only the engine is a fake
that turns each stretch of sound into one segment.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import AsrSettings
from pipeline.errors import ConfigError, PermanentError, TransientError
from pipeline.metrics import Metrics
from tests.fake_engine import SILENT_GUESS, SOUND_TEXT, FakeEngine, fake_transcriber
from tests.sparse_audio import write_sparse_speech_wav
from workers.asr import GpuOutOfMemory, LongAudioTranscriber, build_transcriber
from workers.engines import DEFAULT_ENGINE, EngineRegistry, build_engine, default_engines
from workers.transcription import Cancelled, Segment, TranscribeOptions, Transcription
from workers.windows import Samples, quietest_frame

SPEECH_AT = [0, 55, 140]


@pytest.fixture(scope="module")
def three_speeches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 s: JFK (11 s) at 0 s, at 55 s (across the 60 s window edge) and at 140 s."""
    path = tmp_path_factory.mktemp("long") / "three.wav"
    write_sparse_speech_wav(path, 200, SPEECH_AT)
    return path


def windowed(**overrides: Any) -> AsrSettings:
    return AsrSettings(device="cpu", long_audio_s=60, window_s=60, **overrides)


def transcribe(transcriber: LongAudioTranscriber, path: Path, **options: Any) -> Transcription:
    return transcriber.transcribe(path, threading.Event(), TranscribeOptions(**options))


def gpu_oom_count(metrics: Metrics, device: str = "cpu") -> float:
    value = metrics.registry.get_sample_value("ai2text_gpu_out_of_memory_total", {"device": device})
    return value or 0.0


def starts(segments: list[Segment]) -> list[float]:
    return [s.start for s in segments]


def onsets(segments: list[Segment]) -> list[float]:
    """Where the first segment of each speech in ``SPEECH_AT`` starts."""
    return [min(s.start for s in segments if s.start >= t) for t in SPEECH_AT]


def test_windows_are_cut_by_the_injected_finder_and_segments_land_on_the_file_clock(
    three_speeches: Path,
) -> None:
    regions: list[int] = []

    def finder(region: Samples) -> int:
        regions.append(region.size)
        return quietest_frame(region)

    engine = FakeEngine()
    transcriber = LongAudioTranscriber(engine, windowed(), metrics=Metrics(), cut_finder=finder)
    whole = transcribe(fake_transcriber(AsrSettings(device="cpu")), three_speeches)

    result = transcribe(transcriber, three_speeches)

    assert regions, "the injected cut finder chose the window ends"
    assert whole.windows == 1 and result.windows == len(engine.requests) >= 3
    assert result.audio_duration_s == pytest.approx(200, abs=0.01)
    # Each speech begins where it does in the file, wherever the windows began.
    assert onsets(result.segments) == pytest.approx(onsets(whole.segments), abs=0.1)
    assert onsets(result.segments) == pytest.approx([t + 0.3 for t in SPEECH_AT], abs=0.15)
    assert starts(result.segments) == sorted(starts(result.segments))
    assert all(s.end <= 200 and s.text == SOUND_TEXT for s in result.segments)


def test_word_timestamps_move_with_their_segment_onto_the_file_clock(
    three_speeches: Path,
) -> None:
    engine = FakeEngine()
    result = transcribe(fake_transcriber(windowed(), engine), three_speeches, word_timestamps=True)

    assert all(r.word_timestamps for r in engine.requests)
    late = [w for s in result.segments if s.start > 130 for w in s.words or []]
    assert late and all(140 <= w["start"] < 152 for w in late), late
    for segment in result.segments:
        assert segment.words == [
            {"start": segment.start, "end": segment.end, "word": SOUND_TEXT, "probability": 1.0}
        ]


def test_the_prompt_goes_with_the_first_window_only(three_speeches: Path) -> None:
    engine = FakeEngine()
    transcribe(fake_transcriber(windowed(), engine), three_speeches, prompt="JFK", temperature=0.2)

    assert [r.prompt for r in engine.requests] == ["JFK"] + [None] * (len(engine.requests) - 1)
    assert {r.temperature for r in engine.requests} == {0.2}


def test_silent_windows_are_left_to_the_engine_and_windows_with_speech_get_their_language(
    tmp_path: Path,
) -> None:
    path = tmp_path / "late-speech.wav"
    write_sparse_speech_wav(path, 200, [75, 140])  # the first windows are silent
    engine = FakeEngine()

    result = transcribe(fake_transcriber(windowed(), engine), path)

    first_heard = engine.heard.index(True)
    assert first_heard >= 1 and len(engine.requests) > first_heard + 1
    asked = [r.language for r in engine.requests]
    # No speech, no detection: the engine's call. Speech: the language detected in it.
    assert asked[:first_heard] == [None] * first_heard
    assert {asked[i] for i, heard in enumerate(engine.heard) if heard} == {"en"}
    assert result.language == "en" and result.language_probability == 1.0
    # A guess on silence is no guess: it counts for nothing.
    assert {s.language for s in result.segments} == {"en"}


def test_a_language_chosen_for_the_job_is_asked_for_in_every_window(
    three_speeches: Path,
) -> None:
    engine = FakeEngine()
    result = transcribe(fake_transcriber(windowed(), engine), three_speeches, language="de")
    assert {r.language for r in engine.requests} == {"de"}
    assert result.language == "de"


def test_a_file_without_speech_has_no_language_and_no_speech(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    write_sparse_speech_wav(path, 130, [])
    engine = FakeEngine()

    result = transcribe(fake_transcriber(windowed(), engine), path)

    assert result.windows >= 2 and result.segments == []
    assert len(engine.requests) == result.windows, "silence still goes to the model"
    assert engine.detections == []
    # The engine guessed SILENT_GUESS on silence; that is not the file's language.
    assert SILENT_GUESS not in {result.language, result.detected_language}
    assert result.language is None and result.language_probability is None
    assert result.speech_s == 0 and result.covered_speech_s == 0


def test_out_of_memory_halves_the_batch_and_later_windows_keep_the_smaller_one(
    three_speeches: Path,
) -> None:
    baseline = transcribe(fake_transcriber(windowed()), three_speeches)
    metrics = Metrics()
    engine = FakeEngine(batch_size=8, oom_above=2)
    transcriber = fake_transcriber(windowed(batch_size=8), engine, metrics)

    result = transcribe(transcriber, three_speeches)

    assert engine.batches[:3] == [8, 4, 2]
    assert set(engine.batches[3:]) == {2} and len(engine.batches) == result.windows + 2
    assert gpu_oom_count(metrics) == 2
    # The window that ran out of memory after a segment was done again, not doubled.
    assert result.segments == baseline.segments
    assert transcriber.batch_size == 8, "the next file starts at the configured batch"


def test_out_of_memory_at_batch_size_one_is_a_transient_error(three_speeches: Path) -> None:
    metrics = Metrics()
    engine = FakeEngine(batch_size=2, oom_above=0)

    with pytest.raises(GpuOutOfMemory) as raised:
        transcribe(fake_transcriber(windowed(), engine, metrics), three_speeches)

    assert isinstance(raised.value, TransientError)
    assert "batch size 1 on cpu" in str(raised.value)
    assert engine.batches == [2, 1]
    assert gpu_oom_count(metrics) == 2


def test_cancelling_stops_between_segments_of_a_window(three_speeches: Path) -> None:
    cancel = threading.Event()
    engine = FakeEngine(on_segment=lambda count: cancel.set() if count == 2 else None)

    with pytest.raises(Cancelled):
        fake_transcriber(windowed(), engine).transcribe(three_speeches, cancel)

    assert engine.produced == 2, "no segment was decoded after the cancel"
    assert len(engine.requests) == 1


def test_cancelling_before_a_window_never_reaches_the_engine(three_speeches: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    engine = FakeEngine()

    with pytest.raises(Cancelled):
        fake_transcriber(windowed(), engine).transcribe(three_speeches, cancel)

    assert engine.requests == []


def test_the_engine_is_loaded_once_on_first_use(three_speeches: Path) -> None:
    engine = FakeEngine()
    transcriber = fake_transcriber(AsrSettings(device="cpu"), engine)
    transcribe(transcriber, three_speeches)
    transcribe(transcriber, three_speeches)
    assert engine.loads == 1


def test_undecodable_audio_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF not really a wave file")
    engine = FakeEngine()
    with pytest.raises(PermanentError, match="cannot be decoded"):
        transcribe(fake_transcriber(AsrSettings(device="cpu"), engine), path)
    assert engine.requests == []


def test_a_second_engine_is_chosen_by_setting_and_gets_the_long_audio_layer(
    three_speeches: Path,
) -> None:
    engines = default_engines()
    made: list[FakeEngine] = []

    def fake_factory(settings: AsrSettings, num_workers: int) -> FakeEngine:
        made.append(FakeEngine(batch_size=settings.batch_size or 1))
        return made[-1]

    engines.register("fake", fake_factory)
    transcriber = build_transcriber(
        windowed(engine="fake", batch_size=4),
        metrics=Metrics(),
        engines=engines,
        cut_finder=quietest_frame,
    )

    result = transcribe(transcriber, three_speeches)

    assert transcriber.engine is made[0]
    assert (transcriber.model_name, transcriber.batch_size) == ("fake-sound", 4)
    assert result.windows >= 3 and result.language == "en"
    for expected in SPEECH_AT:
        assert any(abs(start - expected) < 1.5 for start in starts(result.segments)), expected
    assert engines.names() == sorted([DEFAULT_ENGINE, "fake"])


def test_an_unknown_engine_is_a_configuration_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown ASR engine 'whisper-cpp'.*faster-whisper"):
        build_engine(AsrSettings(engine="whisper-cpp"))


def test_an_engine_name_is_registered_once() -> None:
    engines = EngineRegistry()
    engines.register("fake", lambda settings, num_workers: FakeEngine())
    with pytest.raises(ValueError, match="already registered"):
        engines.register("fake", lambda settings, num_workers: FakeEngine())


def test_faster_whisper_is_the_default_engine() -> None:
    from workers.engines.faster_whisper import FasterWhisperEngine

    assert AsrSettings().engine == DEFAULT_ENGINE
    engine = build_engine(AsrSettings(device="cpu"), num_workers=3)
    assert isinstance(engine, FasterWhisperEngine)
    assert engine.num_workers == 3
