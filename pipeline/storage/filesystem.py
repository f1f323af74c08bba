"""Object store on the local filesystem, under ``<data_dir>/objects``.

Writes go to a temporary file in the target directory, are fsynced and then
renamed into place, so a reader sees either nothing or the whole object. Objects
are private: directories 0700, files 0600 (``mkstemp``'s mode, kept by the rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import PermanentError, TransientError
from pipeline.permissions import make_private_dirs
from pipeline.storage.base import ObjectInfo, ObjectNotFound, check_key

CHUNK = 1024 * 1024


class FilesystemStore:
    def __init__(self, root: Path, *, chunk_bytes: int = CHUNK) -> None:
        self.root = root
        self.chunk_bytes = chunk_bytes
        make_private_dirs(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_stream(
        self, key: str, stream: BinaryIO, size: int, content_type: str | None = None
    ) -> ObjectInfo:
        target = self._path(key)
        make_private_dirs(target.parent)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        digest = hashlib.md5(usedforsecurity=False)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while written < size:
                    chunk = stream.read(min(self.chunk_bytes, size - written))
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                if written != size:
                    raise TransientError(
                        f"source ended after {written} of {size} bytes while storing {key}"
                    )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target)
            _fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return ObjectInfo(key=key, size=written, etag=digest.hexdigest())

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        import io

        return self.put_stream(key, io.BytesIO(data), len(data), content_type)

    def _open(self, key: str) -> BinaryIO:
        """The object's file, open for reading; the caller closes it."""
        try:
            return open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"object not found: {key}") from exc
        except OSError as exc:
            raise TransientError(f"cannot open object {key}: {exc.strerror}") from exc

    def download(self, key: str, dest: BinaryIO, *, etag: str | None = None) -> int:
        src = self._open(key)
        total = 0
        digest = hashlib.md5(usedforsecurity=False) if etag else None
        with src:
            while chunk := src.read(self.chunk_bytes):
                dest.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                total += len(chunk)
        if digest is not None and digest.hexdigest() != etag:
            raise PermanentError(f"object {key} changed since it was ingested")
        return total

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"object not found: {key}") from exc

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        src = self._open(key)
        with src:
            src.seek(start)
            left = length
            while left > 0 and (chunk := src.read(min(self.chunk_bytes, left))):
                left -= len(chunk)
                yield chunk

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key=key, size=st.st_size)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise TransientError(f"object store {self.root} is not writable")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
