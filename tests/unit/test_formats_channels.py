"""Renderings of split recordings: every line, cue and segment says its channel."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import SubtitleSettings
from pipeline.formats import FORMATS, Cue, cues_of, to_srt, to_timestamped, to_txt, to_vtt
from pipeline.subtitles import Word

LIMITS = SubtitleSettings()

# A call: the caller on the left (channel 0), the agent on the right (channel 1).
CALL = [
    Cue(0.3, 2.0, " Hello, I have a problem with my bill. ", 0),
    Cue(1.8, 3.1, "Let me look at that for you.", 1),
    Cue(3.5, 4.5, " Thanks.", 0),
]


def test_txt_prefixes_each_line_with_its_channel() -> None:
    assert to_txt(CALL, LIMITS) == (
        "[ch1] Hello, I have a problem with my bill.\n"
        "[ch2] Let me look at that for you.\n"
        "[ch1] Thanks.\n"
    )


def test_srt_prefixes_each_cue_text_with_its_channel() -> None:
    assert to_srt(CALL, LIMITS) == (
        # 43 characters with the label: the label counts toward the line's 42.
        "1\n00:00:00,300 --> 00:00:02,000\n[ch1] Hello, I have a problem with my\nbill.\n"
        "\n"
        "2\n00:00:01,800 --> 00:00:03,100\n[ch2] Let me look at that for you.\n"
        "\n"
        "3\n00:00:03,500 --> 00:00:04,500\n[ch1] Thanks.\n"
    )


def test_vtt_names_the_channel_as_the_cue_voice() -> None:
    assert to_vtt(CALL, LIMITS) == (
        "WEBVTT\n\n"
        "00:00:00.300 --> 00:00:02.000\n<v ch1>Hello, I have a problem with my\nbill.\n"
        "\n"
        "00:00:01.800 --> 00:00:03.100\n<v ch2>Let me look at that for you.\n"
        "\n"
        "00:00:03.500 --> 00:00:04.500\n<v ch1>Thanks.\n"
    )


def test_the_cli_lines_carry_the_channel_after_the_times() -> None:
    assert to_timestamped(CALL[1:2], LIMITS) == (
        "[00:00:01.800 → 00:00:03.100] [ch2] Let me look at that for you.\n"
    )


def test_a_blank_segment_of_a_channel_is_still_skipped_in_txt() -> None:
    assert to_txt([Cue(0, 1, "  ", 0), Cue(1, 2, "yes", 1)], LIMITS) == "[ch2] yes\n"


@pytest.mark.parametrize("name", list(FORMATS))
def test_mixed_audio_renders_exactly_as_without_channels(name: str) -> None:
    render = FORMATS[name].render
    mixed = [Cue(c.start, c.end, c.text, None) for c in CALL]
    unlabelled = [Cue(c.start, c.end, c.text) for c in CALL]

    assert render(mixed, LIMITS) == render(unlabelled, LIMITS)
    assert "ch1" not in render(mixed, LIMITS) and "<v" not in render(mixed, LIMITS)


def rows(*channels: int | None) -> list[dict[str, Any]]:
    return [
        {"idx": i, "start_s": float(i), "end_s": i + 1.0, "text": f"t{i}", "channel": channel}
        for i, channel in enumerate(channels)
    ]


def test_cues_of_stored_segments_keep_the_channel() -> None:
    assert cues_of(rows(0, 1)) == [Cue(0.0, 1.0, "t0", 0), Cue(1.0, 2.0, "t1", 1)]
    assert cues_of(rows(None)) == [Cue(0.0, 1.0, "t0")]


def test_cues_of_rows_without_a_channel_column_are_mixed() -> None:
    """Segments stored before channels existed (or by a reader that leaves it out)."""
    legacy = [{"start_s": 0.0, "end_s": 1.0, "text": "hi"}]

    assert cues_of(legacy) == [Cue(0.0, 1.0, "hi")]
    assert to_txt(cues_of(legacy), LIMITS) == "hi\n"


def test_cues_of_stored_segments_keep_their_word_timings() -> None:
    stored = rows(0)
    stored[0]["words"] = [{"start": 0.1, "end": 0.6, "word": " t0", "probability": 0.9}]

    (cue,) = cues_of(stored)

    assert cue.words == (Word(0.1, 0.6, " t0"),)
    assert to_srt([cue], LIMITS) == "1\n00:00:00,100 --> 00:00:00,600\n[ch1] t0\n"
    assert cues_of(rows(None))[0].words == ()  # a segment stored without word timings
