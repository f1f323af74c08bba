"""Languages, coverage and vocabulary on the real model (settings.asr.model, multilingual).

``multilingual.mp3`` is the MIT licence read in English (0-29 s), then in German.
The same behaviours over a fake engine are in ``tests/unit/test_long_audio_languages.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import AsrSettings
from pipeline.errors import PermanentError
from pipeline.media import decode_mono_16k
from pipeline.metrics import Metrics
from workers.asr import LongAudioTranscriber, build_transcriber
from workers.engines import Engine, Samples, WindowRequest, WindowResult
from workers.engines.faster_whisper import FasterWhisperEngine
from workers.transcription import Segment, TranscribeOptions, Transcription
from workers.windows import vad_cut_finder

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
MULTILINGUAL = DATA / "multilingual.mp3"


def words(segments: list[Segment]) -> list[str]:
    return re.sub(r"[^\w ]+", " ", " ".join(s.text for s in segments).lower()).split()


def coverage(result: Transcription) -> float:
    assert result.speech_s is not None and result.covered_speech_s is not None
    assert result.speech_s > 0
    return result.covered_speech_s / result.speech_s


@pytest.fixture(scope="module")
def asr() -> AsrSettings:
    return AsrSettings(device="cpu")


@pytest.fixture(scope="module")
def transcriber(asr: AsrSettings) -> LongAudioTranscriber:
    built = build_transcriber(asr, metrics=Metrics())
    built.load()
    return built


@pytest.fixture(scope="module")
def mixed(transcriber: LongAudioTranscriber) -> Transcription:
    return transcriber.transcribe(MULTILINGUAL, threading.Event())


def test_the_default_model_is_multilingual(transcriber: LongAudioTranscriber) -> None:
    assert len(transcriber.languages) > 90
    assert {"en", "de", "vi", "es", "fr", "pt"} <= set(transcriber.languages)


def test_english_then_german_yields_both_halves_each_in_its_language(
    mixed: Transcription,
) -> None:
    english = [s for s in mixed.segments if s.language == "en"]
    german = [s for s in mixed.segments if s.language == "de"]

    assert english and german
    assert len(english) + len(german) == len(mixed.segments), "every segment is labelled"
    assert max(s.start for s in english) < min(s.start for s in german)
    assert 25 < min(s.start for s in german) < 35
    assert max(s.end for s in mixed.segments) <= mixed.audio_duration_s
    # Each half written in its own language, not translated, not stopped early.
    assert {"permission", "granted", "software"} <= set(words(english))
    assert {"und", "zu", "der"} <= set(words(german))
    assert not {"und", "der"} & set(words(english))
    assert coverage(mixed) >= 0.8
    # Both halves are about as long; detection was sure of whichever won.
    assert mixed.language in {"en", "de"}
    assert mixed.language_probability is not None and mixed.language_probability > 0.8
    assert mixed.detected_language is None


def test_a_requested_language_is_used_and_detection_reports_the_spoken_one(
    transcriber: LongAudioTranscriber,
) -> None:
    result = transcriber.transcribe(
        DATA / "jfk.flac", threading.Event(), TranscribeOptions(language="de")
    )

    assert result.segments and {s.language for s in result.segments} == {"de"}
    assert result.language == "de"
    # What was said is English: the mismatch is reported for the verdict to flag.
    assert result.detected_language == "en"
    assert result.detected_language_probability is not None
    assert result.detected_language_probability > 0.8
    assert result.language_probability is not None and result.language_probability < 0.2


class FirstStretchOnly:
    """The real engine, except that only the first stretch it is given is written down."""

    def __init__(self, real: Engine) -> None:
        self.real = real
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.calls += 1
        result = self.real.transcribe_window(samples, request)
        if self.calls > 1:
            result.segments = iter(())
        return result


def test_a_transcript_that_stops_halfway_shows_low_coverage(
    asr: AsrSettings, mixed: Transcription
) -> None:
    clipped_engine = FirstStretchOnly(build_transcriber(asr, metrics=Metrics()).engine)
    clipped = LongAudioTranscriber(
        clipped_engine, asr, metrics=Metrics(), cut_finder=vad_cut_finder()
    ).transcribe(MULTILINGUAL, threading.Event())

    assert clipped_engine.calls == 2
    assert {s.language for s in clipped.segments} == {"en"}
    assert clipped.speech_s == pytest.approx(mixed.speech_s)
    assert 0.3 < coverage(clipped) < 0.6


def test_an_english_only_model_refuses_german_with_the_reason(asr: AsrSettings) -> None:
    english_only = build_transcriber(asr.model_copy(update={"model": "tiny.en"}), metrics=Metrics())
    english_only.load()
    assert english_only.languages == ("en",)

    with pytest.raises(PermanentError) as raised:
        english_only.transcribe(
            DATA / "jfk.flac", threading.Event(), TranscribeOptions(language="de")
        )

    assert str(raised.value) == "model tiny.en transcribes English only; 'de' was requested"


@pytest.fixture
def hotwords_seen(transcriber: LongAudioTranscriber) -> Iterator[list[str | None]]:
    """The hotwords of every request the real engine gets during the test."""
    seen: list[str | None] = []
    real = transcriber.engine
    transcribe_window = real.transcribe_window

    def recording(samples: Samples, request: WindowRequest) -> WindowResult:
        seen.append(request.hotwords)
        return transcribe_window(samples, request)

    real.transcribe_window = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del real.transcribe_window


def test_the_vocabulary_reaches_the_model_as_hotwords(
    transcriber: LongAudioTranscriber, hotwords_seen: list[str | None]
) -> None:
    audio = DATA / "hotwords.mp3"
    plain = transcriber.transcribe(audio, threading.Event())
    guided = transcriber.transcribe(
        audio, threading.Event(), TranscribeOptions(vocabulary=("ComfyUI",))
    )

    assert hotwords_seen == [None, "ComfyUI"]
    assert "comfyui" in guided.text.lower(), guided.text
    assert "comfyui" not in plain.text.lower(), plain.text


def test_a_long_vocabulary_is_cut_to_whole_words_within_the_token_budget(
    transcriber: LongAudioTranscriber,
) -> None:
    engine = transcriber.engine
    assert isinstance(engine, FasterWhisperEngine)
    vocabulary = " ".join(f"Product{n}X" for n in range(200))

    kept = engine._bounded_hotwords(vocabulary)

    assert kept is not None and vocabulary.startswith(kept + " ")
    model = engine._loaded()
    tokens = len(model.hf_tokenizer.encode(" " + kept, add_special_tokens=False).ids)
    assert 0.8 * model.max_length // 4 < tokens <= model.max_length // 4
    assert engine._bounded_hotwords("ComfyUI  Kubernetes") == "ComfyUI Kubernetes"
    assert engine._bounded_hotwords("  ") is None


def test_the_engine_detects_the_language_of_speech_it_is_given(
    transcriber: LongAudioTranscriber,
) -> None:
    with (DATA / "jfk.flac").open("rb") as f:
        speech = decode_mono_16k(f)

    guess = transcriber.engine.detect_language(speech)

    assert guess.language == "en" and guess.probability > 0.8
    assert guess.probability_of("en") == guess.probability
    assert (guess.probability_of("de") or 0) < 0.1
