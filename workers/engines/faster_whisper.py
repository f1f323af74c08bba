"""Whisper through faster-whisper (CTranslate2): the device, the model, one window.

On CUDA with a batch size above 1 each window goes through faster-whisper's
batched pipeline over VAD-cut chunks; otherwise the model decodes sequentially.
Language detection is Whisper's own (one encoder pass over 30 s of speech).
CTranslate2 reports CUDA allocation failures as ``RuntimeError`` text, which is
translated here into ``OutOfMemory``; any other runtime failure is transient.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import AsrSettings
from pipeline.errors import ConfigError, TransientError
from pipeline.models import BUNDLED_NAMES, ModelError, resolve_model
from workers.engines.base import (
    LanguageGuess,
    OutOfMemory,
    Samples,
    WindowRequest,
    WindowResult,
)
from workers.transcription import Segment

log = structlog.get_logger(__name__)


def model_files(name: str, cache_dir: Path | None) -> str:
    """A directory holding ``name``: bundled, local, or fetched from the hub when online."""
    resolved = resolve_model(name, cache_dir)
    if Path(resolved).is_dir():
        return resolved
    from faster_whisper.utils import download_model

    try:
        return str(download_model(resolved, local_files_only=True))
    except (OSError, ValueError):
        pass  # not in the hub cache yet
    try:
        return str(download_model(resolved))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"model {name!r} is not a bundled model ({', '.join(BUNDLED_NAMES)}) nor a local"
            f" directory, and cannot be fetched from the Hugging Face hub here"
            f" ({type(exc).__name__})"
        ) from exc


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


def default_batch_size(settings: AsrSettings, device: str) -> int:
    """Batched inference pays off on a GPU; on a CPU sequential decoding is as fast."""
    if settings.batch_size is not None:
        return settings.batch_size
    return 16 if device == "cuda" else 1


def is_out_of_memory(exc: BaseException) -> bool:
    """CTranslate2 reports CUDA allocation failures as RuntimeError text."""
    text = str(exc).lower()
    return "out of memory" in text or "cudaerrormemoryallocation" in text


def translate_runtime_error(exc: RuntimeError) -> TransientError:
    """The engine-neutral error for a CTranslate2 failure."""
    if is_out_of_memory(exc):
        return OutOfMemory(str(exc))
    return TransientError(f"transcription failed: {exc}")


class FasterWhisperEngine:
    """One faster-whisper model, loaded once and kept for the life of the worker."""

    def __init__(self, settings: AsrSettings, *, num_workers: int = 1) -> None:
        self.settings = settings
        self.num_workers = max(1, num_workers)
        self.model_name = settings.model
        self.device, self.device_index = resolve_device(settings.device)
        self.compute_type = resolve_compute_type(settings.compute_type, self.device)
        self.batch_size = default_batch_size(settings, self.device)
        self._model: Any = None

    @property
    def device_label(self) -> str:
        return f"cuda:{self.device_index}" if self.device == "cuda" else self.device

    def load(self) -> None:
        from faster_whisper import WhisperModel

        started = time.monotonic()
        path = model_files(self.model_name, self.settings.model_cache_dir)
        try:
            self._model = WhisperModel(
                path,
                device=self.device,
                device_index=self.device_index,
                compute_type=self.compute_type,
                cpu_threads=self._cpu_threads(),
                num_workers=self.num_workers,
                local_files_only=True,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load Whisper model {self.model_name!r}: {exc}") from exc
        log.info(
            "model loaded",
            model=self.model_name,
            device=self.device_label,
            compute_type=self.compute_type,
            batch_size=self.batch_size,
            seconds=round(time.monotonic() - started, 2),
        )

    def _cpu_threads(self) -> int:
        """``"auto"`` when built without the runtime's plan (tests, benches): plan it here."""
        if isinstance(self.settings.cpu_threads, int):
            return self.settings.cpu_threads
        from workers import sizing

        device: sizing.Device = "cuda" if self.device == "cuda" else "cpu"
        machine = sizing.Machine(sizing.usable_cores(), None, device, self.model_name)
        return sizing.plan(machine, concurrency=self.num_workers).cpu_threads

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._loaded().supported_languages)

    def detect_language(self, samples: Samples) -> LanguageGuess:
        """Whisper's language token on the first 30 s of ``samples`` (one encoder pass)."""
        model = self._loaded()
        try:
            language, probability, everything = model.detect_language(audio=samples)
        except RuntimeError as exc:
            raise translate_runtime_error(exc) from exc
        return LanguageGuess(
            language=str(language),
            probability=float(probability),
            probabilities={str(code): float(p) for code, p in everything},
        )

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        model = self._loaded()
        kwargs: dict[str, Any] = {
            "beam_size": self.settings.beam_size,
            "language": request.language,
            "initial_prompt": request.prompt,
            "vad_filter": self.settings.vad_filter,
            "word_timestamps": request.word_timestamps,
            # Used with or without a prompt: faster-whisper drops hotwords only when a
            # decoding ``prefix`` is given, which is never.
            "hotwords": self._bounded_hotwords(request.hotwords),
            "task": request.task,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            if request.batch_size > 1:
                from faster_whisper import BatchedInferencePipeline

                # A batched pipeline keeps per-call state; a fresh one per call is cheap
                # and safe when several worker threads share the model.
                pieces, info = BatchedInferencePipeline(self._model).transcribe(
                    samples, batch_size=request.batch_size, without_timestamps=False, **kwargs
                )
            else:
                pieces, info = model.transcribe(samples, **kwargs)
        except RuntimeError as exc:
            raise translate_runtime_error(exc) from exc
        return WindowResult(
            segments=_segments(pieces),
            language=info.language,
            language_probability=info.language_probability,
        )

    def _loaded(self) -> Any:
        if self._model is None:
            raise RuntimeError("the model is not loaded; call load() first")
        return self._model

    def _bounded_hotwords(self, hotwords: str | None) -> str | None:
        """``hotwords`` cut, word by word, to a quarter of the model's token budget.

        Hotwords, the previous text and the words being written share one budget of
        ``max_length`` tokens; a long vocabulary must not crowd out the transcript.
        """
        if not hotwords or not hotwords.strip():
            return None
        model = self._loaded()
        budget = model.max_length // 4
        kept: list[str] = []
        used = 0
        for word in hotwords.split():
            cost = len(model.hf_tokenizer.encode(" " + word, add_special_tokens=False).ids)
            if used + cost > budget:
                log.warning(
                    "vocabulary too long for the model; the rest is left out",
                    kept=len(kept),
                    left_out=len(hotwords.split()) - len(kept),
                )
                break
            kept.append(word)
            used += cost
        return " ".join(kept) or None


def _segments(pieces: Iterable[Any]) -> Iterator[Segment]:
    """faster-whisper's segments as ours; its generator does the decoding work."""
    try:
        for piece in pieces:
            yield _segment_from(piece)
    except RuntimeError as exc:
        raise translate_runtime_error(exc) from exc


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
