"""The long-audio layer tells the worker how far it has got, segment by segment."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.config import AsrSettings
from pipeline.metrics import Metrics
from tests.fake_engine import FakeEngine
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
