"""Long audio over any engine: windows, a language per stretch of speech, coverage.

Files longer than ``asr.long_audio_s`` are decoded as a stream and transcribed in
windows that end at pauses (``workers.windows``, with an injected cut finder), so
memory does not grow with the length of the file. In each window VAD (an injected
speech finder) finds the speech. With no language asked for, each stretch of
speech gets its own detected language and is transcribed in it
(``workers.languages``), so a file that changes language is not written in the
first one throughout; with a language asked for, every window is transcribed in it
and detection still listens to the first 30 s of speech, so a mismatch can be
flagged. A language the model cannot transcribe is refused, never replaced.

Segments come back on the window's clock and are moved onto the file's, labelled
with their language. The speech VAD found and the part of it the segments cover
are added up window by window (``workers.coverage``). When the engine runs out of
device memory the batch is halved and the stretch tried again, down to 1, before
the job is given back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import AsrSettings
from pipeline.errors import PermanentError, RejectedInput, TransientError
from pipeline.media import claimed_duration_s, iter_mono_16k
from pipeline.metrics import Metrics
from workers.coverage import Coverage
from workers.engines import (
    Engine,
    EngineRegistry,
    LanguageGuess,
    OutOfMemory,
    WindowRequest,
    build_engine,
)
from workers.languages import LanguageTally, Run, detect_pieces, pieces, runs
from workers.transcription import Cancelled, Segment, TranscribeOptions, Transcription
from workers.windows import (
    SAMPLE_RATE,
    CutFinder,
    Samples,
    Span,
    SpeechFinder,
    Window,
    WindowPlan,
    split_at_silences,
    vad_cut_finder,
    vad_speech_finder,
)

log = structlog.get_logger(__name__)

# Language detection listens to this much audio at most (what Whisper hears at once),
# from a little before the speech to a little after it.
DETECT_SAMPLES = 30 * SAMPLE_RATE
DETECT_PAD = SAMPLE_RATE // 10
_LANGUAGE_NAMES = {"en": "English"}


class GpuOutOfMemory(TransientError):
    """CUDA ran out of memory even at batch size 1; the job is retried later."""


@dataclass(slots=True)
class _File:
    """One file in progress: what was asked, and what it adds up to so far.

    Only segments grow with the file; speech is kept as two totals, not as intervals.
    """

    options: TranscribeOptions
    cancel: threading.Event
    requested: str | None
    hotwords: str | None
    word_timestamps: bool
    batch_size: int
    segments: list[Segment] = field(default_factory=list)
    tally: LanguageTally = field(default_factory=LanguageTally)
    coverage: Coverage = field(default_factory=Coverage)
    detected: LanguageGuess | None = None
    samples: int = 0
    windows: int = 0

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("transcription cancelled")

    def pause_point(self) -> None:
        """Between two windows or runs: the worker may serve someone waiting first."""
        if self.options.at_pause_point is not None:
            self.options.at_pause_point()

    def progressed(self, seconds: float) -> None:
        """Tell the worker how far into the file the transcription has got."""
        if self.options.on_progress is not None:
            self.options.on_progress(seconds)

    def produced(self, segment: Segment) -> None:
        """Show a segment as soon as it is made (a preview; the transcript comes at the end)."""
        if self.options.on_segment is not None:
            self.options.on_segment(segment)


class LongAudioTranscriber:
    """Any ``Engine`` made into the worker's ``Transcriber``, for files of any length."""

    def __init__(
        self,
        engine: Engine,
        settings: AsrSettings,
        *,
        metrics: Metrics,
        cut_finder: CutFinder,
        speech_finder: SpeechFinder | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.find_cut = cut_finder
        self.find_speech = speech_finder or vad_speech_finder()
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

    @property
    def languages(self) -> tuple[str, ...]:
        """The language codes the loaded model transcribes."""
        return self.engine.languages

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
        requested = (opts.language or self.settings.language or "").strip().lower() or None
        if requested is not None:
            self.check_language(requested)
        vocabulary = opts.vocabulary or self.settings.vocabulary
        file = _File(
            options=opts,
            cancel=cancel,
            requested=requested,
            hotwords=" ".join(word.strip() for word in vocabulary if word.strip()) or None,
            word_timestamps=opts.word_timestamps or self.settings.word_timestamps,
            batch_size=self.engine.batch_size,
        )
        try:
            with open(audio_path, "rb") as source:
                long_from_start = self.plan.is_long(claimed_duration_s(source))
                chunks = iter_mono_16k(source, channel=opts.channel)
                for window in split_at_silences(
                    chunks, self.plan, self.find_cut, long_from_start=long_from_start
                ):
                    file.check_cancel()
                    file.samples += window.samples.size
                    if window.samples.size:
                        file.windows += 1
                        self._window(window, file)
                    del window  # let its samples go before the next window is decoded
        except RejectedInput as exc:
            raise PermanentError(f"audio cannot be decoded: {exc.reason}") from exc
        if file.samples == 0:
            raise PermanentError("audio cannot be decoded: no samples")
        return self._result(file, processing_s=time.monotonic() - started)

    def check_language(self, language: str) -> None:
        """Refuse a language the model cannot transcribe (it would write another one)."""
        known = self.engine.languages
        if language in known:
            return
        if len(known) == 1:
            only = _LANGUAGE_NAMES.get(known[0], repr(known[0]))
            raise PermanentError(
                f"model {self.model_name} transcribes {only} only; {language!r} was requested"
            )
        raise PermanentError(
            f"model {self.model_name} cannot transcribe {language!r}:"
            f" not one of the {len(known)} language codes it knows"
        )

    def _result(self, file: _File, *, processing_s: float) -> Transcription:
        detected = file.detected
        if file.requested is not None:
            language: str | None = file.requested
            probability = detected.probability_of(file.requested) if detected else None
        else:
            language, probability = file.tally.main()
        return Transcription(
            language=language,
            language_probability=probability,
            audio_duration_s=file.samples / SAMPLE_RATE,
            processing_s=processing_s,
            segments=file.segments,
            windows=file.windows,
            speech_s=file.coverage.speech_s,
            covered_speech_s=file.coverage.covered_s,
            detected_language=detected.language if detected else None,
            detected_language_probability=detected.probability if detected else None,
        )

    def _window(self, window: Window, file: _File) -> None:
        """Transcribe one window run by run; count its speech and what covers it."""
        speech = self.find_speech(window.samples)
        found: list[Segment] = []
        planned = self._runs(window, speech, file)
        for index, run in enumerate(planned):
            if index:
                file.pause_point()
            segments, guessed, guessed_p = self._run_with_retries(window, run, file)
            found += segments
            if file.requested is not None:
                continue
            if run.language is not None:
                file.tally.add(run.language, run.speech_s, run.probability)
            elif segments and guessed:
                # VAD heard nothing here, yet the model wrote something: its own guess.
                file.tally.add(guessed, sum(s.end - s.start for s in segments), guessed_p)
        offset = window.offset_s
        file.coverage.add(
            ((offset + start / SAMPLE_RATE, offset + end / SAMPLE_RATE) for start, end in speech),
            ((s.start, s.end) for s in found),
        )
        file.segments += found
        file.progressed(offset + window.duration_s)
        if not window.last or len(planned) > 1:
            log.info(
                "window transcribed",
                offset_s=round(offset, 2),
                duration_s=round(window.duration_s, 2),
                segments=len(found),
                languages=[(round(offset + r.start / SAMPLE_RATE, 2), r.language) for r in planned],
            )
        if not window.last:
            file.pause_point()

    def _runs(self, window: Window, speech: list[Span], file: _File) -> list[Run]:
        """The stretches of ``window`` to transcribe, each with the language to use."""
        size = window.samples.size
        speech_s = sum(end - start for start, end in speech) / SAMPLE_RATE
        detects = len(self.engine.languages) > 1
        if file.requested is not None:
            if speech and detects and file.detected is None:
                first = pieces(speech, max_samples=DETECT_SAMPLES)[0]
                file.detected = self._detect(window.samples, first, file)
            return [Run(0, size, file.requested, None, speech_s)]
        if not speech:
            return [Run(0, size, None, None, 0.0)]  # the model's call; a guess on silence
        if not detects:
            return [Run(0, size, self.engine.languages[0], None, speech_s)]
        heard = detect_pieces(speech, lambda spans: self._detect(window.samples, spans, file))
        return runs(heard, size)

    def _detect(self, samples: Samples, spans: Sequence[Span], file: _File) -> LanguageGuess:
        file.check_cancel()
        try:
            return self.engine.detect_language(heard_in(samples, spans))
        except OutOfMemory as exc:
            self.metrics.gpu_oom.labels(self.device_label).inc()
            raise GpuOutOfMemory(
                f"GPU out of memory detecting the language on {self.device_label}: {exc}"
            ) from exc

    def _run_with_retries(
        self, window: Window, run: Run, file: _File
    ) -> tuple[list[Segment], str | None, float | None]:
        """Transcribe one run; halve the file's batch on OOM and keep the one that worked."""
        while True:
            try:
                return self._run(window, run, file)
            except OutOfMemory as exc:
                self.metrics.gpu_oom.labels(self.device_label).inc()
                if file.batch_size <= 1:
                    raise GpuOutOfMemory(
                        f"GPU out of memory even at batch size 1 on {self.device_label}: {exc}"
                    ) from exc
                file.batch_size //= 2
                log.warning(
                    "GPU out of memory; trying the window again with a smaller batch",
                    batch_size=file.batch_size,
                    offset_s=round(window.offset_s + run.start / SAMPLE_RATE, 2),
                )

    def _run(
        self, window: Window, run: Run, file: _File
    ) -> tuple[list[Segment], str | None, float | None]:
        """One run's segments on the file's clock, and the language the engine used."""
        offset_s = window.offset_s + run.start / SAMPLE_RATE
        request = WindowRequest(
            language=run.language,
            # The prompt belongs to the start of the recording; the vocabulary to all of it.
            prompt=file.options.prompt if run.start == 0 and window.offset_s == 0 else None,
            temperature=file.options.temperature,
            word_timestamps=file.word_timestamps,
            batch_size=file.batch_size,
            hotwords=file.hotwords,
            task=file.options.task,
        )
        result = self.engine.transcribe_window(window.samples[run.start : run.end], request)
        language = run.language or result.language
        length_s = (run.end - run.start) / SAMPLE_RATE
        segments = []
        for piece in result.segments:  # the engine decodes as it is consumed
            file.check_cancel()
            # Whisper's last timestamp may overshoot the audio it was given.
            within = dataclasses.replace(
                piece, start=min(piece.start, length_s), end=min(piece.end, length_s)
            )
            segments.append(on_file_clock(within, offset_s, language=language))
            file.produced(segments[-1])
            file.progressed(segments[-1].end)
        return segments, result.language, result.language_probability


def heard_in(samples: Samples, spans: Sequence[Span]) -> Samples:
    """What detection hears of ``spans``: from just before the first to just after the
    last, pauses and all (speech cut tight and joined sounds less like itself), at most
    ``DETECT_SAMPLES``."""
    start = max(0, spans[0][0] - DETECT_PAD)
    end = min(samples.size, spans[-1][1] + DETECT_PAD, start + DETECT_SAMPLES)
    return samples[start:end]


def on_file_clock(segment: Segment, offset_s: float, *, language: str | None = None) -> Segment:
    """A segment from a stretch starting ``offset_s`` into the file, moved onto its clock.

    ``language``, when given, is the language it was transcribed in.
    """
    words: list[dict[str, Any]] | None = None
    if segment.words:
        words = [
            {**w, "start": round(w["start"] + offset_s, 3), "end": round(w["end"] + offset_s, 3)}
            for w in segment.words
        ]
    return dataclasses.replace(
        segment,
        start=round(segment.start + offset_s, 3),
        end=round(segment.end + offset_s, 3),
        words=words,
        language=language or segment.language,
    )


def build_transcriber(
    settings: AsrSettings,
    *,
    metrics: Metrics,
    num_workers: int = 1,
    engines: EngineRegistry | None = None,
    cut_finder: CutFinder | None = None,
    speech_finder: SpeechFinder | None = None,
) -> LongAudioTranscriber:
    """The engine ``asr.engine`` names under the long-audio layer; VAD finds cuts and speech."""
    engine = build_engine(settings, num_workers=num_workers, engines=engines)
    return LongAudioTranscriber(
        engine,
        settings,
        metrics=metrics,
        cut_finder=cut_finder or vad_cut_finder(),
        speech_finder=speech_finder,
    )
