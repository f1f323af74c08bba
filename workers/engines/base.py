"""The contract between the long-audio layer and an ASR engine.

An engine transcribes one window of 16 kHz mono samples at a time; everything
about whole files (windows, the language, batch sizes after an out-of-memory
error, cancelling) lives above it in ``workers.asr``, written once for every
engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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


class Engine(LoadedModel, Protocol):
    """One model on one device, loaded once and shared by the worker's threads."""

    def transcribe_window(self, samples: Samples, request: WindowRequest) -> WindowResult:
        """Start transcribing ``samples``; may raise ``OutOfMemory`` or ``TransientError``."""
        ...
