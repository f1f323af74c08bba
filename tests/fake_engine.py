"""An ASR engine that hears sound, not words: deterministic, instant, no model.

It implements ``workers.engines.Engine`` like faster-whisper does, so the
long-audio layer and the worker run unchanged over it. Each stretch of sound in a
window becomes one segment (text ``SOUND_TEXT``) on the window's clock; a window
with sound is "English", a silent one gets a guess (``SILENT_GUESS``), as Whisper
guesses a language on silence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import AsrSettings
from pipeline.metrics import Metrics
from workers.asr import LongAudioTranscriber
from workers.engines import OutOfMemory, Samples, WindowRequest, WindowResult
from workers.transcription import Segment
from workers.windows import SAMPLE_RATE, quietest_frame

SOUND_TEXT = "sound"
SPEECH_LANGUAGE = "en"
SILENT_GUESS = "nn"
FRAME = SAMPLE_RATE // 10  # 100 ms
LOUD_RMS = 0.05
# Quiet stretches shorter than this belong to the sound around them.
BRIDGED_GAP_FRAMES = 5


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


@dataclass
class FakeEngine:
    """The ``Engine`` protocol without a model.

    ``oom_above``: batches larger than this run out of memory after the window's first
    segment (``OutOfMemory`` from the lazy segments, as CTranslate2 raises mid-decode).
    ``on_segment`` is called with the running count before each segment is handed out.
    """

    batch_size: int = 1
    oom_above: int | None = None
    on_segment: Callable[[int], None] | None = None
    model_name: str = "fake-sound"
    device: str = "cpu"
    compute_type: str = "none"
    loads: int = 0
    requests: list[WindowRequest] = field(default_factory=list)
    heard: list[bool] = field(default_factory=list)
    produced: int = 0

    @property
    def device_label(self) -> str:
        return self.device

    def load(self) -> None:
        self.loads += 1

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        self.requests.append(request)
        spans = sound_spans(samples)
        self.heard.append(bool(spans))
        return WindowResult(
            segments=self._segments(spans, request),
            language=SPEECH_LANGUAGE if spans else SILENT_GUESS,
            language_probability=0.9 if spans else 0.2,
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
    """The real long-audio layer over a ``FakeEngine``, cutting at the quietest frame."""
    return LongAudioTranscriber(
        engine or FakeEngine(batch_size=settings.batch_size or 1),
        settings,
        metrics=metrics or Metrics(),
        cut_finder=quietest_frame,
    )
