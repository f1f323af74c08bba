"""Which watched source a bucket/key belongs to, and the connection to reach it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.config import S3SourceSettings, StorageSettings
from pipeline.ingest.validation import extension_of
from pipeline.sources.s3_bucket import SourceBucket


@dataclass(frozen=True, slots=True)
class WatchedSource:
    settings: S3SourceSettings
    bucket: SourceBucket
    suffixes: tuple[str, ...]

    def wants(self, key: str) -> bool:
        """Under the prefix, and named like audio we accept."""
        return key.startswith(self.settings.prefix) and extension_of(key) in self.suffixes


def watched_buckets(s3_sources: Sequence[S3SourceSettings]) -> frozenset[str]:
    """The buckets some ``s3_sources`` entry watches; no connection is made.

    The webhook receiver refuses events for any other bucket before storing them.
    """
    return frozenset(src.bucket for src in s3_sources)


class SourceRegistry:
    """The ``s3_sources``, reached with ``storage``'s connection settings where they say
    none; a source without ``suffixes`` wants the ``allowed_extensions``."""

    def __init__(
        self,
        s3_sources: Sequence[S3SourceSettings],
        *,
        storage: StorageSettings,
        allowed_extensions: Sequence[str],
    ) -> None:
        self.sources: list[WatchedSource] = []
        buckets: dict[str, SourceBucket] = {}
        for src in s3_sources:
            connection = src.connection(storage)
            if src.bucket not in buckets:
                buckets[src.bucket] = SourceBucket.for_source(connection)
            suffixes = tuple(s.lower().lstrip(".") for s in (src.suffixes or allowed_extensions))
            self.sources.append(WatchedSource(src, buckets[src.bucket], suffixes))
        self._buckets = buckets

    def __bool__(self) -> bool:
        return bool(self.sources)

    def match(self, bucket: str, key: str) -> WatchedSource | None:
        """The most specific watched prefix that contains ``key``, if any."""
        candidates = [
            s
            for s in self.sources
            if s.settings.bucket == bucket and key.startswith(s.settings.prefix)
        ]
        return max(candidates, key=lambda s: len(s.settings.prefix), default=None)

    def bucket(self, name: str) -> SourceBucket | None:
        return self._buckets.get(name)
