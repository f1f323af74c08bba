"""is_ignored_name: names the hot folder must never pick up."""

from __future__ import annotations

import pytest

from pipeline.ingest.hotfolder import is_ignored_name


@pytest.mark.parametrize(
    "name",
    [
        ".DS_Store",
        ".hidden.wav",
        ".~lock.interview.wav#",
        "interview.wav.part",
        "interview.wav.PART",
        "interview.wav.tmp",
        "interview.wav.Tmp",
        "download.mp3.crdownload",
        "download.mp3.CRDOWNLOAD",
        "~interview.wav",
        "~$meeting.flac",
    ],
)
def test_hidden_temporary_and_tilde_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "interview.wav",
        "Meeting 2024-05-01.FLAC",
        "podcast.mp3",
        "voice note.m4a",
        "partial.wav",
        "a.part.wav",
        "notes.tmp.flac",
        "temp~backup.ogg",
        "x",
    ],
)
def test_ordinary_audio_names_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)
