"""Is this acceptable audio? Checks on an already-open file, cheapest first."""

from __future__ import annotations

from pathlib import PurePath
from typing import BinaryIO

from pipeline.config import ValidationSettings
from pipeline.errors import RejectedInput
from pipeline.ingest.wav import pcm_wav_info
from pipeline.media import AudioInfo, check_wav_header, probe


def extension_of(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


def check_extension(name: str, settings: ValidationSettings) -> str:
    """Return the lower-case extension, or reject names outside the allow-list."""
    ext = extension_of(name)
    if ext not in settings.allowed_extensions:
        allowed = ", ".join(settings.allowed_extensions)
        shown = f".{ext}" if ext else "no extension"
        raise RejectedInput(
            f"file type {shown} is not accepted (accepted: {allowed})", code="extension"
        )
    return ext


def check_size(size: int, settings: ValidationSettings) -> None:
    if size == 0:
        raise RejectedInput("file is empty (0 bytes)", code="empty")
    if size > settings.max_bytes:
        raise RejectedInput(
            f"file is {size} bytes, over the limit of {settings.max_bytes} bytes",
            code="too_large",
        )


def validate(source: BinaryIO, *, name: str, size: int, settings: ValidationSettings) -> AudioInfo:
    """Run every check on ``source`` (positioned anywhere; restored to 0 after)."""
    check_extension(name, settings)
    check_size(size, settings)
    source.seek(0)
    try:
        check_wav_header(source, size)
        # Plain PCM WAV: its header says what decoding it would (see ``wav``).
        info = pcm_wav_info(source, size, max_duration_s=settings.max_duration_s) or probe(
            source, max_duration_s=settings.max_duration_s
        )
    finally:
        source.seek(0)
    if info.duration_s < settings.min_duration_s:
        raise RejectedInput(
            f"audio is {info.duration_s:.2f} s long, under the minimum of"
            f" {settings.min_duration_s:.2f} s",
            code="too_short",
        )
    return info
