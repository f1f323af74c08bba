"""The long-audio layer tells the worker how far it has got, segment by segment."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.config import AsrSettings
from pipeline.metrics import Metrics
from tests.fake_engine import FakeEngine, fake_transcriber
from tests.sparse_audio import write_sparse_speech_wav
from workers.asr import LongAudioTranscriber
from workers.transcription import TranscribeOptions
from workers.windows import quietest_frame


def test_progress_rises_with_each_segment_and_window_to_the_end_of_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "three.wav"
    write_sparse_speech_wav(path, 200, [0, 55, 140])
    settings = AsrSettings(device="cpu", long_audio_s=60, window_s=60)
    transcriber = LongAudioTranscriber(
        FakeEngine(), settings, metrics=Metrics(), cut_finder=quietest_frame
    )
    reported: list[float] = []

    result = transcriber.transcribe(
        path, threading.Event(), TranscribeOptions(on_progress=reported.append)
    )

    assert reported == sorted(reported)
    assert len(reported) >= result.windows + len(result.segments)
    # Every segment's end is told as it is produced; the last window ends the file.
    assert {s.end for s in result.segments} <= set(reported)
    assert reported[-1] == pytest.approx(200, abs=0.01)
    assert TranscribeOptions(on_progress=reported.append) == TranscribeOptions()


def test_split_channels_report_progress_through_the_whole_job(tmp_path: Path) -> None:
    """Two channels one after the other: the first is the first half of the progress."""
    from tests.unit.test_channel_split import LEFT, RIGHT, SECONDS, bursts, write_channels
    from workers.channels import ChannelSplitter

    call = write_channels(tmp_path / "call.wav", bursts(LEFT, 300), bursts(RIGHT, 500))
    transcriber = ChannelSplitter(fake_transcriber(AsrSettings()), default="split")
    reported: list[float] = []

    transcriber.transcribe(call, threading.Event(), TranscribeOptions(on_progress=reported.append))

    assert reported == sorted(reported)
    assert reported[-1] == pytest.approx(SECONDS, abs=0.01)
    assert any(0 < p <= SECONDS / 2 for p in reported)
    assert SECONDS / 2 in [pytest.approx(p, abs=0.01) for p in reported]  # end of channel 0
