"""The verdict of a transcript from its figures: each reason, and ``ok``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from pipeline.config import QualitySettings
from pipeline.quality import (
    NO_SPEECH,
    REASON_KINDS,
    REVIEW,
    Quality,
    ReasonKind,
    assess,
    same_language,
)
from workers.transcription import Segment

SETTINGS = QualitySettings()


def seg(start: float, end: float, text: str = "words spoken here", **figures: Any) -> Segment:
    defaults: dict[str, Any] = {"avg_logprob": -0.3, "no_speech_prob": 0.02}
    defaults["compression_ratio"] = 1.4
    defaults["language"] = "en"
    return Segment(start=start, end=end, text=text, **(defaults | figures))


GOOD = [seg(0.0, 4.0), seg(4.5, 9.0, "and some more words"), seg(9.5, 10.0, "yes")]


def judge(segments: list[Segment] = GOOD, **overrides: Any) -> Quality:
    args: dict[str, Any] = {
        "language": "en",
        "language_probability": 0.97,
        "expected_language": None,
        "speech_s": 10.0,
        "covered_speech_s": 9.5,
        "settings": SETTINGS,
    }
    return assess(segments, **(args | overrides))


def kinds(quality: Quality) -> list[str]:
    return [r.kind for r in quality.reasons]


def test_a_clean_transcript_is_ok_with_its_figures() -> None:
    quality = judge()
    assert quality.verdict == "ok"
    assert quality.reasons == ()
    assert quality.language_probability == 0.97
    assert quality.coverage == pytest.approx(0.95)
    assert quality.mean_logprob == pytest.approx(-0.3)
    assert quality.compression_ratio == pytest.approx(1.4)
    assert quality.no_speech_ratio == pytest.approx(0.02)
    assert quality.detected_language is None


def test_figures_are_weighted_by_segment_duration() -> None:
    segments = [seg(0, 9, avg_logprob=-0.2, compression_ratio=1.0, no_speech_prob=0.0)]
    segments.append(seg(9, 10, avg_logprob=-1.2, compression_ratio=3.0, no_speech_prob=1.0))
    quality = judge(segments)
    assert quality.mean_logprob == pytest.approx(-0.3)
    assert quality.compression_ratio == pytest.approx(1.2)
    assert quality.no_speech_ratio == pytest.approx(0.1)
    assert quality.verdict == "ok"  # one bad second in ten does not sink the transcript


def test_segments_without_a_figure_leave_it_out_and_none_gives_none() -> None:
    segments = [seg(0, 5, avg_logprob=None, compression_ratio=None, no_speech_prob=None)]
    quality = judge(segments)
    assert (quality.mean_logprob, quality.compression_ratio, quality.no_speech_ratio) == (
        None,
        None,
        None,
    )
    assert quality.verdict == "ok"


def test_low_language_confidence() -> None:
    quality = judge(language_probability=0.42)
    assert quality.verdict == REVIEW
    assert quality.reason_texts == ["low language confidence (0.42 < 0.50)"]
    assert kinds(quality) == ["language_confidence"]


def test_low_detection_confidence_is_no_reason_when_the_language_was_requested() -> None:
    quality = judge(
        language="de",
        language_probability=1.0,
        expected_language="de",
        detected_language="de",
        detected_language_probability=0.3,
        segments=[seg(0, 10, language="de")],
    )
    assert quality.verdict == "ok"
    assert quality.language_probability == 1.0
    assert quality.detected_language_probability == 0.3


def test_a_confidently_detected_other_language_differs_from_the_expected_one() -> None:
    quality = judge(
        language="de",
        language_probability=None,  # what detection gave "de" is not known here
        expected_language="de",
        detected_language="en",
        detected_language_probability=0.97,
    )
    assert quality.reason_texts == [
        "language differs from expected (detected en 0.97, expected de)"
    ]
    assert kinds(quality) == ["language_mismatch"]
    assert quality.detected_language == "en"
    assert quality.figures()["detected_language"] == "en"


def test_another_language_preferred_over_an_unlikely_expected_one_is_a_mismatch() -> None:
    # German forced into English (measured: detection de 0.76, en 0.03; nonsense English).
    quality = judge(
        language="en",
        language_probability=0.03,
        expected_language="en",
        detected_language="de",
        detected_language_probability=0.76,
    )
    assert quality.reason_texts == [
        "language differs from expected (detected de 0.76, expected en 0.03)"
    ]
    assert (quality.language_probability, quality.detected_language) == (0.03, "de")
    assert quality.detected_language_probability == 0.76


def test_a_close_call_between_two_languages_is_not_a_mismatch() -> None:
    quality = judge(
        language="pt",
        language_probability=0.35,
        expected_language="pt",
        detected_language="gl",
        detected_language_probability=0.45,
        segments=[seg(0, 10, language="pt")],
    )
    assert quality.verdict == "ok"


def test_an_unsure_other_language_is_not_a_mismatch() -> None:
    quality = judge(
        expected_language="de",
        detected_language="en",
        detected_language_probability=0.6,
        segments=[seg(0, 10, language="de")],
    )
    assert quality.verdict == "ok"


def test_a_detected_language_differs_from_the_expected_one_without_separate_detection() -> None:
    quality = judge(expected_language="de")
    assert kinds(quality) == ["language_mismatch"]
    assert "detected en 0.97, expected de" in quality.reason_texts[0]


def test_segments_mostly_in_another_language_differ_from_the_expected_one() -> None:
    segments = [seg(0, 3, language="de"), seg(3, 10, language="en")]
    quality = judge(segments, language="de", language_probability=1.0, expected_language="de")
    assert quality.reason_texts == [
        "language differs from expected (segments in en cover 70% of the text's time, expected de)"
    ]


def test_regional_variants_are_the_same_language() -> None:
    assert same_language("de", "DE-at") and same_language("pt_BR", "pt")
    assert not same_language("en", "de")
    assert judge(expected_language="EN").verdict == "ok"


def test_incomplete_coverage_says_how_much_of_how_long() -> None:
    quality = judge(speech_s=55.1, covered_speech_s=29.2)
    assert quality.coverage == pytest.approx(0.53, abs=0.001)
    assert quality.reason_texts == ["incomplete: segments cover 52% of 55.1 s of speech (< 80%)"]
    assert kinds(quality) == ["incomplete"]


def test_coverage_just_under_the_limit_never_reads_as_the_limit() -> None:
    quality = judge(speech_s=100.0, covered_speech_s=79.96)
    assert quality.reason_texts == ["incomplete: segments cover 79% of 100.0 s of speech (< 80%)"]


def test_coverage_is_none_without_a_speech_measurement() -> None:
    assert judge(speech_s=None, covered_speech_s=None).coverage is None
    assert judge(speech_s=None, covered_speech_s=None).verdict == "ok"


def test_coverage_is_capped_at_one() -> None:
    assert judge(speech_s=10.0, covered_speech_s=10.02).coverage == 1.0


def test_likely_hallucination_by_compression_ratio() -> None:
    quality = judge([seg(0, 10, compression_ratio=3.1)])
    assert quality.reason_texts == [
        "likely hallucination or repetition (compression ratio 3.1 > 2.4)"
    ]
    assert kinds(quality) == ["repetition"]


def test_likely_hallucination_by_the_same_segment_over_and_over() -> None:
    loop = [seg(i, i + 1, " Thank you.") for i in range(6)]
    quality = judge([seg(0, 4), *loop], speech_s=10.0, covered_speech_s=10.0)
    assert quality.reason_texts == [
        'likely hallucination or repetition ("Thank you." 6 times in a row)'
    ]
    four = [seg(i, i + 1, "Yes.") for i in range(4)]
    assert judge(four).verdict == "ok"  # a few answers alike are speech, not a loop


def test_low_confidence_by_mean_log_probability() -> None:
    quality = judge([seg(0, 10, avg_logprob=-1.37)])
    assert quality.reason_texts == ["low confidence (mean log-prob -1.37 < -1.00)"]
    assert kinds(quality) == ["low_confidence"]


def test_mostly_no_speech_by_no_speech_ratio() -> None:
    quality = judge([seg(0, 10, no_speech_prob=0.72)])
    assert quality.reason_texts == ["likely no speech (no-speech ratio 0.72 > 0.60)"]
    assert kinds(quality) == ["no_speech"]


def test_silence_is_no_speech_detected() -> None:
    for speech in (None, 0.0):
        quality = judge([], speech_s=speech, covered_speech_s=0.0 if speech is not None else None)
        assert quality.verdict == REVIEW
        assert quality.reason_texts == [NO_SPEECH] == ["no speech detected"]
        assert quality.coverage is None


def test_silence_with_a_doubtful_language_guess_says_only_no_speech() -> None:
    quality = judge([], language="nn", language_probability=0.2, speech_s=0.0, covered_speech_s=0)
    assert quality.reason_texts == ["no speech detected"]


def test_blank_segments_are_no_text() -> None:
    assert judge([seg(0, 1, "  ")], speech_s=None).reason_texts == ["no speech detected"]


def test_text_where_vad_heard_no_speech_is_no_speech() -> None:
    quality = judge([seg(0, 2, "Thank you.")], speech_s=0.0, covered_speech_s=0.0)
    assert quality.reason_texts == ["no speech detected (yet 1 segment of text)"]


def test_speech_with_no_text_at_all_is_incomplete() -> None:
    quality = judge([], speech_s=12.3, covered_speech_s=0.0)
    assert quality.reason_texts == ["incomplete: segments cover 0% of 12.3 s of speech (< 80%)"]


def test_every_reason_at_once_in_a_stable_order() -> None:
    quality = judge(
        [seg(0, 10, avg_logprob=-2.0, compression_ratio=2.9, no_speech_prob=0.9)],
        speech_s=40.0,
        covered_speech_s=10.0,
        language_probability=0.3,
    )
    assert kinds(quality) == [
        "incomplete",
        "language_confidence",
        "repetition",
        "low_confidence",
        "no_speech",
    ]


def test_settings_move_the_limits() -> None:
    strict = QualitySettings(min_coverage=1.0, max_compression_ratio=1.2, min_mean_logprob=-0.1)
    quality = judge(settings=strict)
    assert kinds(quality) == ["incomplete", "repetition", "low_confidence"]
    lenient = QualitySettings(min_coverage=0.0, min_language_probability=0.0)
    assert judge(language_probability=0.1, settings=lenient, speech_s=50.0).verdict == "ok"


def test_the_figures_are_rounded_for_the_document() -> None:
    figures = judge([seg(0, 3, avg_logprob=-0.123456789)], language_probability=0.42).figures()
    assert figures == {
        "language_probability": 0.42,
        "detected_language": None,
        "detected_language_probability": None,
        "mean_logprob": -0.1235,
        "compression_ratio": 1.4,
        "no_speech_ratio": 0.02,
        "coverage": 0.95,
        "speech_s": 10.0,
        "covered_speech_s": 9.5,
    }


def test_every_reason_kind_is_documented_with_the_metric() -> None:
    assert REASON_KINDS == get_args(ReasonKind)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    row = next(line for line in doc.splitlines() if "ai2text_transcript_review_reasons" in line)
    assert {kind for kind in REASON_KINDS if f"`{kind}`" in row} == set(REASON_KINDS)
