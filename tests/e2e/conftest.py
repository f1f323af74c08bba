"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import write_long_wav

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three minutes of real speech: long enough to act on a job mid-transcription."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    write_long_wav(path, DATA / "multilingual.mp3", repeat=3)
    return path
