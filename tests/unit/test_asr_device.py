"""The faster-whisper engine: device, compute type and batch size it chooses, and how
CTranslate2's errors are translated (no model is loaded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.config import AsrSettings
from pipeline.errors import ConfigError, TransientError
from workers.engines import OutOfMemory, WindowRequest
from workers.engines.faster_whisper import (
    FasterWhisperEngine,
    is_out_of_memory,
    translate_runtime_error,
)

CUDA_OOM = "CUDA failed with error out of memory"


@pytest.mark.parametrize(
    ("settings", "label", "compute_type", "batch_size"),
    [
        (AsrSettings(device="cuda"), "cuda:0", "float16", 16),
        (AsrSettings(device="cuda:1"), "cuda:1", "float16", 16),
        (AsrSettings(device="cuda", batch_size=1), "cuda:0", "float16", 1),
        (
            AsrSettings(device="cuda", compute_type="int8_float16", batch_size=4),
            "cuda:0",
            "int8_float16",
            4,
        ),
        (AsrSettings(device="cpu"), "cpu", "int8", 1),
        (AsrSettings(device="cpu", batch_size=8), "cpu", "int8", 8),
    ],
)
def test_cuda_means_float16_and_batches_cpu_means_int8_sequential(
    settings: AsrSettings, label: str, compute_type: str, batch_size: int
) -> None:
    engine = FasterWhisperEngine(settings)
    assert engine.device_label == label
    assert engine.compute_type == compute_type
    assert engine.batch_size == batch_size


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:one", "CUDA"])
def test_unknown_devices_are_configuration_errors(device: str) -> None:
    with pytest.raises(ConfigError, match="unknown ASR device"):
        FasterWhisperEngine(AsrSettings(device=device))


@pytest.mark.parametrize(
    ("message", "oom"),
    [
        (CUDA_OOM, True),
        ("CUDA error: cudaErrorMemoryAllocation", True),
        ("parallel_for failed: cudaErrorMemoryAllocation: out of memory", True),
        ("CUDA failed with error an illegal memory access was encountered", False),
        ("unsupported device cuda", False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_cuda_errors(message: str, oom: bool) -> None:
    assert is_out_of_memory(RuntimeError(message)) is oom
    translated = translate_runtime_error(RuntimeError(message))
    assert isinstance(translated, OutOfMemory) is oom
    assert isinstance(translated, TransientError)
    if not oom:
        assert str(translated) == f"transcription failed: {message}"


class RaisingModel:
    """Stands in for ``WhisperModel``: raises ``error`` at the call or while decoding."""

    def __init__(self, error: str, *, lazily: bool) -> None:
        self.error = error
        self.lazily = lazily

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Iterator[Any], Any]:
        if not self.lazily:
            raise RuntimeError(self.error)

        def decoding() -> Iterator[Any]:
            raise RuntimeError(self.error)
            yield  # pragma: no cover - makes this a generator

        info = type("Info", (), {"language": "en", "language_probability": 0.9})()
        return decoding(), info


@pytest.mark.parametrize("lazily", [False, True])
@pytest.mark.parametrize(
    ("message", "expected"),
    [(CUDA_OOM, OutOfMemory), ("CUDA failed with error an illegal memory access", TransientError)],
)
def test_ctranslate2_errors_leave_the_engine_as_engine_neutral_errors(
    lazily: bool, message: str, expected: type[Exception]
) -> None:
    engine = FasterWhisperEngine(AsrSettings(device="cpu"))
    engine._model = RaisingModel(message, lazily=lazily)
    samples = np.zeros(16000, dtype=np.float32)

    with pytest.raises(expected) as raised:
        list(engine.transcribe_window(samples, WindowRequest()).segments)

    assert type(raised.value) is expected
    assert isinstance(raised.value.__cause__, RuntimeError)
