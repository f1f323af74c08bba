"""Languages, vocabulary and coverage in the long-audio layer (workers.asr), with a fake engine.

Real decoding of real WAV files, real window planning, real language runs; the
engine is ``tests.fake_engine``: sound is English, its tones are other languages.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import AsrSettings
from pipeline.errors import PermanentError
from pipeline.metrics import Metrics
from tests.fake_engine import (
    SOUND_TEXT,
    FakeEngine,
    fake_transcriber,
    write_tones_wav,
)
from tests.sparse_audio import write_sparse_speech_wav
from workers.asr import GpuOutOfMemory
from workers.engines import LanguageGuess, OutOfMemory, Samples
from workers.transcription import Cancelled, Segment, TranscribeOptions, Transcription

SWITCH_S = 13.8  # English (3 sentences), then German, in one 30 s piece of speech


@pytest.fixture(scope="module")
def english_then_german(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("languages") / "en-de.wav"
    write_tones_wav(path, 60, [(0, SWITCH_S, "en"), (SWITCH_S, 40, "de")])
    return path


def settings(**overrides: Any) -> AsrSettings:
    return AsrSettings(device="cpu", **overrides)


def transcribe(
    path: Path, engine: FakeEngine | None = None, asr: AsrSettings | None = None, **options: Any
) -> Transcription:
    transcriber = fake_transcriber(asr or settings(), engine)
    return transcriber.transcribe(path, threading.Event(), TranscribeOptions(**options))


def languages_by_time(segments: list[Segment]) -> list[str | None]:
    """The language of each segment in time order, consecutive repeats dropped."""
    out: list[str | None] = []
    for segment in segments:
        if not out or out[-1] != segment.language:
            out.append(segment.language)
    return out


def test_each_stretch_of_speech_is_transcribed_in_its_own_detected_language(
    english_then_german: Path,
) -> None:
    engine = FakeEngine()

    result = transcribe(english_then_german, engine)

    assert [r.language for r in engine.requests] == ["en", "de"]
    assert languages_by_time(result.segments) == ["en", "de"]
    for segment in result.segments:
        assert segment.language == ("en" if segment.start < SWITCH_S else "de"), segment
    assert result.windows == 1
    # German has the most speech (40 s against 13.8 s), heard without doubt.
    assert (result.language, result.language_probability) == ("de", 1.0)
    assert result.detected_language is None, "nothing was requested to differ from"


def test_one_language_costs_one_detection_per_30_s_of_speech(tmp_path: Path) -> None:
    path = tmp_path / "english.wav"
    write_tones_wav(path, 70, [(0, 70, "en")])
    engine = FakeEngine()

    result = transcribe(path, engine)

    # Sentences of 4 s and pauses of 0.6 s: pieces of 6, 6 and 3 sentences and a second,
    # each heard from 0.1 s before its first sentence to 0.1 s after its last.
    assert engine.detections == pytest.approx([27.1, 27.2, 14.9])
    assert [r.language for r in engine.requests] == ["en"]
    assert {s.language for s in result.segments} == {"en"}


def test_windows_of_long_audio_each_get_the_languages_in_them(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_tones_wav(path, 200, [(0, 20, "en"), (70, 30, "de"), (140, 40, "fr")])
    engine = FakeEngine()

    result = transcribe(path, engine, settings(long_audio_s=60, window_s=60))

    assert result.windows >= 3
    assert languages_by_time(result.segments) == ["en", "de", "fr"]
    assert all(s.language == "de" for s in result.segments if 70 <= s.start < 100)
    assert (result.language, result.language_probability) == ("fr", 1.0)
    assert result.speech_s == pytest.approx(result.covered_speech_s)


def test_a_requested_language_is_used_throughout_and_detection_still_reports_what_it_heard(
    tmp_path: Path,
) -> None:
    path = tmp_path / "en-de.wav"
    write_tones_wav(path, 90, [(0, 9.2, "en"), (9.2, 80, "de")])
    engine = FakeEngine()

    result = transcribe(path, engine, language="fr")

    assert {r.language for r in engine.requests} == {"fr"}
    assert {s.language for s in result.segments} == {"fr"}
    assert result.language == "fr"
    # One detection, on the first 30 s with speech: 2 sentences in English, 4 in German.
    assert engine.detections == [pytest.approx(27.1)]
    assert result.detected_language == "de"
    assert result.detected_language_probability == pytest.approx(4 / 6, abs=0.01)
    # How likely the requested language is, as detection heard it: not at all.
    assert result.language_probability is not None and result.language_probability < 0.01


def test_the_worker_language_applies_when_the_job_names_none(english_then_german: Path) -> None:
    engine = FakeEngine()
    result = transcribe(english_then_german, engine, settings(language="de"))
    assert {r.language for r in engine.requests} == {"de"}
    assert result.language == "de" and result.detected_language == "de"


def test_an_english_only_model_refuses_another_language_before_any_work(
    english_then_german: Path,
) -> None:
    engine = FakeEngine(languages=("en",))

    with pytest.raises(PermanentError) as raised:
        transcribe(english_then_german, engine, language="de")

    assert str(raised.value) == "model fake-sound transcribes English only; 'de' was requested"
    assert engine.requests == [] and engine.detections == []


def test_a_language_code_the_model_does_not_know_is_refused(english_then_german: Path) -> None:
    engine = FakeEngine()
    with pytest.raises(PermanentError, match=r"model fake-sound cannot transcribe 'xx'"):
        transcribe(english_then_german, engine, language="xx")
    with pytest.raises(PermanentError, match="cannot transcribe 'xx'"):
        transcribe(english_then_german, engine, settings(language="xx"))
    assert engine.requests == []


def test_an_english_only_model_transcribes_english_without_detecting(
    english_then_german: Path,
) -> None:
    engine = FakeEngine(languages=("en",))

    result = transcribe(english_then_german, engine)
    asked = transcribe(english_then_german, engine, language="EN")

    assert engine.detections == [], "a model with one language has nothing to detect"
    assert {r.language for r in engine.requests} == {"en"}
    for transcript in (result, asked):
        assert {s.language for s in transcript.segments} == {"en"}
        # Nothing measured how sure it is: not a made-up 1.0.
        assert (transcript.language, transcript.language_probability) == ("en", None)
        assert transcript.detected_language is None


def test_the_vocabulary_goes_with_every_window_and_the_prompt_with_the_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "three.wav"
    write_sparse_speech_wav(path, 200, [0, 55, 140])
    engine = FakeEngine()

    transcribe(
        path,
        engine,
        settings(long_audio_s=60, window_s=60, vocabulary=("Ignored",)),
        vocabulary=("ComfyUI", " Kubernetes "),
        prompt="JFK",
    )

    assert len(engine.requests) >= 3
    assert {r.hotwords for r in engine.requests} == {"ComfyUI Kubernetes"}
    assert [r.prompt for r in engine.requests] == ["JFK"] + [None] * (len(engine.requests) - 1)


def test_the_worker_vocabulary_applies_when_the_job_has_none(english_then_german: Path) -> None:
    engine = FakeEngine()
    transcribe(english_then_german, engine, settings(vocabulary=("Acme", "Zyx")))
    transcribe(english_then_german, engine, settings())
    assert [r.hotwords for r in engine.requests] == ["Acme Zyx", "Acme Zyx", None, None]


def test_coverage_counts_the_speech_vad_found_that_segments_cover(
    english_then_german: Path,
) -> None:
    complete = transcribe(english_then_german, FakeEngine())
    # A model that stops 5 s into each stretch it is given: most German is never written.
    clipped = transcribe(english_then_german, FakeEngine(hears_until_s=5))

    # Sentences of 4 s: 3 in English, 8 and 3.2 s in German.
    assert complete.speech_s == pytest.approx(12 + 32 + 3.2)
    assert complete.covered_speech_s == pytest.approx(complete.speech_s)
    assert clipped.speech_s == complete.speech_s
    assert clipped.covered_speech_s is not None and clipped.speech_s is not None
    assert clipped.covered_speech_s == pytest.approx(2 * 4 + 2 * 4)
    assert clipped.covered_speech_s / clipped.speech_s < 0.5
    assert all(s.text == SOUND_TEXT for s in clipped.segments)


def test_coverage_adds_up_over_the_windows_of_long_audio(tmp_path: Path) -> None:
    path = tmp_path / "three.wav"
    write_sparse_speech_wav(path, 200, [0, 55, 140])
    whole = transcribe(path)
    windowed = transcribe(path, asr=settings(long_audio_s=60, window_s=60))
    clipped = transcribe(path, FakeEngine(hears_until_s=1), settings(long_audio_s=60, window_s=60))

    assert windowed.windows >= 3
    assert whole.speech_s is not None and whole.speech_s > 3 * 6
    assert windowed.speech_s == pytest.approx(whole.speech_s, abs=0.5)
    assert windowed.covered_speech_s == pytest.approx(windowed.speech_s)
    assert clipped.covered_speech_s is not None and clipped.covered_speech_s < 10


def test_segments_never_end_after_the_audio_they_were_cut_from(tmp_path: Path) -> None:
    class Overshoots(FakeEngine):
        def transcribe_window(self, samples: Samples, request: Any) -> Any:
            result = super().transcribe_window(samples, request)
            late = samples.size / 16000 + 0.5
            result.segments = iter([Segment(start=0.0, end=late, text="x")])
            return result

    path = tmp_path / "english.wav"
    write_tones_wav(path, 20, [(0, 20, "en")])
    result = transcribe(path, Overshoots())
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 20.0)]


class DetectionFails(FakeEngine):
    """Out of memory, or cancelling, while detecting the language."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        super().__init__()
        self.cancel = cancel

    def detect_language(self, samples: Samples) -> LanguageGuess:
        if self.cancel is None:
            raise OutOfMemory("fake: out of memory detecting")
        self.cancel.set()
        return super().detect_language(samples)


def test_out_of_memory_while_detecting_is_a_transient_gpu_error(
    english_then_german: Path,
) -> None:
    metrics = Metrics()
    transcriber = fake_transcriber(settings(), DetectionFails(), metrics)
    with pytest.raises(GpuOutOfMemory, match="detecting the language"):
        transcriber.transcribe(english_then_german, threading.Event())
    value = metrics.registry.get_sample_value("ai2text_gpu_out_of_memory_total", {"device": "cpu"})
    assert value == 1


def test_cancelling_stops_between_detections(english_then_german: Path) -> None:
    cancel = threading.Event()
    engine = DetectionFails(cancel)
    with pytest.raises(Cancelled):
        fake_transcriber(settings(), engine).transcribe(english_then_german, cancel)
    assert len(engine.detections) == 1 and engine.requests == []
