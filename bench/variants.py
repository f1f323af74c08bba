"""Byte-distinct copies of an audio file that decode to exactly the same samples.

The pipeline deduplicates by sha256, so every measured drop must be new bytes.
Rather than re-encoding (which changes the audio and the decoding work), a
small metadata block carrying a unique tag is added in the container's own
metadata area, which every decoder skips:

- WAV: an extra RIFF chunk (``bnch``) between ``fmt `` and ``data``;
- FLAC: an APPLICATION metadata block right after STREAMINFO;
- MP3: a TXXX frame added to the leading ID3v2 tag (or a new ID3v2.4 tag).

Both the baseline and the pipeline are measured on the same variant file, so
they do exactly the same work.
"""

from __future__ import annotations

import struct
from pathlib import Path


def make_variant(source: Path, dest: Path, tag: str) -> Path:
    """Write ``source`` to ``dest`` with ``tag`` embedded as metadata; return ``dest``."""
    data = source.read_bytes()
    payload = f"ai2text-bench:{tag}".encode()
    ext = source.suffix.lower()
    if ext == ".wav":
        out = _wav_with_chunk(data, payload)
    elif ext == ".flac":
        out = _flac_with_application_block(data, payload)
    elif ext == ".mp3":
        out = _mp3_with_txxx(data, payload)
    else:
        raise ValueError(f"no variant method for {ext} files")
    dest.write_bytes(out)
    return dest


def _wav_with_chunk(data: bytes, payload: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a little-endian RIFF/WAVE file")
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"data":
            if len(payload) % 2:
                payload += b"\0"  # RIFF chunks are word-aligned
            chunk = b"bnch" + struct.pack("<I", len(payload)) + payload
            out = data[:pos] + chunk + data[pos:]
            riff_size = struct.unpack_from("<I", data, 4)[0] + len(chunk)
            return out[:4] + struct.pack("<I", riff_size) + out[8:]
        pos += 8 + size + (size & 1)
    raise ValueError("WAV file has no data chunk")


def _flac_with_application_block(data: bytes, payload: bytes) -> bytes:
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC file")
    header = data[4]
    if header & 0x7F != 0:
        raise ValueError("FLAC file does not start with STREAMINFO")
    length = int.from_bytes(data[5:8], "big")
    end = 8 + length
    was_last = bool(header & 0x80)
    body = b"bnch" + payload  # APPLICATION block: 4-byte application id, then data
    block_header = bytes([(0x80 if was_last else 0x00) | 2]) + len(body).to_bytes(3, "big")
    streaminfo = bytes([header & 0x7F]) + data[5:end]  # no longer the last block
    return data[:4] + streaminfo + block_header + body + data[end:]


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _unsyncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _mp3_with_txxx(data: bytes, payload: bytes) -> bytes:
    frame_body = b"\x03bench\x00" + payload  # UTF-8, description "bench", value
    if data[:3] == b"ID3" and data[3] in (3, 4) and data[5] & 0xD0 == 0:
        version = data[3]
        n = len(frame_body)
        size_field = _syncsafe(n) if version == 4 else struct.pack(">I", n)
        frame = b"TXXX" + size_field + b"\0\0"
        tag_size = _unsyncsafe(data[6:10]) + len(frame) + len(frame_body)
        return data[:6] + _syncsafe(tag_size) + frame + frame_body + data[10:]
    frame = b"TXXX" + _syncsafe(len(frame_body)) + b"\0\0" + frame_body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame + data
