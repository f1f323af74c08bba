"""Long test recordings: silence with real speech (jfk.flac) at chosen offsets.

Written minute by minute, so making a 3-hour file costs no more memory than a
minute of audio; silence keeps transcription of such files short.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.media import decode_mono_16k

DATA = Path(__file__).resolve().parent / "data"
SR = 16000


def jfk_samples() -> npt.NDArray[np.float32]:
    with (DATA / "jfk.flac").open("rb") as f:
        return decode_mono_16k(f)


def write_sparse_speech_wav(path: Path, total_s: float, speech_at_s: list[float]) -> None:
    """A 16 kHz mono WAV of ``total_s`` seconds: jfk.flac at each offset, silence elsewhere."""
    speech = jfk_samples()
    total = int(total_s * SR)
    starts = [int(t * SR) for t in speech_at_s]
    block = 60 * SR
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        for begin in range(0, total, block):
            end = min(begin + block, total)
            chunk = np.zeros(end - begin, dtype=np.float32)
            for start in starts:
                lo, hi = max(begin, start), min(end, start + speech.size)
                if lo < hi:
                    chunk[lo - begin : hi - begin] = speech[lo - start : hi - start]
            out.writeframes((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
