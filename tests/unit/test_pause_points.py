"""Where bulk transcription may pause for a waiting request: between windows and runs.

The real long-audio layer over the fake engine (tones it hears as languages); the
hook is what the worker uses to serve an interactive job first.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pipeline.config import AsrSettings
from tests.fake_engine import fake_transcriber, write_tones_wav
from workers.transcription import TranscribeOptions


def _pauses(path: Path, settings: AsrSettings) -> tuple[int, int, int]:
    """How often the hook was called, and the transcription's segments and windows."""
    calls: list[int] = []
    transcriber = fake_transcriber(settings)
    transcriber.load()
    options = TranscribeOptions(at_pause_point=lambda: calls.append(1))
    result = transcriber.transcribe(path, threading.Event(), options)
    return len(calls), len(result.segments), result.windows


def test_one_stretch_in_one_language_has_no_pause_point(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_tones_wav(path, 20.0, [(0.5, 18.0, "en")])
    assert _pauses(path, AsrSettings())[0] == 0


def test_a_change_of_language_is_a_pause_point(tmp_path: Path) -> None:
    path = tmp_path / "two.wav"
    write_tones_wav(path, 50.0, [(0.5, 20.0, "en"), (25.0, 20.0, "de")])
    pauses, segments, _ = _pauses(path, AsrSettings())
    assert pauses == 1
    assert segments > 2


def test_each_window_boundary_of_a_long_file_is_a_pause_point(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_tones_wav(path, 200.0, [(0.0, 200.0, "en")])
    settings = AsrSettings(long_audio_s=60.0, window_s=60.0)
    pauses, segments, windows = _pauses(path, settings)
    assert windows >= 3
    assert pauses == windows - 1
    assert segments >= windows
