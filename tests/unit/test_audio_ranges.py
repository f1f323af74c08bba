"""Which bytes a ``Range`` header asks for (``gateway.routes.audio_content``)."""

from __future__ import annotations

import pytest

from gateway.routes.audio_content import (
    ByteRange,
    UnsatisfiableRange,
    media_type_of,
    parse_range,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", ByteRange(0, 499)),
        ("bytes=500-999", ByteRange(500, 999)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=-200", ByteRange(800, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # more than there is: all of it
        ("bytes=900-5000", ByteRange(900, 999)),  # clipped to the end
        ("BYTES = 1 - 2", ByteRange(1, 2)),
    ],
)
def test_a_single_range_is_clipped_to_the_object(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header", [None, "", "bytes=", "bytes=-", "bytes=5-1", "bytes=0-1,5-9", "items=0-1", "x"]
)
def test_headers_not_honoured_mean_the_whole_object(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)]
)
def test_a_range_past_the_end_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, size)


def test_byte_range_length_counts_both_ends() -> None:
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize(
    ("key", "media_type"),
    [
        ("audio/sha256/ab/abc.flac", "audio/flac"),
        ("audio/sha256/ab/abc.MP3", "audio/mpeg"),
        ("audio/sha256/ab/abc.wav", "audio/wav"),
        ("audio/sha256/ab/abc.opus", "audio/ogg"),
        ("audio/sha256/ab/abc", "application/octet-stream"),
        ("audio/sha256/ab/abc.exe", "application/octet-stream"),
    ],
)
def test_the_media_type_follows_the_stored_extension(key: str, media_type: str) -> None:
    assert media_type_of(key) == media_type
