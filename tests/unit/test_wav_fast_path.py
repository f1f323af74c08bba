"""The pure-Python reading of PCM WAV headers finds what decoding the file with FFmpeg does."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from pipeline.config import ValidationSettings
from pipeline.errors import RejectedInput
from pipeline.ingest.validation import validate
from pipeline.ingest.wav import pcm_wav_info
from pipeline.media import IncompleteAudio, probe

DATA = Path(__file__).resolve().parents[1] / "data"
LIMIT_S = 4 * 3600.0


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def samples(n_bytes: int) -> bytes:
    return bytes((i * 37 + 11) % 251 for i in range(n_bytes))


PLAIN = {
    "s16 mono 16k": (1, 1, 16000, 16, 16000 * 2),
    "u8 mono 8k": (1, 1, 8000, 8, 8001),  # odd length: a pad byte follows
    "s24 stereo 48k": (1, 2, 48000, 24, 48000 * 6 // 3),
    "s32 mono 22050": (1, 1, 22050, 32, 22050 * 4),
    "f32 stereo 44.1k": (3, 2, 44100, 32, 44100 * 8 // 2),
    "f64 mono 16k": (3, 1, 16000, 64, 16000 * 8 // 4),
    "s16 six channels": (1, 6, 16000, 16, 16000 * 12 // 4),
}


@pytest.mark.parametrize("label", sorted(PLAIN))
def test_plain_pcm_gives_what_decoding_gives(label: str) -> None:
    tag, channels, rate, bits, n = PLAIN[label]
    wav = riff(chunk(b"fmt ", fmt_body(tag, channels, rate, bits)), chunk(b"data", samples(n)))
    fast = pcm_wav_info(io.BytesIO(wav), len(wav), max_duration_s=LIMIT_S)
    assert fast is not None
    assert fast == probe(io.BytesIO(wav), max_duration_s=LIMIT_S)


def test_chunks_around_the_data_and_a_partial_last_block_are_read_as_ffmpeg_reads_them() -> None:
    info = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 6) + b"tests\0")
    body = samples(16000 * 2 + 1)  # half a sample at the end
    wav = riff(
        chunk(b"fmt ", fmt_body(1, 1, 16000, 16)), info, chunk(b"data", body), chunk(b"id3 ", b"x")
    )
    fast = pcm_wav_info(io.BytesIO(wav), len(wav), max_duration_s=LIMIT_S)
    assert fast is not None
    assert fast == probe(io.BytesIO(wav), max_duration_s=LIMIT_S)


def test_a_real_recording_reads_the_same_both_ways() -> None:
    path = DATA / "stereo_diarization.wav"
    with path.open("rb") as f:
        size = path.stat().st_size
        fast = pcm_wav_info(f, size, max_duration_s=LIMIT_S)
        assert f.tell() == 0
        assert fast is not None
        assert fast == probe(f, max_duration_s=LIMIT_S)


@pytest.mark.parametrize(
    "label, wav",
    [
        ("ADPCM", riff(chunk(b"fmt ", fmt_body(2, 1, 16000, 4)), chunk(b"data", samples(800)))),
        (
            "extensible",
            riff(chunk(b"fmt ", fmt_body(0xFFFE, 1, 16000, 16)), chunk(b"data", samples(800))),
        ),
        (
            "unknown data length",
            riff(chunk(b"fmt ", fmt_body(1, 1, 16000, 16)))
            + b"data"
            + struct.pack("<I", 0xFFFFFFFF)
            + samples(800),
        ),
        ("no fmt chunk", riff(chunk(b"data", samples(800)))),
        (
            "data before fmt",
            riff(chunk(b"data", samples(800)), chunk(b"fmt ", fmt_body(1, 1, 8000, 16))),
        ),
        ("zero channels", riff(chunk(b"fmt ", fmt_body(1, 0, 16000, 16)), chunk(b"data", b""))),
        ("not RIFF", b"ID3\x03" + samples(2000)),
    ],
)
def test_anything_less_plain_is_left_to_the_full_probe(label: str, wav: bytes) -> None:
    assert pcm_wav_info(io.BytesIO(wav), len(wav), max_duration_s=LIMIT_S) is None, label


def test_over_the_length_limit_is_refused_as_the_full_probe_refuses_it() -> None:
    wav = riff(chunk(b"fmt ", fmt_body(1, 1, 16000, 16)), chunk(b"data", samples(16000 * 2 * 3)))
    with pytest.raises(RejectedInput) as fast:
        pcm_wav_info(io.BytesIO(wav), len(wav), max_duration_s=2.0)
    with pytest.raises(RejectedInput) as full:
        probe(io.BytesIO(wav), max_duration_s=2.0)
    assert (fast.value.code, fast.value.reason) == (full.value.code, full.value.reason)


def test_validate_still_rejects_a_truncated_pcm_wav_with_its_reason() -> None:
    wav = riff(chunk(b"fmt ", fmt_body(1, 1, 16000, 16)), chunk(b"data", samples(32000)))
    cut = wav[:20000]
    with pytest.raises(IncompleteAudio) as refused:
        validate(io.BytesIO(cut), name="cut.wav", size=len(cut), settings=ValidationSettings())
    assert refused.value.code == "wav_header"
    assert "truncated" in refused.value.reason
