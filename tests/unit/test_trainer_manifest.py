"""The one manifest parser both trainers read: what each sees of a line, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.trainer.manifest import ManifestError, read_clips, read_manifest


def write(path: Path, *entries: object) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + "\n")
    return path


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    (tmp_path / "a.flac").write_bytes(b"not decoded by the parser")
    return tmp_path / "a.flac"


def test_the_whisper_trainer_keeps_the_text_and_the_reference_trainer_normalises_it(
    tmp_path: Path, audio: Path
) -> None:
    manifest = write(
        tmp_path / "train.jsonl",
        {
            "audio_filepath": "a.flac",
            "duration": 2,
            "text": " Guten  Morgen, Berlin! ",
            "lang": "de",
        },
        {"audio_filepath": str(audio), "offset": 2.5, "duration": 1, "text": "42", "audio_id": "x"},
    )
    first, second = read_clips(manifest)
    assert (first.audio_path, first.offset, first.duration) == (audio.resolve(), 0.0, 2.0)
    assert (first.text, first.language, first.where) == (
        "Guten Morgen, Berlin!",
        "de",
        f"{manifest}:1",
    )
    assert first.audio_id == "a.flac" and second.audio_id == "x" and second.language is None

    reference = read_manifest(str(manifest))
    # Digits are outside the reference vocabulary: that line has nothing left to learn.
    assert [u.text for u in reference.utterances] == ["guten morgen berlin"]
    assert reference.skipped_empty_text == 1


def test_relative_audio_is_found_from_the_given_base_directory(tmp_path: Path, audio: Path) -> None:
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    manifest = write(
        elsewhere / "dev.jsonl", {"audio_filepath": "a.flac", "duration": 1, "text": "hi"}
    )
    with pytest.raises(
        ManifestError, match=r"dev.jsonl:1: audio file not found: .*manifests/a.flac"
    ):
        read_clips(manifest)
    assert read_clips(manifest, base_dir=tmp_path)[0].audio_path == audio.resolve()


def test_a_frozen_version_read_in_place_finds_its_audio_by_object_key(tmp_path: Path) -> None:
    """The orchestrator's manifests in a local object store name audio by object key."""
    store = tmp_path / "objects"
    key = "audio/sha256/b9/b900.wav"
    (store / key).parent.mkdir(parents=True)
    (store / key).write_bytes(b"RIFF")
    version = store / "datasets" / "calls" / "tenants" / "acme" / "v3"
    version.mkdir(parents=True)
    (version / "dataset.json").write_text("{}")
    manifest = write(version / "train.jsonl", {"audio_filepath": key, "duration": 1, "text": "hi"})
    assert read_clips(manifest)[0].audio_path == (store / key).resolve()
    # Without dataset.json beside it, relative paths stay the manifest folder's.
    (version / "dataset.json").unlink()
    with pytest.raises(ManifestError, match="audio file not found"):
        read_clips(manifest)
    # A key that is nowhere is still named, with the way out.
    (version / "dataset.json").write_text("{}")
    missing = write(
        version / "dev.jsonl",
        {"audio_filepath": "audio/sha256/00/gone.wav", "duration": 1, "text": "x"},
    )
    with pytest.raises(ManifestError, match=r"dev.jsonl:1: audio file not found: .*materialize"):
        read_clips(missing)


GOOD = {"audio_filepath": "a.flac", "duration": 1, "text": "hi"}
DROP = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"audio_filepath": DROP}, ":1: missing field 'audio_filepath'"),
        ({"duration": True}, "field 'duration' has the wrong type (bool)"),
        ({"text": None}, "field 'text' has the wrong type (NoneType)"),
        ({"lang": 7}, "field 'lang' has the wrong type (int)"),
        ({"duration": 0}, "duration must be a number > 0, not 0.0"),
        ({"offset": -1}, "offset must be a number >= 0"),
        ({"audio_filepath": "s3://b/a.flac"}, "is remote; the reference trainer reads local"),
        (None, ":1: not a JSON object"),
    ],
)
def test_a_bad_line_is_refused_by_file_and_line_for_both_trainers(
    tmp_path: Path, audio: Path, changes: dict[str, object] | None, message: str
) -> None:
    entry: object = [1, 2]
    if changes is not None:
        entry = {k: v for k, v in (GOOD | changes).items() if v is not DROP}
    manifest = write(tmp_path / "train.jsonl", entry)
    for read in (read_clips, lambda m: read_manifest(str(m))):
        with pytest.raises(ManifestError) as refused:
            read(manifest)
        assert message in str(refused.value)
        assert str(refused.value).startswith(f"{manifest}:1: ")


def test_a_remote_or_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest s3://b/train.jsonl is not a local file"):
        read_clips("s3://b/train.jsonl")
    with pytest.raises(ManifestError, match="manifest not found: "):
        read_clips(tmp_path / "nope.jsonl")
