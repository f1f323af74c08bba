"""manifest_line: one NeMo-style JSON manifest entry per line."""

from __future__ import annotations

import json
import uuid

from pipeline.manifests import manifest_line

AUDIO_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_manifest_line_is_one_json_object_terminated_by_newline() -> None:
    line = manifest_line(
        audio_filepath="s3://ai2text/audio/a.flac",
        duration=11.0,
        text="ask not what your country can do for you",
        lang="en",
        audio_id=AUDIO_ID,
    )

    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert json.loads(line) == {
        "audio_filepath": "s3://ai2text/audio/a.flac",
        "duration": 11.0,
        "text": "ask not what your country can do for you",
        "lang": "en",
        "audio_id": str(AUDIO_ID),
    }


def test_manifest_line_stays_on_one_line_when_text_has_newlines() -> None:
    line = manifest_line(
        audio_filepath="a.wav",
        duration=1.0,
        text="first\nsecond\r\n",
        lang=None,
        audio_id=AUDIO_ID,
    )

    assert line.count("\n") == 1
    assert json.loads(line)["text"] == "first\nsecond\r\n"


def test_manifest_line_keeps_non_ascii_text_readable() -> None:
    line = manifest_line(
        audio_filepath="a.wav",
        duration=1.0,
        text="Grüße, naïve café",
        lang="de",
        audio_id=AUDIO_ID,
    )

    assert "Grüße, naïve café" in line
    assert json.loads(line)["lang"] == "de"


def test_manifest_line_writes_unknown_language_as_null() -> None:
    line = manifest_line(
        audio_filepath="a.wav", duration=1.0, text="x", lang=None, audio_id=AUDIO_ID
    )

    assert json.loads(line)["lang"] is None
    assert '"lang": null' in line


def test_manifest_duration_is_rounded_to_milliseconds() -> None:
    line = manifest_line(
        audio_filepath="a.wav", duration=59.912345, text="x", lang="en", audio_id=AUDIO_ID
    )

    assert json.loads(line)["duration"] == 59.912


def test_an_utterance_line_has_its_offset_before_the_duration() -> None:
    line = manifest_line(
        audio_filepath="audio/sha256/ab/ab.flac",
        offset=12.3456,
        duration=4.25,
        text="ask not",
        lang="en",
        audio_id=str(AUDIO_ID),
    )

    assert line == (
        '{"audio_filepath": "audio/sha256/ab/ab.flac", "offset": 12.346, "duration": 4.25,'
        f' "text": "ask not", "lang": "en", "audio_id": "{AUDIO_ID}"}}\n'
    )


def test_a_whole_file_line_has_no_offset() -> None:
    line = manifest_line(
        audio_filepath="a.wav", duration=1.0, text="x", lang="en", audio_id=AUDIO_ID
    )

    assert "offset" not in json.loads(line)
