"""An ASR engine that hears sound, not words: deterministic, instant, no model.

It implements ``workers.engines.Engine`` like faster-whisper does, so the
long-audio layer and the worker run unchanged over it. Each stretch of sound in a
window becomes one segment (text ``SOUND_TEXT``) on the window's clock. Sound is
"English", except pure tones at the frequencies of ``VOICES``, each of which is
another language (``write_tones_wav`` makes such files); detection, like Whisper's,
gives the language of most of what it hears. A silent window gets a guess
(``SILENT_GUESS``), as Whisper guesses a language on silence. ``sound_speech`` is
the matching speech finder (VAD) for the long-audio layer.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import AsrSettings
from pipeline.metrics import Metrics
from workers.asr import LongAudioTranscriber
from workers.engines import LanguageGuess, OutOfMemory, Samples, WindowRequest, WindowResult
from workers.transcription import Segment
from workers.windows import SAMPLE_RATE, Span, quietest_frame

SOUND_TEXT = "sound"
SPEECH_LANGUAGE = "en"
SILENT_GUESS = "nn"
FRAME = SAMPLE_RATE // 10  # 100 ms
LOUD_RMS = 0.05
# Quiet stretches shorter than this belong to the sound around them.
BRIDGED_GAP_FRAMES = 5
# Tones (Hz) the fake hears as languages; any other sound is SPEECH_LANGUAGE.
VOICES = {3000: "de", 5000: "fr"}
LANGUAGES = (SPEECH_LANGUAGE, "de", "fr", "es", "vi", SILENT_GUESS)
# write_tones_wav: sound in sentences this long, each followed by a pause.
SENTENCE_S = 4.0
PAUSE_S = 0.6


def sound_spans(samples: Samples) -> list[tuple[float, float]]:
    """Stretches of sound, in seconds from the start of ``samples``."""
    frames = samples.size // FRAME
    if frames == 0:
        return []
    rms = np.sqrt(np.square(samples[: frames * FRAME].reshape(frames, FRAME)).mean(axis=1))
    loud = np.flatnonzero(rms > LOUD_RMS)
    spans: list[tuple[float, float]] = []
    start = previous = -1
    for index in (int(i) for i in loud):
        if start < 0:
            start = index
        elif index - previous > BRIDGED_GAP_FRAMES:
            spans.append((start * FRAME / SAMPLE_RATE, (previous + 1) * FRAME / SAMPLE_RATE))
            start = index
        previous = index
    if start >= 0:
        spans.append((start * FRAME / SAMPLE_RATE, (previous + 1) * FRAME / SAMPLE_RATE))
    return spans


def sound_speech(samples: Samples) -> list[Span]:
    """``sound_spans`` as sample offsets: the fake's VAD (``SpeechFinder``)."""
    return [(round(a * SAMPLE_RATE), round(b * SAMPLE_RATE)) for a, b in sound_spans(samples)]


def voice_of(frame: Samples) -> str:
    """The language of one loud frame: a tone in ``VOICES``, else speech."""
    spectrum = np.abs(np.fft.rfft(frame))
    peak_hz = int(np.argmax(spectrum)) * SAMPLE_RATE / frame.size
    for hz, language in VOICES.items():
        if abs(peak_hz - hz) <= 20:
            return language
    return SPEECH_LANGUAGE


def guess_language(samples: Samples) -> LanguageGuess:
    """The language of most loud frames in the first 30 s; its share is the probability."""
    heard = samples[: 30 * SAMPLE_RATE]
    frames = heard.size // FRAME
    votes: dict[str, int] = {}
    for index in range(frames):
        frame = heard[index * FRAME : (index + 1) * FRAME]
        if np.sqrt(np.square(frame).mean()) > LOUD_RMS:
            language = voice_of(frame)
            votes[language] = votes.get(language, 0) + 1
    if not votes:
        return LanguageGuess(SILENT_GUESS, 0.2, {SILENT_GUESS: 0.2})
    total = sum(votes.values())
    shares = {language: votes.get(language, 0) / total for language in LANGUAGES}
    best = max(shares, key=lambda language: (shares[language], language))
    return LanguageGuess(best, shares[best], shares)


def write_tones_wav(path: Path, total_s: float, parts: Sequence[tuple[float, float, str]]) -> None:
    """A 16 kHz mono WAV: silence, with (start_s, seconds, language) stretches of sound.

    Each stretch is the tone of its language in ``VOICES`` (noise for SPEECH_LANGUAGE),
    in "sentences" of ``SENTENCE_S`` with a ``PAUSE_S`` pause after each.
    """
    rng = np.random.default_rng(7)
    audio = np.zeros(round(total_s * SAMPLE_RATE), dtype=np.float32)
    tones = {language: hz for hz, language in VOICES.items()}
    for start_s, seconds, language in parts:
        start, size = round(start_s * SAMPLE_RATE), round(seconds * SAMPLE_RATE)
        t = np.arange(size) / SAMPLE_RATE
        if language in tones:
            sound = 0.3 * np.sin(2 * np.pi * tones[language] * t)
        else:
            sound = 0.3 * rng.standard_normal(size)
        sound[(t % (SENTENCE_S + PAUSE_S)) >= SENTENCE_S] = 0.0
        audio[start : start + size] = sound
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


@dataclass
class FakeEngine:
    """The ``Engine`` protocol without a model.

    ``oom_above``: batches larger than this run out of memory after the window's first
    segment (``OutOfMemory`` from the lazy segments, as CTranslate2 raises mid-decode).
    ``on_segment`` is called with the running count before each segment is handed out.
    ``languages``: what it can transcribe (``("en",)`` makes an English-only model).
    ``hears_until_s``: segments only for sound that starts before this many seconds
    into each stretch it is given (a model that stops early); None hears everything.
    """

    batch_size: int = 1
    oom_above: int | None = None
    on_segment: Callable[[int], None] | None = None
    model_name: str = "fake-sound"
    device: str = "cpu"
    compute_type: str = "none"
    languages: tuple[str, ...] = LANGUAGES
    hears_until_s: float | None = None
    loads: int = 0
    requests: list[WindowRequest] = field(default_factory=list)
    heard: list[bool] = field(default_factory=list)
    # The seconds of audio each language detection was given.
    detections: list[float] = field(default_factory=list)
    produced: int = 0

    @property
    def device_label(self) -> str:
        return self.device

    def load(self) -> None:
        self.loads += 1

    def detect_language(self, samples: Samples) -> LanguageGuess:
        assert len(self.languages) > 1, "an English-only model cannot detect languages"
        self.detections.append(samples.size / SAMPLE_RATE)
        return guess_language(samples)

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.requests.append(request)
        spans = sound_spans(samples)
        if self.hears_until_s is not None:
            spans = [span for span in spans if span[0] < self.hears_until_s]
        self.heard.append(bool(spans))
        guess = guess_language(samples)
        return WindowResult(
            segments=self._segments(spans, request),
            language=request.language or guess.language,
            language_probability=1.0 if request.language else guess.probability,
        )

    @property
    def batches(self) -> list[int]:
        return [r.batch_size for r in self.requests]

    def _segments(
        self, spans: list[tuple[float, float]], request: WindowRequest
    ) -> Iterator[Segment]:
        out_of_memory = self.oom_above is not None and request.batch_size > self.oom_above
        for number, (start, end) in enumerate(spans):
            if out_of_memory and number == 1:
                raise OutOfMemory(f"fake: out of memory at batch size {request.batch_size}")
            self.produced += 1
            if self.on_segment is not None:
                self.on_segment(self.produced)
            words = None
            if request.word_timestamps:
                words = [{"start": start, "end": end, "word": SOUND_TEXT, "probability": 1.0}]
            yield Segment(start=start, end=end, text=SOUND_TEXT, words=words)
        if out_of_memory and len(spans) < 2:
            raise OutOfMemory(f"fake: out of memory at batch size {request.batch_size}")


def fake_transcriber(
    settings: AsrSettings, engine: FakeEngine | None = None, metrics: Metrics | None = None
) -> LongAudioTranscriber:
    """The real long-audio layer over a ``FakeEngine``: cuts at the quietest frame, and
    speech is what ``sound_speech`` hears."""
    return LongAudioTranscriber(
        engine or FakeEngine(batch_size=settings.batch_size or 1),
        settings,
        metrics=metrics or Metrics(),
        cut_finder=quietest_frame,
        speech_finder=sound_speech,
    )
