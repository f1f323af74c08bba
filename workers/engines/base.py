"""The contract between the long-audio layer and an ASR engine.

An engine transcribes one stretch of 16 kHz mono samples at a time, and says
which language a stretch of speech is in; everything about whole files (windows,
which language each part is in, batch sizes after an out-of-memory error,
cancelling) lives above it in ``workers.asr``, written once for every engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pipeline.errors import TransientError
from workers.transcription import LoadedModel, Segment

Samples = npt.NDArray[np.float32]


class OutOfMemory(TransientError):
    """The engine's device ran out of memory at this batch size; a smaller one may fit."""


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """How to transcribe one window; ``None`` leaves the choice to the engine."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    batch_size: int = 1
    # Words and names to expect, space-separated (Whisper's "hotwords").
    hotwords: str | None = None
    # "translate" writes English whatever the language spoken (Whisper's own task).
    task: str = "transcribe"


@dataclass(slots=True)
class WindowResult:
    """One window's transcription.

    ``segments`` is lazy: the decoding happens while it is consumed, so the caller can
    stop between segments, and ``OutOfMemory`` may be raised from it. Times are on the
    window's clock (seconds from its first sample), not rounded.
    """

    segments: Iterator[Segment]
    language: str | None
    language_probability: float | None


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    """The language a stretch of speech is in, as the model hears it.

    ``probabilities`` holds what the model gave other languages too (by code), where
    it says; it may be empty.
    """

    language: str
    probability: float
    probabilities: Mapping[str, float] = field(default_factory=dict)

    def probability_of(self, language: str) -> float | None:
        """How likely ``language`` is, or None when the model did not say."""
        if language == self.language:
            return self.probability
        return self.probabilities.get(language)


class Engine(LoadedModel, Protocol):
    """One model on one device, loaded once and shared by the worker's threads."""

    @property
    def languages(self) -> tuple[str, ...]:
        """The language codes the model transcribes (one for an English-only model).

        Known once ``load()`` has run.
        """
        ...

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        """Start transcribing ``samples``; may raise ``OutOfMemory`` or ``TransientError``."""
        ...

    def detect_language(self, samples: Samples) -> LanguageGuess:
        """The language of ``samples`` (speech, at most about 30 s of it are heard).

        Only asked of a model with more than one language; may raise ``OutOfMemory``
        or ``TransientError``.
        """
        ...
