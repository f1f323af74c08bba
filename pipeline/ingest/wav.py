"""What decoding a plain PCM WAV would find, read from its header in pure Python.

For uncompressed PCM the decoder only counts bytes: the duration is the ``data``
chunk's length over the block size, and nothing inside the samples can be corrupt.
So for such a file the header alone gives exactly what ``media.probe`` finds by
opening FFmpeg and decoding every frame, at a small fraction of its cost (a flood of
small recordings spent most of its examining time in PyAV). Anything less plain (a
compressed or extensible format, odd sizes, an unknown-length ``data`` chunk, a
header that does not add up) gets ``None``: the caller probes it the full way.
"""

from __future__ import annotations

from typing import BinaryIO

from pipeline.errors import RejectedInput
from pipeline.media import AudioInfo

_PCM = 1
_IEEE_FLOAT = 3
# FFmpeg's codec name for each (format tag, bits per sample) of little-endian WAV.
_CODECS = {
    (_PCM, 8): "pcm_u8",
    (_PCM, 16): "pcm_s16le",
    (_PCM, 24): "pcm_s24le",
    (_PCM, 32): "pcm_s32le",
    (_IEEE_FLOAT, 32): "pcm_f32le",
    (_IEEE_FLOAT, 64): "pcm_f64le",
}
_MAX_CHUNKS = 64
_MAX_CHANNELS = 64
_UNKNOWN_LENGTH = (0, 0xFFFFFFFF)


def pcm_wav_info(source: BinaryIO, size: int, *, max_duration_s: float) -> AudioInfo | None:
    """``AudioInfo`` of a plain little-endian PCM WAV of ``size`` bytes, else None.

    Reads only the chunk headers (``source`` is left where it was). Raises what the
    full probe raises for the one refusal it can judge the same way: audio longer than
    ``max_duration_s`` by its header.
    """
    start = source.tell()
    try:
        source.seek(0)
        found = _fmt_and_data(source, size)
    finally:
        source.seek(start)
    if found is None:
        return None
    fmt, data_offset, data_size = found
    codec, sample_rate, channels, block_align = fmt
    # A data chunk may claim one byte more than the file holds (a missing pad byte);
    # the decoder then reads to the end of the file, and drops a partial last block.
    held = min(data_size, size - data_offset)
    if held < block_align:
        return None  # no whole sample: let the full probe say what is wrong
    claimed = (data_size // block_align) / sample_rate
    if claimed > max_duration_s:
        raise RejectedInput(
            f"audio is {claimed:.1f} s long by its header, over the limit of {max_duration_s:g} s",
            code="too_long",
        )
    return AudioInfo(
        container="wav",
        codec=codec,
        sample_rate=sample_rate,
        channels=channels,
        duration_s=(held // block_align) / sample_rate,
    )


def _fmt_and_data(source: BinaryIO, size: int) -> tuple[tuple[str, int, int, int], int, int] | None:
    """((codec, rate, channels, block align), data offset, data size), or None."""
    head = source.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt = None
    offset = 12
    for _ in range(_MAX_CHUNKS):
        chunk = source.read(8)
        if len(chunk) < 8:
            return None
        chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:8], "little")
        offset += 8
        if chunk_id == b"fmt ":
            if fmt is not None or chunk_size < 16:
                return None
            fmt = _parse_fmt(source.read(16))
            if fmt is None:
                return None
        elif chunk_id == b"data":
            if fmt is None or chunk_size in _UNKNOWN_LENGTH or offset + chunk_size > size + 1:
                return None
            return fmt, offset, chunk_size
        offset += chunk_size + (chunk_size & 1)
        if offset > size:
            return None
        source.seek(offset)
    return None


def _parse_fmt(body: bytes) -> tuple[str, int, int, int] | None:
    if len(body) < 16:
        return None
    tag = int.from_bytes(body[0:2], "little")
    channels = int.from_bytes(body[2:4], "little")
    sample_rate = int.from_bytes(body[4:8], "little")
    block_align = int.from_bytes(body[12:14], "little")
    bits = int.from_bytes(body[14:16], "little")
    codec = _CODECS.get((tag, bits))
    if codec is None or not 1 <= channels <= _MAX_CHANNELS or sample_rate <= 0:
        return None
    if block_align != channels * bits // 8:
        return None
    return codec, sample_rate, channels, block_align
