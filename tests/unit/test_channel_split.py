"""Split channels (workers.channels) over the real long-audio layer and a fake engine.

The WAVs are real and really decoded; only the engine is a fake that turns each
stretch of sound into one segment, so which channel a segment came from is known.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.config import AsrSettings
from pipeline.errors import PermanentError
from tests.fake_engine import SOUND_TEXT, SPEECH_LANGUAGE, FakeEngine, fake_transcriber
from tests.wav import SAMPLE_RATE, write_wav
from workers.channels import ChannelSplitter, merge_channels
from workers.transcription import Cancelled, Segment, TranscribeOptions, Transcription

# Where each channel of the call sounds, in seconds: they overlap at 3.0–3.5 s.
LEFT = [(0.5, 1.5), (3.0, 4.0)]
RIGHT = [(2.0, 2.5), (3.5, 4.5)]
SECONDS = 5.0


def bursts(spans: list[tuple[float, float]], hz: float) -> npt.NDArray[np.int16]:
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    on = np.zeros_like(t, dtype=bool)
    for start, end in spans:
        on |= (t >= start) & (t < end)
    samples: npt.NDArray[np.int16] = (0.4 * 32767 * np.sin(2 * np.pi * hz * t) * on).astype("<i2")
    return samples


def write_channels(path: Path, *channels: npt.NDArray[np.int16]) -> Path:
    pcm = np.stack(channels, axis=1).reshape(-1).astype("<i2").tobytes()
    return write_wav(path, pcm, channels=len(channels))


@pytest.fixture
def call(tmp_path: Path) -> Path:
    return write_channels(tmp_path / "call.wav", bursts(LEFT, 300), bursts(RIGHT, 500))


def splitter(default: Any = "mix") -> tuple[ChannelSplitter, FakeEngine]:
    engine = FakeEngine()
    return ChannelSplitter(fake_transcriber(AsrSettings(), engine), default=default), engine


def transcribe(transcriber: ChannelSplitter, path: Path, **options: Any) -> Transcription:
    return transcriber.transcribe(path, threading.Event(), TranscribeOptions(**options))


def spans(segments: list[Segment]) -> list[tuple[float, float, int | None]]:
    return [(round(s.start, 1), round(s.end, 1), s.channel) for s in segments]


def test_split_labels_each_channel_and_merges_in_time_order(call: Path) -> None:
    transcriber, engine = splitter()

    result = transcribe(transcriber, call, channels="split")

    assert spans(result.segments) == [
        (0.5, 1.5, 0),
        (2.0, 2.5, 1),
        (3.0, 4.0, 0),
        (3.5, 4.5, 1),
    ]
    assert all(s.text == SOUND_TEXT for s in result.segments)
    assert len(engine.requests) == 2  # one pass per channel
    assert result.windows == 2
    assert result.audio_duration_s == pytest.approx(SECONDS, abs=0.01)
    assert result.language == SPEECH_LANGUAGE


def test_mix_transcribes_the_mixdown_once_without_labels(call: Path) -> None:
    transcriber, engine = splitter(default="split")

    result = transcribe(transcriber, call, channels="mix")

    assert len(engine.requests) == 1
    # Mixed, the overlapping sounds are one stretch and nothing names a channel.
    assert spans(result.segments) == [(0.5, 1.5, None), (2.0, 2.5, None), (3.0, 4.5, None)]


@pytest.mark.parametrize(("default", "labelled"), [("split", True), ("mix", False)])
def test_without_a_choice_in_the_job_the_setting_decides(
    call: Path, default: str, labelled: bool
) -> None:
    transcriber, _ = splitter(default=default)

    result = transcribe(transcriber, call)

    assert all((s.channel is not None) is labelled for s in result.segments)
    assert result.segments


def test_split_of_mono_audio_is_the_mono_transcript(tmp_path: Path) -> None:
    mono = write_channels(tmp_path / "mono.wav", bursts(LEFT, 300))
    transcriber, engine = splitter(default="split")

    result = transcribe(transcriber, mono)

    assert len(engine.requests) == 1
    assert spans(result.segments) == [(0.5, 1.5, None), (3.0, 4.0, None)]


def test_split_of_dual_mono_is_transcribed_once(tmp_path: Path) -> None:
    """Mono saved as stereo (as jfk.flac is): the same words must not come twice."""
    same = bursts(LEFT, 300)
    dual = write_channels(tmp_path / "dual.wav", same, same)
    transcriber, engine = splitter(default="split")

    result = transcribe(transcriber, dual)

    assert len(engine.requests) == 1
    assert spans(result.segments) == [(0.5, 1.5, None), (3.0, 4.0, None)]


def test_a_silent_channel_gives_no_segments_and_the_speaker_keeps_the_language(
    tmp_path: Path,
) -> None:
    path = write_channels(tmp_path / "one-sided.wav", np.zeros(80000, "<i2"), bursts(RIGHT, 500))
    transcriber, engine = splitter()

    result = transcribe(transcriber, path, channels="split")

    assert len(engine.requests) == 2
    assert spans(result.segments) == [(2.0, 2.5, 1), (3.5, 4.5, 1)]
    assert result.language == SPEECH_LANGUAGE  # not the silent channel's guess


def test_three_channels_are_three_speakers(tmp_path: Path) -> None:
    path = write_channels(
        tmp_path / "three.wav",
        bursts([(0.5, 1.0)], 300),
        bursts([(2.0, 2.5)], 500),
        bursts([(1.2, 1.6)], 700),
    )
    transcriber, _ = splitter()

    result = transcribe(transcriber, path, channels="split")

    assert spans(result.segments) == [(0.5, 1.0, 0), (1.2, 1.6, 2), (2.0, 2.5, 1)]


def test_cancelling_stops_before_the_next_channel(call: Path) -> None:
    cancel = threading.Event()
    engine = FakeEngine(on_segment=lambda produced: cancel.set())
    transcriber = ChannelSplitter(fake_transcriber(AsrSettings(), engine))

    with pytest.raises(Cancelled):
        transcriber.transcribe(call, cancel, TranscribeOptions(channels="split"))
    assert len(engine.requests) == 1


def test_an_unknown_choice_is_a_readable_permanent_error(call: Path) -> None:
    transcriber, engine = splitter()

    with pytest.raises(PermanentError, match="'stereo'.*mix, split"):
        transcribe(transcriber, call, channels="stereo")
    assert engine.requests == []


def test_undecodable_audio_is_reported_by_the_transcriber_as_always(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"not audio at all" * 100)
    transcriber, _ = splitter()

    with pytest.raises(PermanentError, match="cannot be decoded"):
        transcribe(transcriber, path, channels="split")


def test_the_model_is_the_inner_transcribers() -> None:
    transcriber, engine = splitter()

    transcriber.load()

    assert engine.loads == 1
    assert (transcriber.model_name, transcriber.device_label) == (engine.model_name, "cpu")
    assert transcriber.batch_size == engine.batch_size
    assert transcriber.compute_type == engine.compute_type


def channel_result(
    language: str | None,
    spoken: list[tuple[float, float]],
    *,
    probability: float = 0.9,
    speech_s: float | None = None,
    covered: float | None = None,
) -> Transcription:
    return Transcription(
        language=language,
        language_probability=probability,
        audio_duration_s=10.0,
        processing_s=1.0,
        segments=[Segment(start, end, "x", language=language) for start, end in spoken],
        speech_s=speech_s,
        covered_speech_s=covered,
    )


def test_merged_language_is_that_of_the_most_speech() -> None:
    german = channel_result("de", [(0.0, 2.0), (5.0, 9.0)], probability=0.7)
    english = channel_result("en", [(1.0, 4.0)], probability=0.99)

    merged = merge_channels([english, german], processing_s=2.5)

    assert (merged.language, merged.language_probability) == ("de", 0.7)
    assert [(s.start, s.channel, s.language) for s in merged.segments] == [
        (0.0, 1, "de"),
        (1.0, 0, "en"),
        (5.0, 1, "de"),
    ]
    assert merged.processing_s == 2.5


def test_merged_speech_is_the_sum_and_unknown_if_any_is() -> None:
    left = channel_result("en", [(0.0, 1.0)], speech_s=3.0, covered=2.5)
    right = channel_result("en", [(0.0, 1.0)], speech_s=4.0, covered=3.0)
    unmeasured = channel_result("en", [(0.0, 1.0)])

    both = merge_channels([left, right], processing_s=1.0)
    partial = merge_channels([left, unmeasured], processing_s=1.0)

    assert (both.speech_s, both.covered_speech_s) == (7.0, 5.5)
    assert (partial.speech_s, partial.covered_speech_s) == (None, None)


def test_segments_starting_together_come_left_first() -> None:
    merged = merge_channels(
        [channel_result("en", [(1.0, 5.0)]), channel_result("en", [(1.0, 2.0)])],
        processing_s=1.0,
    )

    assert [s.channel for s in merged.segments] == [0, 1]
