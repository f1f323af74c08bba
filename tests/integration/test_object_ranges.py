"""``ObjectStore.read_range`` on both backends: exact bytes, bounded chunks, missing objects.

The S3 backend does one ranged GET against an in-process moto server on 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from pipeline.config import StorageSettings
from pipeline.storage.base import ObjectNotFound, ObjectStore
from pipeline.storage.filesystem import FilesystemStore
from pipeline.storage.s3 import S3Store

CHUNK = 64 * 1024
SIZE = 5 * CHUNK + 123


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "objects", chunk_bytes=CHUNK)
    endpoint = request.getfixturevalue("moto_endpoint")
    s3 = S3Store.from_settings(
        StorageSettings(
            endpoint=f"http://{endpoint}",
            access_key="testing",
            secret_key="testing",
            bucket=f"ranges-{uuid.uuid4().hex[:16]}",
            region="us-east-1",
            chunk_bytes=CHUNK,
            timeout_s=10,
        )
    )
    s3.check()
    return s3


def test_read_range_yields_exactly_the_asked_bytes_in_bounded_chunks(store: ObjectStore) -> None:
    data = os.urandom(SIZE)
    store.put_stream("audio/r.bin", io.BytesIO(data), SIZE)
    for start, length in ((0, SIZE), (0, 1), (CHUNK - 1, 2), (1000, 3 * CHUNK), (SIZE - 5, 5)):
        chunks = list(store.read_range("audio/r.bin", start, length))
        assert b"".join(chunks) == data[start : start + length], (start, length)
        assert all(0 < len(c) <= CHUNK for c in chunks)


def test_read_range_of_a_missing_object_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        list(store.read_range("audio/absent.bin", 0, 10))


def test_a_range_read_closed_early_releases_the_object(store: ObjectStore) -> None:
    data = os.urandom(SIZE)
    store.put_stream("audio/early.bin", io.BytesIO(data), SIZE)
    reader = store.read_range("audio/early.bin", 0, SIZE)
    first = next(reader)
    assert first and first == data[: len(first)]
    reader.close()  # the player went away: no error, nothing left open
    assert b"".join(store.read_range("audio/early.bin", 0, SIZE)) == data
