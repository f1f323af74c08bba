"""WAV bytes for tests and benchmarks: one writer, a tone, real speech, byte-distinct variants.

Every helper makes 16-bit little-endian PCM; ``wav_bytes`` wraps it in a RIFF/WAVE
header with Python's ``wave`` module. A ``variant`` changes the bytes (and so the
sha256) without changing anything a listener or the model would notice.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


def wav_bytes(pcm: bytes, *, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """``pcm`` (16-bit little-endian, interleaved) as a complete WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_wav(path: Path, pcm: bytes, *, rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    path.write_bytes(wav_bytes(pcm, rate=rate, channels=channels))
    return path


def tone_pcm(
    seconds: float, *, hz: float = 440.0, amplitude: float = 8000 / 32767, variant: int = 0
) -> bytes:
    """A sine tone; ``variant`` is stamped into the first two samples (inaudible)."""
    frames = int(seconds * SAMPLE_RATE)
    t = np.arange(frames) / SAMPLE_RATE
    samples = (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    if variant and frames >= 2:
        samples[0] = (variant & 0x7FFF) - 0x4000
        samples[1] = ((variant >> 15) & 0x7FFF) - 0x4000
    return samples.tobytes()


def speech_pcm(source: Path, *, repeat: int = 1) -> bytes:
    """The speech in ``source`` (any format PyAV reads) as 16 kHz mono PCM, ``repeat`` times."""
    from pipeline.media import decode_mono_16k

    with open(source, "rb") as f:
        audio = decode_mono_16k(f)
    return (np.clip(np.tile(audio, repeat), -1, 1) * 32767).astype("<i2").tobytes()


def trailing_silence(pcm: bytes, samples: int) -> bytes:
    """``pcm`` followed by ``samples`` silent samples: same speech, different bytes."""
    return pcm + b"\x00\x00" * samples
