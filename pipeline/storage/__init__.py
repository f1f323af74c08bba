"""Object storage: one interface, a filesystem and an S3 backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, content_key
from pipeline.storage.filesystem import FilesystemStore

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = [
    "FilesystemStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "content_key",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    """The S3 store when an endpoint is configured, else the filesystem store."""
    if settings.storage.endpoint:
        from pipeline.storage.s3 import S3Store

        return S3Store.from_settings(settings.storage)
    return FilesystemStore(settings.data_dir / "objects", chunk_bytes=settings.storage.chunk_bytes)
