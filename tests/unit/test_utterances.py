"""Pure merging of Whisper segments into utterances, and the stable split of a key."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import DatasetSettings
from pipeline.datasets.utterances import SegmentRow, Utterance, passes, split_for, utterances

RULES = DatasetSettings()  # defaults: nsp <= 0.6, logprob >= -1.0, cr <= 2.4, 0.3..30 s, 30 s max
REPO = Path(__file__).resolve().parents[2]


def seg(
    start: float,
    end: float,
    text: str = "words",
    *,
    avg_logprob: float | None = -0.2,
    no_speech_prob: float | None = 0.05,
    compression_ratio: float | None = 1.3,
) -> SegmentRow:
    return SegmentRow(start, end, text, avg_logprob, no_speech_prob, compression_ratio)


def cut(segments: list[SegmentRow], rules: DatasetSettings = RULES) -> list[Utterance]:
    return list(utterances(segments, rules))


def keys(n: int) -> list[str]:
    """Keys shaped like the real grouping key (the audio's sha256)."""
    return [hashlib.sha256(f"audio-{i}".encode()).hexdigest() for i in range(n)]


# -- merging -------------------------------------------------------------------------


def test_consecutive_good_segments_merge_into_one_utterance_with_joined_text() -> None:
    out = cut([seg(0.0, 5.0, " And so,"), seg(5.0, 8.0, " my fellow"), seg(8.5, 11.0, " ask not ")])
    assert out == [Utterance(offset=0.0, duration=11.0, text="And so, my fellow ask not")]


def test_merging_stops_before_an_utterance_would_exceed_max_utterance_s() -> None:
    rules = DatasetSettings(max_utterance_s=10.0)
    segments = [seg(0, 4, "a"), seg(4, 8, "b"), seg(8, 12, "c"), seg(12, 16, "d"), seg(16, 21, "e")]
    assert cut(segments, rules) == [
        Utterance(0.0, 8.0, "a b"),
        Utterance(8.0, 8.0, "c d"),
        Utterance(16.0, 5.0, "e"),
    ]


def test_an_utterance_of_exactly_max_utterance_s_is_kept_whole() -> None:
    rules = DatasetSettings(max_utterance_s=10.0)
    assert cut([seg(0.0, 5.0, "a"), seg(5.0, 10.0, "b")], rules) == [Utterance(0.0, 10.0, "a b")]


def test_default_utterances_are_at_most_30_s() -> None:
    segments = [seg(i * 4.0, i * 4.0 + 4.0, f"w{i}") for i in range(20)]  # 80 s of speech
    out = cut(segments)
    assert [u.offset for u in out] == [0.0, 28.0, 56.0]
    assert all(u.duration <= RULES.max_utterance_s for u in out)
    assert " ".join(u.text for u in out) == " ".join(f"w{i}" for i in range(20))


FAILING = {
    "no_speech_prob above the maximum": seg(3.0, 6.0, "bad", no_speech_prob=0.61),
    "avg_logprob below the minimum": seg(3.0, 6.0, "bad", avg_logprob=-1.01),
    "compression_ratio above the maximum": seg(3.0, 6.0, "bad", compression_ratio=2.41),
    "shorter than min_segment_s": seg(3.0, 3.25, "bad"),
    "longer than max_segment_s": seg(3.0, 33.5, "bad"),
    "empty text": seg(3.0, 6.0, ""),
    "whitespace-only text": seg(3.0, 6.0, "   "),
}


@pytest.mark.parametrize("bad", FAILING.values(), ids=FAILING.keys())
def test_a_failing_segment_breaks_the_utterance_and_is_left_out(bad: SegmentRow) -> None:
    assert not passes(bad, RULES)
    after = seg(bad.end, bad.end + 2.5, "after")
    out = cut([seg(0.0, 3.0, "before"), bad, after])
    assert out == [Utterance(0.0, 3.0, "before"), Utterance(bad.end, 2.5, "after")]
    assert all("bad" not in u.text for u in out)


@pytest.mark.parametrize("bad", FAILING.values(), ids=FAILING.keys())
def test_leading_and_trailing_failing_segments_are_dropped(bad: SegmentRow) -> None:
    good = seg(bad.end, bad.end + 2.0, "good")
    trailing = SegmentRow(good.end, good.end + (bad.end - bad.start), bad.text, *_scores(bad))
    assert cut([bad, good, trailing]) == [Utterance(bad.end, 2.0, "good")]


def _scores(s: SegmentRow) -> tuple[float | None, float | None, float | None]:
    return s.avg_logprob, s.no_speech_prob, s.compression_ratio


def test_values_exactly_at_the_limits_pass() -> None:
    at_limits = [
        seg(0.0, 0.3, "shortest"),
        seg(0.0, 30.0, "longest"),
        seg(0.0, 2.0, "nsp", no_speech_prob=0.6),
        seg(0.0, 2.0, "lp", avg_logprob=-1.0),
        seg(0.0, 2.0, "cr", compression_ratio=2.4),
    ]
    assert all(passes(s, RULES) for s in at_limits)


def test_missing_scores_do_not_disqualify() -> None:
    s = seg(1.0, 4.0, "no scores", avg_logprob=None, no_speech_prob=None, compression_ratio=None)
    assert cut([s]) == [Utterance(1.0, 3.0, "no scores")]


def test_nothing_passes_nothing_comes_out() -> None:
    assert cut([]) == []
    assert cut(list(FAILING.values())) == []


def test_offsets_and_durations_are_exact_to_the_millisecond() -> None:
    out = cut(
        [
            seg(1.234, 3.5, "one"),
            seg(3.5, 4.1, "two"),
            seg(4.1, 4.2, "x"),  # too short: breaks
            seg(7.777, 9.999, "three"),
        ]
    )
    assert out == [Utterance(1.234, 2.866, "one two"), Utterance(7.777, 2.222, "three")]
    for u in out:
        assert u.offset == round(u.offset, 3) and u.duration == round(u.duration, 3)


def test_the_gap_between_good_segments_belongs_to_the_utterance() -> None:
    # Silence between two accepted segments is not judged bad: the utterance spans it.
    assert cut([seg(0.0, 2.0, "a"), seg(6.0, 8.0, "b")]) == [Utterance(0.0, 8.0, "a b")]


def test_tighter_rules_only_ever_remove_speech() -> None:
    segments = [
        seg(0.0, 4.0, "a", no_speech_prob=0.1),
        seg(4.0, 8.0, "b", no_speech_prob=0.4),
        seg(8.0, 12.0, "c", avg_logprob=-0.8),
        seg(12.0, 16.0, "d"),
    ]
    loose = cut(segments)
    strict = cut(segments, DatasetSettings(max_no_speech_prob=0.3, min_avg_logprob=-0.5))
    assert loose == [Utterance(0.0, 16.0, "a b c d")]
    assert strict == [Utterance(0.0, 4.0, "a"), Utterance(12.0, 4.0, "d")]


# -- languages -----------------------------------------------------------------------


def said(start: float, end: float, text: str, language: str | None) -> SegmentRow:
    return SegmentRow(start, end, text, -0.2, 0.05, 1.3, language)


def test_a_change_of_language_ends_the_utterance_and_each_names_its_language() -> None:
    segments = [
        said(0, 4, "good", "en"),
        said(4, 8, "morning", "en"),
        said(8, 12, "guten Tag", "de"),
        said(12, 14, "bye", "en"),
    ]
    assert cut(segments) == [
        Utterance(0.0, 8.0, "good morning", "en"),
        Utterance(8.0, 4.0, "guten Tag", "de"),
        Utterance(12.0, 2.0, "bye", "en"),
    ]


def test_segments_in_languages_a_dataset_does_not_hold_are_dropped_and_break_it() -> None:
    segments = [
        said(0, 4, "good", "en"),
        said(4, 8, "guten Tag", "de"),
        said(8, 12, "morning", "en"),
        said(12, 14, "bonjour", "fr"),
    ]
    assert list(utterances(segments, RULES, ["en"])) == [
        Utterance(0.0, 4.0, "good", "en"),
        Utterance(8.0, 4.0, "morning", "en"),
    ]
    assert list(utterances(segments, RULES, ["de", "fr"])) == [
        Utterance(4.0, 4.0, "guten Tag", "de"),
        Utterance(12.0, 2.0, "bonjour", "fr"),
    ]
    assert list(utterances(segments, RULES, ["vi"])) == []


def test_every_segment_of_a_mixed_file_lands_in_exactly_one_language() -> None:
    segments = [said(i, i + 1.0, f"w{i}", ("en", "de", "vi")[i % 3]) for i in range(30)]
    by_language = {
        code: [u.text for u in utterances(segments, RULES, [code])] for code in ("en", "de", "vi")
    }
    words = [w for texts in by_language.values() for t in texts for w in t.split()]
    assert sorted(words) == sorted(s.text for s in segments)
    assert by_language["de"][:2] == ["w1", "w4"]


# -- splits --------------------------------------------------------------------------


def test_split_for_is_stable_for_the_same_key() -> None:
    sample = keys(500)
    first = [split_for(k, RULES) for k in sample]
    again = [split_for(k, DatasetSettings()) for k in sample]
    assert first == again
    assert set(first) == {"train", "dev", "test"}


def test_split_for_is_stable_across_processes_and_hash_seeds() -> None:
    sample = keys(300)
    here = [split_for(k, RULES) for k in sample]
    script = (
        "import json, sys\n"
        "from pipeline.config import DatasetSettings\n"
        "from pipeline.datasets.utterances import split_for\n"
        "print(json.dumps([split_for(k, DatasetSettings()) for k in json.load(sys.stdin)]))\n"
    )
    for seed in ("1", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(sample).encode(),
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=REPO,
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout) == here


def test_split_for_roughly_honours_the_ratios_over_10000_keys() -> None:
    counts = Counter(split_for(k, RULES) for k in keys(10_000))
    assert 0.88 <= counts["train"] / 10_000 <= 0.92
    assert 0.04 <= counts["dev"] / 10_000 <= 0.06
    assert 0.04 <= counts["test"] / 10_000 <= 0.06


def test_other_ratios_are_honoured_too() -> None:
    rules = DatasetSettings(train_ratio=0.6, dev_ratio=0.3)
    counts = Counter(split_for(k, rules) for k in keys(10_000))
    assert 0.58 <= counts["train"] / 10_000 <= 0.62
    assert 0.28 <= counts["dev"] / 10_000 <= 0.32
    assert 0.08 <= counts["test"] / 10_000 <= 0.12


def test_dev_ratio_zero_never_yields_dev() -> None:
    rules = DatasetSettings(train_ratio=0.9, dev_ratio=0.0)
    counts = Counter(split_for(k, rules) for k in keys(10_000))
    assert counts["dev"] == 0
    assert 0.08 <= counts["test"] / 10_000 <= 0.12


@pytest.mark.parametrize(
    ("ratios", "only"),
    [
        ({"train_ratio": 1.0, "dev_ratio": 0.0}, "train"),
        ({"train_ratio": 0.0, "dev_ratio": 1.0}, "dev"),
        ({"train_ratio": 0.0, "dev_ratio": 0.0}, "test"),
    ],
)
def test_degenerate_ratios_put_every_key_in_one_split(ratios: dict[str, Any], only: str) -> None:
    rules = DatasetSettings(**ratios)
    assert {split_for(k, rules) for k in keys(2_000)} == {only}


def test_raising_train_ratio_never_moves_a_key_out_of_train() -> None:
    sample = keys(5_000)
    before = {k: split_for(k, DatasetSettings(train_ratio=0.8, dev_ratio=0.1)) for k in sample}
    after = {k: split_for(k, DatasetSettings(train_ratio=0.9, dev_ratio=0.05)) for k in sample}
    assert all(after[k] == "train" for k in sample if before[k] == "train")
    moves = {(before[k], after[k]) for k in sample if before[k] != after[k]}
    assert moves == {("dev", "train"), ("test", "dev")}
