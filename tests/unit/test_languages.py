"""Which language each stretch of speech is in (workers.languages) and coverage (workers.coverage).

Pure logic: spans are made up, and detection is a function of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from workers.coverage import Coverage, merged, overlap_s, total_s
from workers.engines import LanguageGuess
from workers.languages import Heard, LanguageTally, detect_pieces, halves, pieces, runs
from workers.windows import SAMPLE_RATE, Span

SR = SAMPLE_RATE


def sentences(count: int, *, start_s: float = 0.0, length_s: float = 4.0) -> list[Span]:
    """``count`` spans of ``length_s`` with a 1 s pause after each."""
    return [
        (
            round((start_s + i * (length_s + 1)) * SR),
            round((start_s + i * (length_s + 1) + length_s) * SR),
        )
        for i in range(count)
    ]


class ScriptedDetector:
    """Detection that hears the language of most of the speech it is given.

    ``before`` is spoken up to sample ``switch_at``, ``after`` from there. Records calls.
    """

    def __init__(self, switch_at: int, before: str = "en", after: str = "de") -> None:
        self.switch_at, self.before, self.after = switch_at, before, after
        self.calls: list[Sequence[Span]] = []

    def __call__(self, spans: Sequence[Span]) -> LanguageGuess:
        self.calls.append(spans)
        first = sum(max(0, min(end, self.switch_at) - start) for start, end in spans)
        total = sum(end - start for start, end in spans)
        share = first / total
        if share >= 0.5:
            return LanguageGuess(self.before, share, {self.after: 1 - share})
        return LanguageGuess(self.after, 1 - share, {self.before: share})


def labels(heard: Sequence[Heard]) -> list[tuple[Span, str]]:
    return [(span, piece.language) for piece in heard for span in piece.spans]


def test_pieces_last_at_most_30_s_and_end_at_pauses() -> None:
    spans = sentences(20)  # 100 s: 80 s of speech
    out = pieces(spans, max_samples=30 * SR)
    assert [len(p) for p in out] == [6, 6, 6, 2]
    assert [s for p in out for s in p] == spans
    assert all(p[-1][1] - p[0][0] <= 30 * SR for p in out)


def test_speech_without_a_pause_is_cut_into_pieces_of_its_own() -> None:
    out = pieces([(0, 70 * SR), (71 * SR, 75 * SR)], max_samples=30 * SR)
    assert out == [((0, 30 * SR),), ((30 * SR, 60 * SR),), ((60 * SR, 70 * SR), (71 * SR, 75 * SR))]


def test_halves_split_speech_evenly_at_a_pause_and_never_below_the_minimum() -> None:
    spans = tuple(sentences(5))
    assert halves(spans, min_samples=3 * SR) == (spans[:2], spans[2:])
    assert halves(spans[:1], min_samples=SR) is None
    assert halves(tuple(sentences(2, length_s=2)), min_samples=3 * SR) is None


def test_one_language_costs_one_detection_per_piece() -> None:
    detect = ScriptedDetector(switch_at=10**9)
    heard = detect_pieces(sentences(20), detect)
    assert len(detect.calls) == 4
    assert {language for _, language in labels(heard)} == {"en"}


def test_a_change_of_language_inside_a_piece_is_found_to_the_sentence() -> None:
    spans = sentences(12)  # pieces of 6 sentences; the change is inside the first
    switch = spans[4][0] - SR // 2  # in the pause before the fifth sentence
    detect = ScriptedDetector(switch_at=switch)

    heard = detect_pieces(spans, detect)

    assert labels(heard) == [(s, "en" if s[0] < switch else "de") for s in spans]
    # More than the two pieces, fewer than one detection per sentence.
    assert 2 < len(detect.calls) < len(spans)


def test_a_change_where_two_pieces_meet_is_confirmed_from_the_halves_next_to_it() -> None:
    spans = sentences(12)  # pieces of 6 sentences
    switch = spans[6][0] - SR // 2
    detect = ScriptedDetector(switch_at=switch)

    heard = detect_pieces(spans, detect)

    assert labels(heard) == [(s, "en" if s[0] < switch else "de") for s in spans]
    assert len(detect.calls) < len(spans)
    # Far from the change nothing is heard again: the first sentences only in the piece.
    assert sum(spans[0] in call for call in detect.calls) == 1


def test_runs_cover_the_window_and_meet_in_the_middle_of_the_pause() -> None:
    spans = sentences(12)
    switch = spans[6][0] - SR // 2
    heard = detect_pieces(spans, ScriptedDetector(switch_at=switch))
    size = 70 * SR

    out = runs(heard, size)

    assert [r.language for r in out] == ["en", "de"]
    assert out[0].start == 0 and out[-1].end == size
    assert out[0].end == out[1].start == (spans[5][1] + spans[6][0]) // 2
    assert [r.speech_s for r in out] == [24.0, 24.0]
    assert [r.probability for r in out] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_a_run_too_short_to_trust_joins_its_neighbour_in_its_language() -> None:
    spans = sentences(2, length_s=1.0) + sentences(6, start_s=20, length_s=3.0)
    detect = ScriptedDetector(switch_at=10 * SR, before="fr", after="de")
    heard = detect_pieces(spans, detect, max_samples=3 * SR)
    assert [piece.language for piece in heard] == ["fr"] + ["de"] * 6

    out = runs(heard, 60 * SR)

    assert [(r.start, r.end, r.language) for r in out] == [(0, 60 * SR, "de")]
    assert out[0].speech_s == pytest.approx(20.0)
    # The 2 s heard as French count as German, with the probability German had there.
    assert out[0].probability == pytest.approx(18 / 20)


def test_halves_heard_unsurely_in_other_languages_leave_the_piece_as_it_was_heard() -> None:
    spans = sentences(4)
    calls: list[Sequence[Span]] = []

    def less_audio_less_sure(piece: Sequence[Span]) -> LanguageGuess:
        calls.append(piece)
        if len(piece) == len(spans):
            return LanguageGuess("vi", 0.4, {"km": 0.2})
        return LanguageGuess("km" if piece[0] == spans[0] else "fr", 0.3)

    heard = detect_pieces(spans, less_audio_less_sure)

    assert [(p.spans, p.language) for p in heard] == [(tuple(spans), "vi")]
    assert len(calls) == 3, "one split tried, then the piece is left whole"
    assert [r.language for r in runs(heard, 30 * SR)] == ["vi"]


def test_languages_detection_cannot_tell_apart_stay_one_run_as_whisper_alone_would() -> None:
    spans = sentences(8)

    def confused(piece: Sequence[Span]) -> LanguageGuess:
        if piece[0][0] < spans[4][0]:
            return LanguageGuess("pt", 0.55, {"gl": 0.4})
        return LanguageGuess("gl", 0.5, {"pt": 0.45})

    heard = detect_pieces(spans, confused, max_samples=20 * SR)
    assert {piece.language for piece in heard} == {"pt", "gl"}

    out = runs(heard, 50 * SR)

    assert [(r.start, r.end, r.language) for r in out] == [(0, 50 * SR, "pt")]
    assert out[0].probability == pytest.approx((0.55 + 0.45) / 2)


def test_the_transcript_language_has_the_most_speech_and_its_weighted_probability() -> None:
    tally = LanguageTally()
    tally.add("en", 10.0, 0.9)
    tally.add("de", 20.0, 0.8)
    tally.add("de", 10.0, 0.5)
    tally.add("fr", 25.0, None)
    assert tally.main() == ("de", pytest.approx((20 * 0.8 + 10 * 0.5) / 30))
    assert tally.languages == {"en": 10.0, "de": 30.0, "fr": 25.0}
    assert LanguageTally().main() == (None, None)
    only = LanguageTally()
    only.add("en", 5.0, None)
    assert only.main() == ("en", None)


def test_coverage_is_the_overlap_of_speech_and_segments_not_a_sum_of_durations() -> None:
    speech = [(0.0, 10.0), (20.0, 30.0)]
    # Two segments overlapping each other, one over silence only, one half over speech.
    segments = [(0.0, 6.0), (4.0, 8.0), (12.0, 18.0), (25.0, 40.0)]
    assert merged(segments) == [(0.0, 8.0), (12.0, 18.0), (25.0, 40.0)]
    assert total_s(speech) == 20.0
    assert overlap_s(speech, segments) == 13.0
    assert overlap_s(speech, []) == 0.0

    coverage = Coverage()
    coverage.add(speech, segments)
    coverage.add([(100.0, 110.0)], [(95.0, 120.0)])
    assert (coverage.speech_s, coverage.covered_s) == (30.0, 23.0)
