"""Getting a job's audio onto local disk, and adopting objects fetched from a source bucket.

Audio already in the object store is streamed into a private temp file. Audio
that was left in a user's bucket is streamed from there pinned to the ingested
etag, hashed on the way, fully validated, copied into the content-addressed
store, and then either adopted (sha256 recorded; a variant of the content's
original when it is held but not transcribed as this job asks) or marked a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.config import ValidationSettings
from pipeline.db import audio as audio_store
from pipeline.db import jobs
from pipeline.db.audio import StoredContent
from pipeline.db.database import Database
from pipeline.errors import Conflict, PermanentError, RejectedInput, TransientError
from pipeline.ingest.sharing import transcribed_alike
from pipeline.ingest.validation import extension_of, validate
from pipeline.media import AudioInfo
from pipeline.sources.registry import SourceRegistry
from pipeline.staging import process_staging_dir
from pipeline.storage import ObjectNotFound, ObjectStore, content_key


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    # Set only for audio fetched from a source bucket: what the database must learn.
    sha256: str | None = None
    storage_key: str | None = None
    info: AudioInfo | None = None


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.out.write(data)


def fetch(
    job: jobs.ClaimedJob,
    *,
    validation: ValidationSettings,
    temp_dir: Path,
    store: ObjectStore,
    sources: SourceRegistry,
) -> Fetched:
    """Blocking: put the job's audio in a private temp file (the caller removes it).

    The file is staged under ``temp_dir``; audio from a source bucket must pass ``validation``.
    """
    ext = extension_of(job.storage_key or job.source_key or "")
    fd, name = tempfile.mkstemp(
        prefix="ai2text-",
        suffix=f".{ext}" if ext else "",
        dir=process_staging_dir(temp_dir),
    )
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as tmp:
            if job.storage_key is not None:
                try:
                    store.download(job.storage_key, tmp)
                except ObjectNotFound as exc:
                    raise PermanentError(f"stored audio is missing: {job.storage_key}") from exc
                return Fetched(path)
            sha256 = _download_from_source(job, tmp, sources)
        return _validate_and_store(job, path, sha256, ext, validation=validation, store=store)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _download_from_source(job: jobs.ClaimedJob, tmp: BinaryIO, sources: SourceRegistry) -> str:
    assert job.source_bucket is not None and job.source_key is not None
    bucket = sources.bucket(job.source_bucket)
    if bucket is None:
        raise TransientError(f"this worker has no connection for bucket {job.source_bucket}")
    writer = _HashingWriter(tmp)
    try:
        bucket.download(job.source_key, writer, etag=job.source_etag)  # type: ignore[arg-type]
    except ObjectNotFound as exc:
        raise PermanentError(
            f"source object s3://{job.source_bucket}/{job.source_key} was deleted before"
            " it could be transcribed"
        ) from exc
    return writer.digest.hexdigest()


def _validate_and_store(
    job: jobs.ClaimedJob,
    path: Path,
    sha256: str,
    ext: str,
    *,
    validation: ValidationSettings,
    store: ObjectStore,
) -> Fetched:
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            info = validate(f, name=job.source_key or path.name, size=size, settings=validation)
        except RejectedInput as exc:
            raise PermanentError(f"not acceptable audio: {exc.reason}") from exc
        key = content_key(sha256, ext)
        if store.stat(key) is None:
            f.seek(0)
            store.put_stream(key, f, size)
    return Fetched(path, sha256=sha256, storage_key=key, info=info)


async def adopt(db: Database, job: jobs.ClaimedJob, fetched: Fetched) -> uuid.UUID | None:
    """Record the fetched content on the audio row; return the row it duplicates, if any.

    A duplicate's job is finished here (fenced by the lease) and needs no transcription.
    Content held already whose transcriptions this job may not share (other options, or
    a transcript by a model since replaced: ``pipeline.ingest.sharing``) becomes a
    variant of its original, and the job transcribes it.
    """
    assert fetched.sha256 is not None and fetched.storage_key is not None
    assert fetched.info is not None
    content = StoredContent(fetched.sha256, fetched.storage_key, fetched.info)
    for _ in range(3):
        try:
            async with db.connection() as conn, conn.transaction():
                original = await audio_store.find_original(
                    conn, tenant=job.tenant, sha256=fetched.sha256, other_than=job.audio_id
                )
                alike = None
                if original is not None:
                    alike = await transcribed_alike(
                        conn,
                        tenant=job.tenant,
                        sha256=fetched.sha256,
                        options=job.options,
                        other_than=job.audio_id,
                    )
                variant_of = original if alike is None else None
                await audio_store.adopt_fetched(
                    conn, job.audio_id, content, duplicate_of=alike, variant_of=variant_of
                )
                if alike is None:
                    return None
                await jobs.finish_without_transcript(conn, job)
                await jobs.notify_finished(conn, job.audio_id)
                return alike
        except Conflict:
            continue  # the same content was adopted concurrently: now it is a duplicate
    raise TransientError("could not record fetched audio: concurrent updates")
