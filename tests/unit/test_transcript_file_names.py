"""Where transcript files of a drop or an S3 object go, from what the audio row records."""

from __future__ import annotations

import uuid
from pathlib import Path, PurePosixPath

import pytest

from pipeline.config import S3SourceSettings, WatchSettings
from pipeline.deliveries.bucket import source_object, source_of
from pipeline.deliveries.files import SourceAudio
from pipeline.deliveries.outbox import file_stem, outbox_root


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("call.mp3", "call"),
        ("calls/monday/call.v2.mp3", "calls/monday/call.v2"),
        ("no-extension", "no-extension"),
        (".hidden.wav", ".hidden"),
    ],
)
def test_the_file_stem_keeps_every_part_of_the_name_but_the_extension(name: str, stem: str) -> None:
    assert file_stem(name) == PurePosixPath(stem)


@pytest.mark.parametrize("name", ["", "/etc/passwd.wav", "../up.wav", "a/../../b.wav"])
def test_a_name_that_is_not_a_path_inside_the_inbox_gets_no_files(name: str) -> None:
    assert file_stem(name) is None


def test_the_outbox_root_of_each_setting(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    watch = WatchSettings(inbox=inbox)
    assert outbox_root(watch) == inbox / "transcripts"
    assert outbox_root(watch.model_copy(update={"outbox": "beside"})) == inbox / "processed"
    assert outbox_root(watch.model_copy(update={"outbox": "off"})) is None
    own = tmp_path / "out"
    assert outbox_root(watch.model_copy(update={"outbox": own})) == own


def audio(uri: str, bucket: str | None = None, key: str | None = None) -> SourceAudio:
    return SourceAudio(uuid.uuid4(), "default", "s3", "x", uri, bucket, key)


def test_the_source_object_comes_from_the_row_or_its_uri() -> None:
    assert source_object(audio("s3://b/k", "bucket", "in/a b.mp3")) == ("bucket", "in/a b.mp3")
    assert source_object(audio("s3://bucket/in/calls/a.mp3")) == ("bucket", "in/calls/a.mp3")
    assert source_object(audio("file:///inbox/a.mp3")) is None
    assert source_object(audio("s3://bucket/")) is None


def test_the_most_specific_source_of_a_key_decides_its_output() -> None:
    broad = S3SourceSettings(bucket="b", output_bucket="all")
    narrow = S3SourceSettings(bucket="b", prefix="calls/", output_bucket="calls")
    other = S3SourceSettings(bucket="c", output_bucket="c-out")
    sources = [broad, narrow, other]
    assert source_of(sources, "b", "calls/a.mp3") is narrow
    assert source_of(sources, "b", "memos/a.mp3") is broad
    assert source_of(sources, "d", "a.mp3") is None
