"""The object store interface shared by the filesystem and S3 backends.

Keys are relative, ``/``-separated names such as ``audio/sha256/ab/abcd….flac``.
Bytes move in bounded chunks: no method reads a whole object into memory except
``get_bytes``/``put_bytes``, which are meant for small JSON documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pipeline.errors import Ai2TextError

_KEY_PART = re.compile(r"^[A-Za-z0-9._=+\-]+$")


class ObjectNotFound(Ai2TextError):
    """The requested object does not exist."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or confuse a backend."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(p in ("", ".", "..") or not _KEY_PART.fullmatch(p) for p in parts)
    ):
        raise ValueError(f"invalid object key: {key!r}")
    return key


def content_key(sha256: str, extension: str) -> str:
    """The content-addressed key under which accepted audio is stored."""
    ext = extension.lower().lstrip(".")
    suffix = f".{ext}" if ext else ""
    return f"audio/sha256/{sha256[:2]}/{sha256}{suffix}"


class ObjectStore(Protocol):
    """Bytes by key. Implementations must be safe to call from several threads."""

    def put_stream(
        self, key: str, stream: BinaryIO, size: int, content_type: str | None = None
    ) -> ObjectInfo:
        """Store exactly ``size`` bytes read from ``stream`` under ``key``, atomically."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        """Store a small document under ``key``, atomically."""
        ...

    def download(self, key: str, dest: BinaryIO, *, etag: str | None = None) -> int:
        """Stream the object into ``dest`` in bounded chunks; return the byte count.

        Raises ``ObjectNotFound`` if it is missing, ``PermanentError`` if ``etag``
        is given and the object no longer has it, ``TransientError`` on I/O trouble.
        """
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small document."""
        ...

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``start + length`` of the object, in bounded chunks.

        A generator: the object is opened on the first ``next()`` (``ObjectNotFound``
        then if it is missing) and released when the generator ends or is closed.
        """
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and etag of the object, or ``None`` if it does not exist."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object if it exists."""
        ...

    def uri(self, key: str) -> str:
        """Where a trainer or a person can find the object (path or ``s3://``)."""
        ...

    def check(self) -> None:
        """Raise ``TransientError`` if the store is unreachable."""
        ...
