"""The ObjectStore contract, checked against the filesystem and the S3 backends.

The S3 backend talks HTTP to an in-process moto server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
import pytest

from pipeline.config import StorageSettings
from pipeline.errors import PermanentError, TransientError
from pipeline.storage.base import ObjectNotFound, ObjectStore
from pipeline.storage.filesystem import FilesystemStore
from pipeline.storage.s3 import MIN_PART_SIZE, S3Store, _split_endpoint

CHUNK = 64 * 1024
BIG = 12 * 1024 * 1024
ACCESS, SECRET = "testing", "testing"


def _s3_store(endpoint: str, bucket: str, **overrides: Any) -> S3Store:
    fields: dict[str, Any] = {
        "endpoint": endpoint,
        "access_key": ACCESS,
        "secret_key": SECRET,
        "bucket": bucket,
        "region": "us-east-1",
        "chunk_bytes": CHUNK,
        "timeout_s": 10,
    }
    return S3Store.from_settings(StorageSettings(**(fields | overrides)))


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects", chunk_bytes=CHUNK)


@pytest.fixture
def s3_store(moto_endpoint: str) -> S3Store:
    # The scheme in the endpoint overrides the default secure=True.
    store = _s3_store(f"http://{moto_endpoint}", f"test-{uuid.uuid4().hex[:20]}")
    store.check()  # creates the bucket, as the services do at start-up
    return store


def test_download_from_a_missing_bucket_is_transient_not_a_missing_object(
    moto_endpoint: str,
) -> None:
    store = _s3_store(f"http://{moto_endpoint}", f"absent-{uuid.uuid4().hex[:20]}")
    with pytest.raises(TransientError, match="does not exist"):
        store.download("audio/sha256/ab/abc.flac", io.BytesIO())


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    name = "fs_store" if request.param == "filesystem" else "s3_store"
    result: ObjectStore = request.getfixturevalue(name)
    return result


class _RecordingSink(io.RawIOBase):
    """A destination that hashes what it is given and remembers the largest write."""

    def __init__(self) -> None:
        super().__init__()
        self.sha = hashlib.sha256()
        self.largest = 0
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.largest = max(self.largest, len(data))
        self.total += len(data)
        return len(data)


class _ObservedStream(io.RawIOBase):
    """Wraps a source stream and calls ``on_read`` before every read."""

    def __init__(self, data: bytes, on_read: Callable[[], None]) -> None:
        super().__init__()
        self._src = io.BytesIO(data)
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._on_read()
        return self._src.read(size)


# -- both backends -------------------------------------------------------------


def test_large_object_round_trips_byte_for_byte_in_bounded_chunks(store: ObjectStore) -> None:
    data = os.urandom(BIG)
    info = store.put_stream("audio/big.bin", io.BytesIO(data), len(data), "audio/flac")
    assert info.key == "audio/big.bin"
    assert info.size == BIG

    sink = _RecordingSink()
    assert store.download("audio/big.bin", cast(BinaryIO, sink)) == BIG
    assert sink.sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert 0 < sink.largest <= CHUNK

    stat = store.stat("audio/big.bin")
    assert stat is not None
    assert stat.size == BIG


def test_download_pinned_to_the_etag_from_put_succeeds(store: ObjectStore) -> None:
    data = os.urandom(200_000)
    info = store.put_stream("a/pinned.bin", io.BytesIO(data), len(data))
    assert info.etag
    dest = io.BytesIO()
    assert store.download("a/pinned.bin", dest, etag=info.etag) == len(data)
    assert dest.getvalue() == data


def test_download_with_a_different_etag_raises_permanent_error(store: ObjectStore) -> None:
    info = store.put_bytes("a/doc.json", b'{"v": 1}', "application/json")
    assert info.etag != "0" * 32
    with pytest.raises(PermanentError, match="changed since it was ingested"):
        store.download("a/doc.json", io.BytesIO(), etag="0" * 32)


def test_download_after_overwrite_with_old_etag_raises_permanent_error(
    store: ObjectStore,
) -> None:
    old = store.put_bytes("a/doc.json", b"version one")
    store.put_bytes("a/doc.json", b"version two")
    with pytest.raises(PermanentError):
        store.download("a/doc.json", io.BytesIO(), etag=old.etag)


def test_put_bytes_then_get_bytes_returns_the_same_bytes(store: ObjectStore) -> None:
    info = store.put_bytes("results/job-1.json", b'{"text": "hello"}', "application/json")
    assert info.size == len(b'{"text": "hello"}')
    assert store.get_bytes("results/job-1.json") == b'{"text": "hello"}'


def test_put_bytes_of_an_empty_document_round_trips(store: ObjectStore) -> None:
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""
    stat = store.stat("empty")
    assert stat is not None
    assert stat.size == 0


def test_stat_of_a_missing_object_is_none(store: ObjectStore) -> None:
    assert store.stat("no/such/object") is None


def test_download_of_a_missing_object_raises_object_not_found(store: ObjectStore) -> None:
    dest = io.BytesIO()
    with pytest.raises(ObjectNotFound):
        store.download("no/such/object", dest)
    assert dest.getvalue() == b""


def test_get_bytes_of_a_missing_object_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no/such/object")


def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    store.delete("never/existed")
    store.put_bytes("a/gone.txt", b"x")
    store.delete("a/gone.txt")
    assert store.stat("a/gone.txt") is None
    store.delete("a/gone.txt")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", ""])
def test_every_method_rejects_invalid_keys(store: ObjectStore, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put_stream(key, io.BytesIO(b"x"), 1),
        lambda: store.put_bytes(key, b"x"),
        lambda: store.download(key, io.BytesIO()),
        lambda: store.get_bytes(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.uri(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid object key"):
            call()


@pytest.mark.parametrize("size", [1000, BIG], ids=["single-part", "multipart"])
def test_short_source_stream_raises_and_leaves_no_object(store: ObjectStore, size: int) -> None:
    data = os.urandom(size // 2)
    with pytest.raises(TransientError, match=f"source ended after {len(data)} of {size}"):
        store.put_stream("a/short.bin", io.BytesIO(data), size)
    assert store.stat("a/short.bin") is None


def test_object_is_invisible_until_put_stream_completes(store: ObjectStore) -> None:
    seen: list[object] = []
    data = os.urandom(6 * 1024 * 1024)
    stream = _ObservedStream(data, lambda: seen.append(store.stat("a/partial.bin")))
    store.put_stream("a/partial.bin", cast(BinaryIO, stream), len(data))
    assert len(seen) >= 2  # observed after some bytes had already been consumed
    assert seen == [None] * len(seen)
    assert store.stat("a/partial.bin") is not None


def test_check_passes_on_a_healthy_store(store: ObjectStore) -> None:
    store.check()


# -- filesystem only -----------------------------------------------------------


def test_fs_short_source_stream_leaves_no_temp_file(fs_store: FilesystemStore) -> None:
    with pytest.raises(TransientError):
        fs_store.put_stream("a/short.bin", io.BytesIO(b"abc"), 10)
    assert [p for p in fs_store.root.rglob("*") if not p.is_dir()] == []


def test_fs_partial_object_is_never_visible_at_its_path(fs_store: FilesystemStore) -> None:
    target = fs_store.root / "a" / "partial.bin"
    seen: list[bool] = []
    data = os.urandom(4 * CHUNK)
    stream = _ObservedStream(data, lambda: seen.append(target.exists()))
    fs_store.put_stream("a/partial.bin", cast(BinaryIO, stream), len(data))
    assert len(seen) >= 4
    assert not any(seen)
    assert target.read_bytes() == data


# -- S3 only -------------------------------------------------------------------


def test_s3_large_upload_is_multipart_with_parts_of_at_least_5_mib(s3_store: S3Store) -> None:
    assert s3_store.part_size == MIN_PART_SIZE
    data = os.urandom(BIG)
    info = s3_store.put_stream("a/big.bin", io.BytesIO(data), len(data))
    assert info.etag is not None
    assert info.etag.endswith("-3")  # 5 MiB + 5 MiB + 2 MiB


def test_s3_part_size_rounds_chunk_bytes_up_to_a_multiple_of_5_mib() -> None:
    store = _s3_store("127.0.0.1:1", "unused", chunk_bytes=6 * 1024 * 1024, secure=False)
    assert store.part_size == 2 * MIN_PART_SIZE


def test_s3_short_multipart_upload_is_aborted(s3_store: S3Store, moto_endpoint: str) -> None:
    with pytest.raises(TransientError):
        s3_store.put_stream("a/short.bin", io.BytesIO(os.urandom(7 * 1024 * 1024)), BIG)
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{moto_endpoint}",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    uploads = s3.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", [])
    assert uploads == []


def test_s3_bare_endpoint_uses_the_secure_setting(moto_endpoint: str) -> None:
    store = _s3_store(moto_endpoint, f"test-{uuid.uuid4().hex[:20]}", secure=False)
    store.check()
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


@pytest.mark.parametrize(
    ("endpoint", "secure", "expected"),
    [
        ("minio:9000", True, ("minio:9000", True)),
        ("minio:9000", False, ("minio:9000", False)),
        ("http://minio:9000", True, ("minio:9000", False)),
        ("https://minio:9000/", False, ("minio:9000", True)),
    ],
)
def test_s3_endpoint_scheme_decides_tls(
    endpoint: str, secure: bool, expected: tuple[str, bool]
) -> None:
    assert _split_endpoint(endpoint, secure) == expected


def test_s3_uri_names_bucket_and_key(s3_store: S3Store) -> None:
    assert s3_store.uri("audio/x.flac") == f"s3://{s3_store.bucket}/audio/x.flac"


def test_s3_check_creates_a_missing_bucket(moto_endpoint: str) -> None:
    s3_store = _s3_store(f"http://{moto_endpoint}", f"test-{uuid.uuid4().hex[:20]}")
    assert not s3_store.client.bucket_exists(s3_store.bucket)
    s3_store.check()
    assert s3_store.client.bucket_exists(s3_store.bucket)


def test_s3_put_after_bucket_vanished_fails_transiently_then_recreates_it(
    s3_store: S3Store,
) -> None:
    s3_store.put_bytes("k", b"v1")
    s3_store.delete("k")
    s3_store.client.remove_bucket(s3_store.bucket)
    with pytest.raises(TransientError, match="NoSuchBucket"):
        s3_store.put_bytes("k", b"v2")
    s3_store.put_bytes("k", b"v3")
    assert s3_store.get_bytes("k") == b"v3"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_s3_store_is_constructed_even_when_the_endpoint_is_down() -> None:
    _s3_store(f"127.0.0.1:{_closed_port()}", "down", secure=False, timeout_s=0.5)


@pytest.mark.parametrize("operation", ["check", "download", "stat", "put_bytes"])
def test_s3_unreachable_endpoint_raises_transient_error_quickly(operation: str) -> None:
    store = _s3_store(f"127.0.0.1:{_closed_port()}", "down", secure=False, timeout_s=0.5)
    calls: dict[str, Callable[[], object]] = {
        "check": store.check,
        "download": lambda: store.download("a/b", io.BytesIO()),
        "stat": lambda: store.stat("a/b"),
        "put_bytes": lambda: store.put_bytes("a/b", b"x"),
    }
    started = time.monotonic()
    with pytest.raises(TransientError, match="127.0.0.1"):
        calls[operation]()
    assert time.monotonic() - started < 5


def test_s3_silent_server_times_out_with_transient_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections complete in the backlog but are never answered
        port = listener.getsockname()[1]
        store = _s3_store(f"127.0.0.1:{port}", "silent", secure=False, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            store.download("a/b", io.BytesIO())
        assert time.monotonic() - started < 5


class _FixedReplyHandler(BaseHTTPRequestHandler):
    """Answers every request with the server's configured status and S3 error code."""

    server: _FixedReplyServer

    def _reply(self) -> None:
        self.server.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.server.code}</Code>"
            "<Message>injected</Message></Error>"
        ).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FixedReplyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, code: str) -> None:
        super().__init__(("127.0.0.1", 0), _FixedReplyHandler)
        self.status = status
        self.code = code
        self.requests = 0


@contextmanager
def _fixed_reply_server(status: int, code: str) -> Iterator[_FixedReplyServer]:
    server = _FixedReplyServer(status, code)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("status", "code", "error", "attempts"),
    [
        (503, "SlowDown", TransientError, 4),  # retried 3 times by urllib3, then translated
        (500, "InternalError", TransientError, 4),
        (403, "AccessDenied", TransientError, 1),
        (400, "InvalidArgument", PermanentError, 1),
    ],
)
def test_s3_server_errors_are_translated_after_bounded_retries(
    status: int, code: str, error: type[Exception], attempts: int
) -> None:
    with _fixed_reply_server(status, code) as server:
        port = server.server_address[1]
        store = _s3_store(f"127.0.0.1:{port}", "bucket", secure=False, timeout_s=2)
        started = time.monotonic()
        with pytest.raises(error, match="cannot download a/b"):
            store.download("a/b", io.BytesIO())
        assert time.monotonic() - started < 5
        assert server.requests == attempts
