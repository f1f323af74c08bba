"""Transcript files of S3 sources, put into the source's output bucket (target 'bucket').

An ``s3_sources`` entry with ``output_bucket`` receives ``<output_prefix><source key>.<fmt>``
for each of its ``output_formats`` (``calls/a.mp3`` → ``calls/a.mp3.txt``), over the
source's own connection. The keys are fixed by the source key, so a delivery repeated
(at least once) puts the same bytes again, and a newer version of the object replaces
them; an older version delivered late writes nothing (``files.current_version``).

The output bucket is the user's: it is never created, and a refused or failed PUT
raises ``DeliveryFailed`` so the runner tries again later, with backoff.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from urllib.parse import urlsplit

import structlog

from pipeline.config import (
    ALL_OUTPUT_FORMATS,
    S3SourceSettings,
    StorageSettings,
    SubtitleSettings,
)
from pipeline.db.database import Database
from pipeline.deliveries.base import DeliveryFailed, Event
from pipeline.deliveries.files import (
    DB_SLOTS,
    MEDIA_TYPES,
    SourceAudio,
    current_version,
    render_files,
)
from pipeline.errors import Ai2TextError
from pipeline.sources.s3_bucket import SourceBucket

log = structlog.get_logger(__name__)

TARGET = "bucket"


class OutputBucket(SourceBucket):
    """A user's bucket that receives transcripts under keys their sources chose."""

    def put_document(self, key: str, data: bytes, content_type: str) -> None:
        """One small object, without creating the bucket (``put_bytes`` would)."""
        self._check_key(key)
        with self._translate("store", key):
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), length=len(data), content_type=content_type
            )


def source_object(audio: SourceAudio) -> tuple[str, str] | None:
    """``(bucket, key)`` of an S3 source's object, from its row (or its ``s3://`` URI)."""
    if audio.source_bucket and audio.source_key:
        return audio.source_bucket, audio.source_key
    parts = urlsplit(audio.source_uri)
    if parts.scheme != "s3" or not parts.netloc or len(parts.path) < 2:
        return None
    return parts.netloc, parts.path[1:]


def source_of(
    sources: Sequence[S3SourceSettings], bucket: str, key: str
) -> S3SourceSettings | None:
    """The most specific source watching ``key`` (as ``SourceRegistry.match`` decides)."""
    candidates = [s for s in sources if s.bucket == bucket and key.startswith(s.prefix)]
    return max(candidates, key=lambda s: len(s.prefix), default=None)


class BucketHandler:
    """Puts a transcribed S3 object's files into its source's output bucket."""

    def __init__(
        self,
        s3_sources: Sequence[S3SourceSettings],
        storage: StorageSettings,
        subtitles: SubtitleSettings,
        db: Database,
    ) -> None:
        self.sources = list(s3_sources)
        # The runner's bound on one delivery: a PUT per format, each within the
        # connection's timeout (a PUT that takes longer is tried again later).
        self.timeout_s = storage.timeout_s * len(ALL_OUTPUT_FORMATS)
        self.storage = storage
        self.subtitles = subtitles
        self.db = db
        self._buckets: dict[int, OutputBucket] = {}
        # Each delivery holds a pooled connection (and its source's lock) during its PUTs.
        self._slots = asyncio.Semaphore(DB_SLOTS)

    def _output_of(self, source: S3SourceSettings) -> OutputBucket:
        bucket = self._buckets.get(id(source))
        if bucket is None:
            connection = source.connection(self.storage).model_copy(
                update={"bucket": source.output_bucket}
            )
            base = SourceBucket.for_source(connection)
            bucket = OutputBucket(
                base.client,
                base.bucket,
                chunk_bytes=base.chunk_bytes,
                region=base.region,
                endpoint=base.endpoint,
            )
            self._buckets[id(source)] = bucket
        return bucket

    async def deliver(self, event: Event, target: str) -> None:
        try:
            await self._deliver(event, target)
        except (Ai2TextError, ValueError, OSError) as exc:
            raise DeliveryFailed(f"cannot put transcript files: {exc}") from exc

    async def _deliver(self, event: Event, target: str) -> None:
        async with self._slots, current_version(self.db, event.audio_id, target=target) as current:
            if current is None:
                log.info(
                    "bucket: not the latest version, nothing put", audio_id=str(event.audio_id)
                )
                return
            where = source_object(current.audio)
            source = None if where is None else source_of(self.sources, *where)
            if where is None or source is None or not source.output_bucket:
                return  # no output bucket for this source: nothing to deliver
            files = render_files(current.transcript, source.output_formats, self.subtitles)
            output = self._output_of(source)
            keys = [f"{source.output_prefix}{where[1]}.{fmt}" for fmt in files]
            for key, (fmt, data) in zip(keys, files.items(), strict=True):
                media_type = f"{MEDIA_TYPES[fmt]}; charset=utf-8"
                await asyncio.to_thread(output.put_document, key, data, media_type)
        log.info(
            "transcript files put",
            audio_id=str(event.audio_id),
            bucket=source.output_bucket,
            keys=keys,
        )
