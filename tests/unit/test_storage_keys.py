"""check_key and content_key: the rules every object store relies on."""

from __future__ import annotations

import pytest

from pipeline.storage.base import check_key, content_key

SHA = "ab" + "0" * 62


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "audio/sha256/ab/abcd.flac",
        "results/tenant=acme/job-1.json",
        "x/y_z+1.A-b",
    ],
)
def test_check_key_returns_valid_keys_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "/",
        "a//b",
        "a/",
        "../x",
        "a/../b",
        "a/./b",
        ".",
        "..",
        "a b",
        "a\\b",
        "a/b\n",
        "a\nb",
        "ä",
        "a?b",
        "a#b",
        "a%2Fb",
        "a\x00b",
    ],
)
def test_check_key_rejects_keys_that_could_escape_or_confuse(key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        check_key(key)


def test_content_key_shards_by_first_two_hex_digits() -> None:
    assert content_key(SHA, "flac") == f"audio/sha256/ab/{SHA}.flac"


@pytest.mark.parametrize("ext", ["FLAC", ".flac", ".FlAc"])
def test_content_key_normalises_extension_case_and_dot(ext: str) -> None:
    assert content_key(SHA, ext) == f"audio/sha256/ab/{SHA}.flac"


def test_content_key_without_extension_has_no_suffix() -> None:
    assert content_key(SHA, "") == f"audio/sha256/ab/{SHA}"


def test_content_key_is_a_valid_key() -> None:
    assert check_key(content_key(SHA, "m4a")) == content_key(SHA, "m4a")


def test_content_key_is_deterministic_and_distinct_per_digest() -> None:
    other = "cd" + "1" * 62
    assert content_key(SHA, "wav") == content_key(SHA, "wav")
    assert content_key(SHA, "wav") != content_key(other, "wav")
    assert content_key(SHA, "wav") != content_key(SHA, "mp3")
