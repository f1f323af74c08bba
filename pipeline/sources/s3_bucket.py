"""Read access to a user's bucket: objects under keys we did not choose.

A source bucket is never written to: ai2text stats, lists and reads objects
there, and the worker fetches audio pinned to the etag that was ingested.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from minio.datatypes import Object as MinioObject
from minio.helpers import DictType

from pipeline.config import StorageSettings
from pipeline.storage.s3 import S3Store, clean_etag

MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class SourceObject:
    bucket: str
    key: str
    size: int
    etag: str | None
    version_id: str | None
    last_modified: datetime | None


class SourceBucket(S3Store):
    """An S3 bucket holding user uploads (any key S3 allows)."""

    @classmethod
    def for_source(cls, connection: StorageSettings) -> SourceBucket:
        store = S3Store.from_settings(connection)
        return cls(
            store.client,
            connection.bucket,
            chunk_bytes=connection.chunk_bytes,
            region=connection.region,
            endpoint=store.endpoint,
        )

    def _check_key(self, key: str) -> str:
        if not key or "\x00" in key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(f"invalid S3 object key: {key!r}")
        return key

    def describe(self, key: str) -> SourceObject | None:
        """The object's current size, etag, version and age, or ``None`` if it is gone."""
        obj = self._stat_object(key)
        return None if obj is None else _source_object(self.bucket, obj)

    def read_head(self, key: str, length: int, *, etag: str | None) -> bytes:
        """The first ``length`` bytes (a ranged GET), pinned to ``etag`` when given."""
        self._check_key(key)
        headers: DictType | None = {"If-Match": f'"{etag}"'} if etag else None
        buf = io.BytesIO()
        with self._translate("download", key):
            response = self.client.get_object(
                self.bucket, key, offset=0, length=length, request_headers=headers
            )
            try:
                for chunk in response.stream(64 * 1024, decode_content=False):
                    buf.write(chunk)
            finally:
                response.close()
                response.release_conn()
        return buf.getvalue()

    def iter_objects(self, prefix: str) -> Iterator[SourceObject]:
        """Every object under ``prefix``, one page at a time (never the whole listing)."""
        with self._translate("list", prefix or "/"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.is_dir or obj.object_name is None:
                    continue
                yield _source_object(self.bucket, obj)


def _source_object(bucket: str, obj: MinioObject) -> SourceObject:
    return SourceObject(
        bucket=bucket,
        key=str(obj.object_name),
        size=int(obj.size or 0),
        etag=clean_etag(obj.etag),
        version_id=obj.version_id if obj.version_id not in (None, "null") else None,
        last_modified=obj.last_modified,
    )
