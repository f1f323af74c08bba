"""Readable subtitles: segments cut into cues of few, short lines, timed by their words."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.config import Settings, SubtitleSettings
from pipeline.formats import Cue, cues_of, to_srt, to_timestamped, to_txt, to_vtt
from pipeline.subtitles import Word, split_segment, words_of

LIMITS = SubtitleSettings()
# 108 characters, 22 words: one Whisper segment.
LONG = (
    "And so, my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country."
)


def timed_words(text: str, start: float, per_word: float) -> list[dict[str, Any]]:
    """Stored ``words`` as faster-whisper writes them: leading spaces, probabilities."""
    return [
        {
            "start": start + i * per_word,
            "end": start + (i + 1) * per_word,
            "word": f" {w}",
            "probability": 0.9,
        }
        for i, w in enumerate(text.split())
    ]


def srt_blocks(srt: str) -> list[tuple[str, list[str]]]:
    """(timing line, text lines) of each SRT block."""
    blocks = []
    for block in srt.strip().split("\n\n"):
        _n, timing, *lines = block.split("\n")
        blocks.append((timing, lines))
    return blocks


def seconds(clock: str) -> float:
    h, m, s = clock.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def assert_readable(srt: str, limits: SubtitleSettings = LIMITS) -> None:
    for timing, lines in srt_blocks(srt):
        start, end = (seconds(t) for t in timing.split(" --> "))
        assert 0 <= end - start <= limits.max_cue_s + 0.0005, timing
        assert 1 <= len(lines) <= limits.max_lines, lines
        assert all(0 < len(line) <= limits.max_line_chars for line in lines), lines


def test_a_long_segment_becomes_cues_of_at_most_two_lines_of_42_characters() -> None:
    srt = to_srt([Cue(0.0, 6.0, LONG)], LIMITS)

    assert srt == (
        # 83 of the 108 characters: 6 s * 83 / 108 = 4.611 s.
        "1\n00:00:00,000 --> 00:00:04,611\n"
        "And so, my fellow Americans, ask not what\n"
        "your country can do for you, ask what you\n"
        "\n"
        "2\n00:00:04,611 --> 00:00:06,000\n"
        "can do for your country.\n"
    )


def test_without_words_the_time_is_shared_in_proportion_to_characters() -> None:
    wide = SubtitleSettings(max_cue_s=20)
    (whole,) = split_segment(10.0, 19.0, "aaaa bbbb", (), wide)
    assert (whole.start, whole.end, whole.lines) == (10.0, 19.0, ("aaaa bbbb",))

    # Cut at 5 s: "aaaa" has 4 of the 9 characters (the space goes with "bbbb").
    short = SubtitleSettings(max_cue_s=5)
    pieces = split_segment(10.0, 19.0, "aaaa bbbb", (), short)
    assert [(p.start, round(p.end, 6), p.lines) for p in pieces] == [
        (10.0, 14.0, ("aaaa",)),
        (14.0, 19.0, ("bbbb",)),
    ]


def test_with_words_the_cue_times_are_the_words_times() -> None:
    words = timed_words(LONG, start=3.0, per_word=0.5)  # 22 words, 11 s
    (cue,) = cues_of([{"start_s": 2.0, "end_s": 14.0, "text": LONG, "words": words}])

    blocks = srt_blocks(to_srt([cue], LIMITS))

    # The two lines would hold 17 words (8.5 s): 7 s of them (14 words) make the first cue.
    assert [timing for timing, _ in blocks] == [
        "00:00:03,000 --> 00:00:10,000",
        "00:00:10,000 --> 00:00:14,000",
    ]
    assert " ".join(" ".join(lines) for _, lines in blocks) == LONG


def test_no_cue_lasts_longer_than_max_cue_s_even_when_the_words_are_slow() -> None:
    words = timed_words(LONG, start=0.0, per_word=1.5)  # 31.5 s of speech, few characters

    srt = to_srt(cues_of([{"start_s": 0.0, "end_s": 31.5, "text": LONG, "words": words}]), LIMITS)

    assert_readable(srt)
    assert len(srt_blocks(srt)) == 6  # four 1.5 s words (6 s) a cue: 22 words


def test_a_single_word_held_longer_than_a_cue_may_last_is_cut_short() -> None:
    (piece,) = split_segment(0.0, 20.0, "Hmm.", (), LIMITS)

    assert (piece.start, piece.end, piece.lines) == (0.0, 7.0, ("Hmm.",))


def test_a_word_longer_than_a_line_is_kept_whole_on_its_own_line() -> None:
    word = "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichen"  # 58 characters
    pieces = split_segment(0.0, 6.0, f"the {word} is lost", (), LIMITS)

    assert [p.lines for p in pieces] == [("the", word), ("is lost",)]


def test_words_timed_outside_their_segment_are_kept_inside_it() -> None:
    words = [
        Word(-0.5, 0.4, " Too"),
        Word(0.4, 0.3, " soon"),  # ends before it starts
        Word(0.2, 9.0, " and late."),  # starts before the word before it, ends after the segment
    ]
    (piece,) = split_segment(0.0, 1.0, "Too soon and late.", words, LIMITS)

    assert (piece.start, piece.end) == (0.0, 1.0)
    assert piece.lines == ("Too soon and late.",)


def test_a_segment_shorter_than_nothing_still_renders_within_its_time() -> None:
    """A segment whose end comes before its start: zero length, never negative."""
    (piece,) = split_segment(5.0, 4.0, "blip", (), LIMITS)

    assert (piece.start, piece.end) == (5.0, 5.0)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_a_segment_without_text_has_no_cue(text: str) -> None:
    assert split_segment(0.0, 2.0, text, (), LIMITS) == []
    assert split_segment(0.0, 2.0, text, [Word(0.0, 1.0, " ")], LIMITS) == []
    assert to_srt([Cue(0.0, 2.0, text), Cue(2.0, 3.0, "yes")], LIMITS) == (
        "1\n00:00:02,000 --> 00:00:03,000\nyes\n"
    )
    assert to_vtt([Cue(0.0, 2.0, text)], LIMITS) == "WEBVTT\n\n"


def test_words_without_text_fall_back_to_the_segment_text() -> None:
    (piece,) = split_segment(0.0, 2.0, "hello there", [Word(0.0, 1.0, "")], LIMITS)

    assert piece.lines == ("hello there",)


def test_cjk_text_without_spaces_is_split_between_characters() -> None:
    text = "今日はとても良い天気ですね。明日も晴れるでしょうか。私は公園に行きたいと思います。"
    limits = SubtitleSettings(max_line_chars=12)

    pieces = split_segment(0.0, 6.0, text, (), limits)

    lines = [line for p in pieces for line in p.lines]
    assert "".join(lines) == text
    assert all(len(line) <= 12 for line in lines), lines
    assert not any(line.startswith("。") for line in lines), lines  # punctuation stays behind
    assert len(lines) == 4


def test_the_channel_label_counts_toward_the_first_line() -> None:
    text = "Hello, I have a problem with my bills."  # 38 characters; 44 after "[ch1] "
    cue = Cue(0.0, 3.0, text, 0)

    srt = to_srt([cue], LIMITS)
    vtt = to_vtt([cue], LIMITS)

    assert srt.split("\n")[2:4] == ["[ch1] Hello, I have a problem with my", "bills."]
    assert vtt.split("\n")[3:5] == ["<v ch1>Hello, I have a problem with my", "bills."]
    assert_readable(srt)
    assert to_srt([Cue(0.0, 3.0, text)], LIMITS).split("\n")[2:4] == [text, ""]  # unlabelled
    # The label is on each cue's first line, so each cue says who speaks.
    many = to_srt([Cue(0.0, 12.0, LONG, 1)], LIMITS)
    assert [lines[0][:6] for _, lines in srt_blocks(many)] == ["[ch2] "] * 2
    assert_readable(many)


def test_txt_and_the_cli_lines_keep_one_line_per_segment() -> None:
    cues = [Cue(0.0, 12.0, LONG), Cue(12.0, 13.0, "Thank you.")]

    assert to_txt(cues, LIMITS) == LONG + "\nThank you.\n"
    assert len(to_timestamped(cues, LIMITS).splitlines()) == 2


def test_the_limits_are_settings_with_broadcast_defaults() -> None:
    settings = Settings(subtitles={"max_line_chars": 32, "max_lines": 1, "max_cue_s": 4})

    assert (LIMITS.max_line_chars, LIMITS.max_lines, LIMITS.max_cue_s) == (42, 2, 7.0)
    assert settings.subtitles == SubtitleSettings(max_line_chars=32, max_lines=1, max_cue_s=4)
    assert_readable(to_srt([Cue(0.0, 12.0, LONG)], settings.subtitles), settings.subtitles)
    with pytest.raises(ValidationError):
        SubtitleSettings(max_lines=0)


def test_the_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_SUBTITLES__MAX_LINE_CHARS", "37")

    assert Settings().subtitles.max_line_chars == 37


def test_words_of_a_stored_segment() -> None:
    assert words_of(None) == ()
    assert words_of([{"start": 1, "end": 2.5, "word": " hi", "probability": 0.5}]) == (
        Word(1.0, 2.5, " hi"),
    )
