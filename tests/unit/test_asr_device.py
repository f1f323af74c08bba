"""Device, compute type and batch size the worker chooses (no model is loaded)."""

from __future__ import annotations

import pytest

from pipeline.config import AsrSettings
from pipeline.errors import ConfigError
from workers.asr import WhisperTranscriber, is_out_of_memory


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
    transcriber = WhisperTranscriber(settings)
    assert transcriber.device_label == label
    assert transcriber.compute_type == compute_type
    assert transcriber.batch_size == batch_size


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:one", "CUDA"])
def test_unknown_devices_are_configuration_errors(device: str) -> None:
    with pytest.raises(ConfigError, match="unknown ASR device"):
        WhisperTranscriber(AsrSettings(device=device))


@pytest.mark.parametrize(
    ("message", "oom"),
    [
        ("CUDA failed with error out of memory", True),
        ("CUDA error: cudaErrorMemoryAllocation", True),
        ("parallel_for failed: cudaErrorMemoryAllocation: out of memory", True),
        ("CUDA failed with error an illegal memory access was encountered", False),
        ("unsupported device cuda", False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_cuda_errors(message: str, oom: bool) -> None:
    assert is_out_of_memory(RuntimeError(message)) is oom
