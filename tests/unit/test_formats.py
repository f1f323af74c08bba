"""Transcript renderings (plain text, SRT, WebVTT) and the table every surface offers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import get_args

import pytest

from pipeline.config import SubtitleSettings
from pipeline.formats import (
    FORMATS,
    Cue,
    TextFormat,
    api_formats,
    cli_formats,
    openai_formats,
    to_srt,
    to_timestamped,
    to_txt,
    to_vtt,
)

LIMITS = SubtitleSettings()

CUES = [
    Cue(0.0, 2.5, " And so my fellow Americans, "),
    Cue(2.5, 5.25, "ask not what your country can do for you,"),
    Cue(5.25, 11.0, "ask what you can do for your country."),
]

SRT_TIME = re.compile(r"^\d{2,}:\d{2}:\d{2},\d{3} --> \d{2,}:\d{2}:\d{2},\d{3}$")
VTT_TIME = re.compile(r"^\d{2,}:\d{2}:\d{2}\.\d{3} --> \d{2,}:\d{2}:\d{2}\.\d{3}$")


def test_srt_is_numbered_from_one_with_comma_timestamps() -> None:
    assert to_srt(CUES, LIMITS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nAnd so my fellow Americans,\n"
        "\n"
        "2\n00:00:02,500 --> 00:00:05,250\nask not what your country can do for you,\n"
        "\n"
        "3\n00:00:05,250 --> 00:00:11,000\nask what you can do for your country.\n"
    )


def test_srt_blocks_are_separated_by_blank_lines_and_well_formed() -> None:
    blocks = to_srt(CUES, LIMITS).rstrip("\n").split("\n\n")

    assert len(blocks) == 3
    for n, block in enumerate(blocks, start=1):
        index, timing, text = block.split("\n")
        assert index == str(n)
        assert SRT_TIME.match(timing), timing
        assert text == text.strip() and text


def test_vtt_starts_with_header_and_uses_dot_before_milliseconds() -> None:
    vtt = to_vtt(CUES, LIMITS)

    assert vtt.startswith("WEBVTT\n\n")
    timings = [line for line in vtt.splitlines() if "-->" in line]
    assert timings == [
        "00:00:00.000 --> 00:00:02.500",
        "00:00:02.500 --> 00:00:05.250",
        "00:00:05.250 --> 00:00:11.000",
    ]
    assert all(VTT_TIME.match(t) for t in timings)
    assert "," not in "".join(timings)


def test_vtt_of_no_cues_is_still_a_valid_header() -> None:
    assert to_vtt([], LIMITS).startswith("WEBVTT")


def test_timestamps_round_to_the_nearest_millisecond_half_up() -> None:
    # 3661.2345 as a double is 3661.23450000000002546..., so the nearest ms is 235.
    assert to_srt([Cue(3661.2345, 3662.0, "x")], LIMITS).splitlines()[1].startswith("01:01:01,235")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "00:00:00,000"),
        (0.0004, "00:00:00,000"),
        (0.0006, "00:00:00,001"),
        (59.9999, "00:01:00,000"),
        (61.25, "00:01:01,250"),
        (3599.9996, "01:00:00,000"),
        (3661.2344, "01:01:01,234"),
        (3661.2346, "01:01:01,235"),
    ],
)
def test_timestamps_round_to_milliseconds_and_carry_into_larger_units(
    seconds: float, expected: str
) -> None:
    timing = to_srt([Cue(seconds, seconds, "x")], LIMITS).splitlines()[1]

    assert timing == f"{expected} --> {expected}"


def test_negative_times_are_clamped_to_zero() -> None:
    assert to_srt([Cue(-0.5, 1.0, "x")], LIMITS).splitlines()[1] == "00:00:00,000 --> 00:00:01,000"


def test_hours_above_99_are_written_in_full() -> None:
    start = 100 * 3600 + 0.5
    end = 123 * 3600 + 4 * 60 + 5.006

    endless = SubtitleSettings(max_cue_s=100_000)  # the cue may last all 23 hours

    assert to_srt([Cue(start, end, "long")], endless).splitlines()[1] == (
        "100:00:00,500 --> 123:04:05,006"
    )
    assert "100:00:00.500 --> 123:04:05.006" in to_vtt([Cue(start, end, "long")], endless)


def test_txt_joins_stripped_segment_texts_one_per_line() -> None:
    assert to_txt(CUES, LIMITS) == (
        "And so my fellow Americans,\n"
        "ask not what your country can do for you,\n"
        "ask what you can do for your country.\n"
    )


def test_txt_skips_blank_segments() -> None:
    assert to_txt([Cue(0, 1, "  "), Cue(1, 2, "hello"), Cue(2, 3, "")], LIMITS) == "hello\n"


def test_timestamped_view_has_one_line_per_segment() -> None:
    assert to_timestamped(CUES[:2], LIMITS) == (
        "[00:00:00.000 → 00:00:02.500] And so my fellow Americans,\n"
        "[00:00:02.500 → 00:00:05.250] ask not what your country can do for you,\n"
    )


def test_each_surface_offers_the_formats_it_always_offered() -> None:
    assert cli_formats() == ("timestamps", "txt", "srt", "vtt", "json")
    assert api_formats() == ("json", "txt", "srt", "vtt")
    assert openai_formats() == ("json", "text", "srt", "vtt", "verbose_json")


def test_the_routes_accept_exactly_the_values_derived_from_the_table() -> None:
    from gateway.routes import audio, openai_compat

    assert get_args(audio.TranscriptFormat) == api_formats()
    assert get_args(openai_compat.ResponseFormat) == openai_formats()


def test_a_format_added_to_the_table_is_offered_by_the_cli_and_the_apis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ai2text.cli import build_parser

    def shout(cues: Sequence[Cue], limits: SubtitleSettings) -> str:
        return "".join(c.text.strip().upper() + "\n" for c in cues)

    monkeypatch.setitem(FORMATS, "shout", TextFormat(shout, "text/x-shout", openai=True))

    args = build_parser().parse_args(["show", "abc", "--format", "shout"])
    assert FORMATS[args.format].render(CUES[:1], LIMITS) == "AND SO MY FELLOW AMERICANS,\n"
    assert "shout" in cli_formats()
    assert "shout" in api_formats()
    assert "shout" in openai_formats()


def test_a_cli_only_format_is_not_offered_by_the_apis() -> None:
    assert not FORMATS["timestamps"].api
    assert "timestamps" not in api_formats() and "timestamps" not in openai_formats()
    assert "txt" not in openai_formats()  # OpenAI's plain text is its own "text"
