"""Long audio over any engine: windows, one language per file, OOM back-off, cancelling.

Files longer than ``asr.long_audio_s`` are decoded as a stream and transcribed in
windows that end at pauses (``workers.windows``, with an injected cut finder), so
memory does not grow with the length of the file. Each window goes to the engine
(``workers.engines``); its segments come back on the window's clock and are moved
onto the file's. When the engine runs out of device memory the batch is halved and
the window tried again, down to 1, before the job is given back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import AsrSettings
from pipeline.errors import PermanentError, RejectedInput, TransientError
from pipeline.media import claimed_duration_s, iter_mono_16k
from pipeline.metrics import Metrics
from workers.engines import Engine, EngineRegistry, OutOfMemory, WindowRequest, build_engine
from workers.transcription import Cancelled, Segment, TranscribeOptions, Transcription
from workers.windows import (
    SAMPLE_RATE,
    CutFinder,
    Window,
    WindowPlan,
    split_at_silences,
    vad_cut_finder,
)

log = structlog.get_logger(__name__)


class GpuOutOfMemory(TransientError):
    """CUDA ran out of memory even at batch size 1; the job is retried later."""


@dataclass(slots=True)
class _Window:
    """The result of one window: segments on the file's clock."""

    segments: list[Segment]
    language: str | None
    language_probability: float | None


class LongAudioTranscriber:
    """Any ``Engine`` made into the worker's ``Transcriber``, for files of any length."""

    def __init__(
        self,
        engine: Engine,
        settings: AsrSettings,
        *,
        metrics: Metrics,
        cut_finder: CutFinder,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.find_cut = cut_finder
        self.plan = WindowPlan(
            whole_up_to_s=settings.long_audio_s,
            window_s=settings.window_s,
            search_s=settings.window_search_s,
        )
        self._loaded = False

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def compute_type(self) -> str:
        return self.engine.compute_type

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    @property
    def device_label(self) -> str:
        return self.engine.device_label

    def load(self) -> None:
        self.engine.load()
        self._loaded = True

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        opts = options or TranscribeOptions()
        if not self._loaded:
            self.load()
        started = time.monotonic()
        language = opts.language or self.settings.language
        language_probability: float | None = None
        segments: list[Segment] = []
        total_samples = 0
        windows = 0
        batch_size = self.engine.batch_size
        try:
            with open(audio_path, "rb") as source:
                long_from_start = self.plan.is_long(claimed_duration_s(source))
                chunks = iter_mono_16k(source, channel=opts.channel)
                for window in split_at_silences(
                    chunks, self.plan, self.find_cut, long_from_start=long_from_start
                ):
                    if cancel.is_set():
                        raise Cancelled("transcription cancelled")
                    total_samples += window.samples.size
                    if window.samples.size == 0:
                        continue
                    windows += 1
                    result, batch_size = self._window_with_retries(
                        window, opts, language, batch_size, cancel
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

    def _window_with_retries(
        self,
        window: Window,
        opts: TranscribeOptions,
        language: str | None,
        batch_size: int,
        cancel: threading.Event,
    ) -> tuple[_Window, int]:
        """Transcribe one window; halve the batch on OOM. Returns the batch that worked."""
        while True:
            try:
                return self._window(window, opts, language, batch_size, cancel), batch_size
            except OutOfMemory as exc:
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
        cancel: threading.Event,
    ) -> _Window:
        request = WindowRequest(
            language=language,
            # The prompt belongs to the start of the recording, not to every window.
            prompt=opts.prompt if window.offset_s == 0 else None,
            temperature=opts.temperature,
            word_timestamps=opts.word_timestamps or self.settings.word_timestamps,
            batch_size=batch_size,
        )
        result = self.engine.transcribe_window(window.samples, request)
        segments = []
        for piece in result.segments:  # the engine decodes as it is consumed
            if cancel.is_set():
                raise Cancelled("transcription cancelled")
            segments.append(on_file_clock(piece, window.offset_s))
        return _Window(segments, result.language, result.language_probability)


def on_file_clock(segment: Segment, offset_s: float) -> Segment:
    """A segment from a window starting ``offset_s`` into the file, moved onto its clock."""
    words: list[dict[str, Any]] | None = None
    if segment.words:
        words = [
            {**w, "start": round(w["start"] + offset_s, 3), "end": round(w["end"] + offset_s, 3)}
            for w in segment.words
        ]
    return Segment(
        start=round(segment.start + offset_s, 3),
        end=round(segment.end + offset_s, 3),
        text=segment.text,
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        compression_ratio=segment.compression_ratio,
        words=words,
    )


def build_transcriber(
    settings: AsrSettings,
    *,
    metrics: Metrics,
    num_workers: int = 1,
    engines: EngineRegistry | None = None,
    cut_finder: CutFinder | None = None,
) -> LongAudioTranscriber:
    """The engine ``asr.engine`` names under the long-audio layer; VAD finds the cuts."""
    engine = build_engine(settings, num_workers=num_workers, engines=engines)
    return LongAudioTranscriber(
        engine, settings, metrics=metrics, cut_finder=cut_finder or vad_cut_finder()
    )
