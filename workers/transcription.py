"""What a transcription is, whatever engine made it, and what the worker asks of one.

``Segment`` and ``Transcription`` are plain results on the file's clock; the
worker stores them and renders every output format from them, never from an
engine's own types. ``Transcriber`` is all the worker sees of the ASR stack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.errors import Ai2TextError


class Cancelled(Ai2TextError):
    """Transcription stopped early because the worker is shutting down or lost its lease."""


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    # Each word: {"start", "end", "word", "probability"}.
    words: list[dict[str, Any]] | None = None
    # The language this segment was transcribed in (detected per window, or requested).
    language: str | None = None
    # For split stereo: the channel it came from (0 = left); None for mixed audio.
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class Transcription:
    language: str | None
    language_probability: float | None
    audio_duration_s: float
    processing_s: float
    segments: list[Segment] = field(default_factory=list)
    windows: int = 1
    # Speech time found by VAD, and how much of it the segments cover (None: not measured).
    speech_s: float | None = None
    covered_speech_s: float | None = None
    # When a language was requested (and is ``language``): the language detection heard
    # in the first 30 s of speech, and how sure it was. None when detection did not run
    # (no language requested, no speech, or a model with one language).
    detected_language: str | None = None
    detected_language_probability: float | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def real_time_factor(self) -> float:
        return self.processing_s / self.audio_duration_s if self.audio_duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """Per-job choices (from an API upload); unset fields use the worker's settings."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    # Words and names to expect (hotwords); () uses the worker's ``asr.vocabulary``.
    vocabulary: tuple[str, ...] = ()
    # "mix" or "split" (one speaker per stereo channel); None uses ``asr.channels``.
    channels: str | None = None
    # The one channel to decode (0 = left); None mixes them. Set by ``workers.channels``
    # for each channel of a split file, never from a job's options.
    channel: int | None = None
    # Called from the transcribing thread with how far into the file it has got, in
    # seconds (the worker's ``workers.progress`` reporter); never a job's option.
    on_progress: Callable[[float], None] | None = field(default=None, compare=False, repr=False)
    # Called from the transcribing thread with each segment as it is produced (on the
    # file's clock), for live previews (``workers.progress``); never a job's option.
    on_segment: Callable[[Segment], None] | None = field(default=None, compare=False, repr=False)
    # Called from the transcribing thread at each pause point (between two windows of a
    # long file, or two stretches of speech transcribed separately), where the worker
    # may serve a waiting interactive request first; never a job's option.
    at_pause_point: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    # "translate": Whisper writes English, whatever each stretch is spoken in.
    task: Literal["transcribe", "translate"] = "transcribe"

    @classmethod
    def from_job(cls, options: dict[str, Any]) -> TranscribeOptions:
        temperature = options.get("temperature")
        vocabulary = options.get("vocabulary") or ()
        return cls(
            language=options.get("language") or None,
            prompt=options.get("prompt") or None,
            temperature=float(temperature) if temperature is not None else None,
            word_timestamps=bool(options.get("word_timestamps", False)),
            vocabulary=tuple(str(word) for word in vocabulary),
            channels=options.get("channels") or None,
            task="translate" if options.get("task") == "translate" else "transcribe",
        )


class LoadedModel(Protocol):
    """What a worker reports about the model it runs (workers table, metrics, transcripts)."""

    @property
    def model_name(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def compute_type(self) -> str: ...

    @property
    def batch_size(self) -> int:
        """The batch size each file starts with (1: no batching)."""
        ...

    @property
    def device_label(self) -> str:
        """``cpu`` or ``cuda:N``: which device, for metrics and the workers table."""
        ...

    def load(self) -> None:
        """Load the model once; a configuration problem raises ``ConfigError``."""
        ...


class Transcriber(LoadedModel, Protocol):
    """A loaded model that turns an audio file into a ``Transcription``."""

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription: ...


class DelegatingTranscriber:
    """A ``Transcriber`` that reports, loads and transcribes through ``inner``.

    Wrappers subclass it and override only what they change.
    """

    def __init__(self, inner: Transcriber) -> None:
        self.inner = inner

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def compute_type(self) -> str:
        return self.inner.compute_type

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    @property
    def device_label(self) -> str:
        return self.inner.device_label

    def load(self) -> None:
        self.inner.load()

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        return self.inner.transcribe(audio_path, cancel, options)
