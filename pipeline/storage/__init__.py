"""Object storage: one interface, a filesystem and an S3 backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, content_key
from pipeline.storage.filesystem import FilesystemStore

if TYPE_CHECKING:
    from pipeline.config import StorageSettings

__all__ = [
    "FilesystemStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "content_key",
    "open_store",
]


def open_store(storage: StorageSettings, data_dir: Path) -> ObjectStore:
    """The S3 store when an endpoint is configured, else the filesystem store in ``data_dir``."""
    if storage.endpoint:
        from pipeline.storage.s3 import S3Store

        return S3Store.from_settings(storage)
    return FilesystemStore(data_dir / "objects", chunk_bytes=storage.chunk_bytes)
