"""Cutting long audio into windows that end at pauses (workers.windows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.media import decode_mono_16k
from workers.windows import (
    SAMPLE_RATE,
    Samples,
    WindowPlan,
    cut_from_speech,
    quietest_frame,
    split_at_silences,
    vad_cut_finder,
)

JFK = Path(__file__).resolve().parents[1] / "data" / "jfk.flac"
SR = SAMPLE_RATE


def chunked(audio: Samples, size: int = 4096) -> Iterator[Samples]:
    for start in range(0, audio.size, size):
        yield audio[start : start + size]


def ramp(seconds: float) -> Samples:
    """Distinct values, so a lost, repeated or reordered sample shows."""
    return np.arange(int(seconds * SR), dtype=np.float32)


def cut_at_region_end(region: Samples) -> int:
    return region.size


def test_short_audio_is_one_window() -> None:
    audio = ramp(30)
    plan = WindowPlan(whole_up_to_s=60, window_s=20, search_s=5)
    windows = list(
        split_at_silences(chunked(audio), plan, cut_at_region_end, long_from_start=False)
    )
    assert len(windows) == 1
    assert windows[0].last and windows[0].offset_s == 0
    np.testing.assert_array_equal(windows[0].samples, audio)


def test_long_audio_windows_cover_every_sample_once_at_the_right_offsets() -> None:
    audio = ramp(95)
    plan = WindowPlan(whole_up_to_s=60, window_s=20, search_s=5)

    def cut_two_seconds_early(region: Samples) -> int:
        return region.size - 2 * SR

    windows = list(
        split_at_silences(chunked(audio), plan, cut_two_seconds_early, long_from_start=True)
    )
    assert [w.last for w in windows] == [False] * (len(windows) - 1) + [True]
    np.testing.assert_array_equal(np.concatenate([w.samples for w in windows]), audio)
    for window in windows:
        # A window's first sample is the sample at its offset in the file.
        assert window.samples[0] == pytest.approx(window.offset_s * SR)
    assert all(w.duration_s == pytest.approx(18) for w in windows[:-1])


def test_audio_longer_than_its_container_claimed_is_windowed_once_past_the_limit() -> None:
    """A header that understates the length cannot make the worker hold the whole file."""
    audio = ramp(200)
    plan = WindowPlan(whole_up_to_s=60, window_s=20, search_s=5)
    windows = list(
        split_at_silences(chunked(audio), plan, cut_at_region_end, long_from_start=False)
    )
    assert len(windows) > 1
    assert max(w.samples.size for w in windows) <= 20 * SR
    np.testing.assert_array_equal(np.concatenate([w.samples for w in windows]), audio)


def test_cut_search_never_reaches_into_the_first_half_of_a_window() -> None:
    plan = WindowPlan(whole_up_to_s=1, window_s=10, search_s=60)
    regions: list[int] = []

    def record(region: Samples) -> int:
        regions.append(region.size)
        return 0

    windows = list(split_at_silences(chunked(ramp(40)), plan, record, long_from_start=True))
    assert regions and set(regions) == {5 * SR}
    assert all(w.duration_s == pytest.approx(5) for w in windows[:-1])


def test_cut_is_in_the_middle_of_the_longest_pause() -> None:
    region = np.zeros(10 * SR, dtype=np.float32)
    speech = [(0, 2 * SR), (3 * SR, 5 * SR), (8 * SR, 9 * SR)]  # pauses: 1 s, 3 s, 1 s
    assert cut_from_speech(region, speech) == int(6.5 * SR)


def test_no_speech_means_the_window_ends_where_it_is() -> None:
    region = np.zeros(10 * SR, dtype=np.float32)
    assert cut_from_speech(region, []) == region.size


def test_speech_without_a_usable_pause_is_cut_at_the_quietest_moment() -> None:
    rng = np.random.default_rng(7)
    region = rng.uniform(-0.5, 0.5, 4 * SR).astype(np.float32)
    region[int(2.5 * SR) : int(2.5 * SR) + 320] *= 0.001  # one quiet 20 ms frame
    cut = cut_from_speech(region, [(0, 2 * SR), (2 * SR + 100, region.size)])
    assert cut == quietest_frame(region)
    assert abs(cut - int(2.5 * SR)) <= 320


def test_real_vad_cuts_in_the_silence_between_two_utterances() -> None:
    with JFK.open("rb") as f:
        jfk = decode_mono_16k(f)
    region = np.zeros(jfk.size + 4 * SR + jfk.size, dtype=np.float32)
    region[: jfk.size] = jfk
    region[jfk.size + 4 * SR :] = jfk
    cut = vad_cut_finder()(region)
    assert jfk.size <= cut <= jfk.size + 4 * SR
