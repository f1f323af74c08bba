"""The one ingest path every source feeds: validate, hash, store, record, enqueue.

Idempotent twice over: a source version already recorded (same path and
fingerprint, or same bucket/key/etag) is a no-op, and content already held
(same sha256 under any name, within one tenant) becomes a ``duplicate`` row
pointing at the first. Dedupe never crosses tenants: that would tell one tenant
what another holds.

A row marked ``supersede_pending`` is superseded by the next version recorded
for the same source, in the same transaction. The rows themselves are written
by ``pipeline.db.audio`` and ``pipeline.db.jobs``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import structlog

from pipeline.choices import TranscriptionPolicy, UnsupportedLanguage
from pipeline.config import TranscriptionChoices, ValidationSettings
from pipeline.db import audio as audio_store
from pipeline.db.audio import NewContent, RecordedVersion, StoredContent
from pipeline.db.audio import RemoteObject as RemoteObject  # sources name it from here
from pipeline.db.database import AsyncConn, Database
from pipeline.db.jobs import Priority, enqueue, enqueue_many
from pipeline.db.states import AudioState
from pipeline.errors import Conflict, RejectCode, RejectedInput, TransientError
from pipeline.ingest.batching import Batcher
from pipeline.ingest.sharing import transcribed_alike
from pipeline.ingest.validation import extension_of, validate
from pipeline.media import AudioInfo, HeadInfo, IncompleteAudio
from pipeline.metrics import Metrics
from pipeline.storage import ObjectStore, content_key

log = structlog.get_logger(__name__)

Outcome = Literal["accepted", "duplicate", "rejected", "already_ingested"]
HASH_CHUNK = 1024 * 1024
# The ``source`` label of the ingest counters: uploads arrive through the API.
SOURCE_LABELS = {"folder": "folder", "s3": "s3", "upload": "api"}


class SourceChanged(TransientError):
    """The source changed while it was being read; it will be tried again."""


class StillArriving(TransientError):
    """The file's header promises more audio than it holds yet: wait for the rest."""

    def __init__(self, incomplete: IncompleteAudio) -> None:
        super().__init__(incomplete.reason)
        self.reason = incomplete.reason
        self.code: RejectCode = incomplete.code


@dataclass(frozen=True, slots=True)
class Arrival:
    """One delivery of a file or object, before anything is known about its content."""

    source: Literal["folder", "s3", "upload"]
    original_name: str
    source_uri: str
    source_version: str | None
    tenant: str = "default"
    # "high" for interactive requests a person is waiting on (see jobs.Priority).
    priority: Priority = "normal"


@dataclass(frozen=True, slots=True)
class Examined:
    """What validating and hashing a source found (possibly in another process)."""

    info: AudioInfo
    sha256: str


@dataclass(frozen=True, slots=True)
class _Pending:
    """A file to record, waiting for the next batch."""

    arrival: Arrival
    content: StoredContent
    size: int
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome
    audio_id: uuid.UUID
    reason: str | None = None
    duplicate_of: uuid.UUID | None = None


class Ingestor:
    """Takes the ``validation`` rules and the queue's ``max_attempts`` for new jobs."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        *,
        validation: ValidationSettings,
        max_attempts: int,
        metrics: Metrics,
        policy: TranscriptionPolicy,
        priority_head_start_s: float = 0.0,
    ) -> None:
        self.validation = validation
        self.max_attempts = max_attempts
        self.priority_head_start_s = priority_head_start_s
        self.db = db
        self.store = store
        self.metrics = metrics
        self.policy = policy
        # Files arriving together (a flood) are looked up and recorded in batches.
        self._lookups: Batcher[tuple[str, str], RecordedVersion | None] = Batcher(
            self._find_versions
        )
        self._records: Batcher[_Pending, IngestResult] = Batcher(self._record_batch)

    async def find_existing(self, arrival: Arrival) -> IngestResult | None:
        """The earlier result for this exact source version, if it was ingested."""
        if arrival.source_version is None:
            return None
        row = await self._lookups.submit((arrival.source_uri, arrival.source_version))
        return None if row is None else _earlier_result(row)

    async def _find_versions(
        self, versions: Sequence[tuple[str, str]]
    ) -> list[RecordedVersion | None]:
        async with self.db.connection() as conn:
            if len(versions) == 1:
                return [await audio_store.find_version(conn, *versions[0])]
            found = await audio_store.find_versions(conn, versions)
        return [found.get(v) for v in versions]

    async def ingest(
        self,
        arrival: Arrival,
        source: BinaryIO,
        size: int,
        *,
        unchanged: Callable[[], bool] | None = None,
        options: dict[str, Any] | None = None,
        choices: TranscriptionChoices | None = None,
        wait_if_incomplete: bool = False,
        examine: Callable[[], Awaitable[Examined]] | None = None,
        looked_up: bool = False,
    ) -> IngestResult:
        """Ingest ``size`` bytes of ``source``; ``unchanged`` re-checks the source before commit.

        ``choices`` are the source's (folder, bucket) and ``options`` the request's;
        with the tenant's defaults they become the job's options. With
        ``wait_if_incomplete``, audio whose header promises more than the file holds
        raises ``StillArriving`` instead of being rejected (the hot folder waits for a
        writer that is not done). ``examine``, if given, validates and hashes the source
        instead of this process (the hot folder's pool of processes); it raises what
        ``validate`` raises. ``looked_up``: the caller has just found no earlier ingest
        of this source version (``find_existing``), so it is not looked up again.
        """
        existing = None if looked_up else await self.find_existing(arrival)
        if existing is not None:
            return existing
        try:
            job_options = await self.job_options(arrival, choices, options)
        except UnsupportedLanguage as refusal:
            return await self.reject(arrival, refusal.reason, size=size, code=refusal.code)
        examined: Examined | None = None
        try:
            if examine is not None:
                examined = await examine()
                info = examined.info
            else:
                info = await asyncio.to_thread(
                    validate,
                    source,
                    name=arrival.original_name,
                    size=size,
                    settings=self.validation,
                )
        except IncompleteAudio as incomplete:
            if wait_if_incomplete:
                raise StillArriving(incomplete) from incomplete
            return await self.reject(arrival, incomplete.reason, size=size, code=incomplete.code)
        except RejectedInput as rejection:
            return await self.reject(arrival, rejection.reason, size=size, code=rejection.code)
        if examined is not None:
            sha256 = examined.sha256
        else:
            sha256 = await asyncio.to_thread(sha256_of, source, size)
        key = content_key(sha256, extension_of(arrival.original_name))
        await asyncio.to_thread(self._store_content, key, source, size)
        if unchanged is not None and not unchanged():
            raise SourceChanged(f"{arrival.original_name} changed while it was read")
        content = StoredContent(sha256=sha256, storage_key=key, info=info)
        return await self._records.submit(_Pending(arrival, content, size, job_options))

    async def job_options(
        self,
        arrival: Arrival,
        choices: TranscriptionChoices | None = None,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The job's options for this arrival; ``UnsupportedLanguage`` if the model can't."""
        if self.policy.ready_for(request):  # the usual case: no thread hop per file
            return self.policy.options_for(arrival.tenant, choices, request)
        return await asyncio.to_thread(self.policy.options_for, arrival.tenant, choices, request)

    async def reject(
        self,
        arrival: Arrival,
        reason: str,
        *,
        size: int | None = None,
        code: RejectCode = "invalid",
        supersede_pending: bool = False,
    ) -> IngestResult:
        """Record that this arrival was refused: ``reason`` for people, ``code`` for metrics.

        ``supersede_pending``: the source will be taken again, and the version taken
        then supersedes this row (a file that could not be read yet).
        """
        async with self.db.connection() as conn, conn.transaction():
            audio_id = await audio_store.insert_rejected(
                conn, arrival, reason, size=size, supersede_pending=supersede_pending
            )
            if audio_id is not None:
                await audio_store.supersede_pending(
                    conn, arrival.source_uri, audio_id, name=arrival.original_name
                )
        if audio_id is None:
            # This very source version was accepted earlier; a later refusal must not mark it.
            earlier = await self.find_existing(arrival)
            assert earlier is not None
            return earlier
        log.warning(
            "rejected",
            file=arrival.original_name,
            reason=reason,
            code=code,
            audio_id=str(audio_id),
            source=arrival.source,
        )
        self.metrics.files_rejected.labels(SOURCE_LABELS[arrival.source], code).inc()
        return IngestResult("rejected", audio_id, reason=reason)

    async def mark_supersede_pending(self, audio_id: uuid.UUID) -> None:
        """The source of ``audio_id`` changed after it was recorded: its next version wins."""
        async with self.db.connection() as conn:
            await audio_store.mark_supersede_pending(conn, audio_id)

    async def record_remote(
        self,
        arrival: Arrival,
        where: RemoteObject,
        info: HeadInfo,
        choices: TranscriptionChoices | None = None,
    ) -> IngestResult:
        """Queue an object that stays in its source bucket until a worker fetches it.

        Content dedupe happens when the worker has the bytes and their sha256.
        """
        try:
            options = await self.job_options(arrival, choices)
        except UnsupportedLanguage as refusal:
            return await self.reject(arrival, refusal.reason, size=where.size, code=refusal.code)
        async with self.db.connection() as conn, conn.transaction():
            audio_id = await audio_store.insert_remote(conn, arrival, where, info)
            if audio_id is None:
                earlier = await self.find_existing(arrival)
                assert earlier is not None
                return earlier
            await self._enqueue(conn, arrival, audio_id, options)
        log.info(
            "ingested",
            file=arrival.source_uri,
            audio_id=str(audio_id),
            size=where.size,
            source=arrival.source,
        )
        self.metrics.files_ingested.labels(SOURCE_LABELS[arrival.source]).inc()
        return IngestResult("accepted", audio_id)

    def _store_content(self, key: str, source: BinaryIO, size: int) -> None:
        """Put the bytes under their content key unless the store holds them (one thread hop)."""
        with self.metrics.s3_call("stat"):
            held = self.store.stat(key)
        if held is None:
            source.seek(0)
            with self.metrics.s3_call("put"):
                self.store.put_stream(key, source, size)

    async def _record_batch(self, batch: Sequence[_Pending]) -> list[IngestResult | Exception]:
        """Record ``batch`` in one transaction where it is plain; the rest one by one.

        Plain: nothing recorded yet for the file's source version or source, nor its
        content in its tenant, and no other file of the batch sharing either (the
        common case of a flood). Every other file takes the one-file path, as does
        the whole batch when a concurrent ingest got in first (``Conflict``).
        """
        results: dict[int, IngestResult | Exception] = {}
        if len(batch) > 1:
            results.update(await self._record_plain(batch))
        for n, item in enumerate(batch):
            if n in results:
                continue
            try:
                results[n] = await self._record(item.arrival, item.content, item.size, item.options)
            except Exception as exc:  # noqa: BLE001 - this file's caller gets it, no other
                results[n] = exc
        return [results[n] for n in range(len(batch))]

    async def _record_plain(self, batch: Sequence[_Pending]) -> dict[int, IngestResult]:
        """The plain files of ``batch`` recorded in bulk, by index (none on ``Conflict``)."""
        first: dict[object, int] = {}
        for n, item in enumerate(batch):
            a = item.arrival
            for key in (("uri", a.source_uri), ("content", a.tenant, item.content.sha256)):
                first.setdefault(key, n)
        distinct = [
            n
            for n, item in enumerate(batch)
            if item.arrival.source_version is not None
            and first[("uri", item.arrival.source_uri)] == n
            and first[("content", item.arrival.tenant, item.content.sha256)] == n
        ]
        if len(distinct) < 2:
            return {}
        news = [NewContent(batch[n].arrival, batch[n].content, batch[n].size) for n in distinct]
        try:
            async with self.db.connection() as conn, conn.transaction():
                care = await audio_store.needing_care(conn, news)
                plain = [n for i, n in enumerate(distinct) if i not in care]
                if len(plain) < 2:
                    return {}
                ids = await audio_store.insert_new(conn, [news[distinct.index(n)] for n in plain])
                await enqueue_many(
                    conn,
                    [
                        (audio_id, batch[n].options, batch[n].arrival.priority)
                        for n, audio_id in zip(plain, ids, strict=True)
                    ],
                    max_attempts=self.max_attempts,
                    head_start_s=self.priority_head_start_s,
                )
        except Conflict:
            return {}  # a concurrent ingest of one of them: each takes the one-file path
        results = {}
        for n, audio_id in zip(plain, ids, strict=True):
            arrival, content = batch[n].arrival, batch[n].content
            results[n] = IngestResult("accepted", audio_id)
            self._count(arrival, results[n])
            log.debug("ingested", **_ingested_fields(arrival, content, audio_id))
        log.info("ingested batch", files=len(plain), source=batch[plain[0]].arrival.source)
        return results

    async def _record(
        self, arrival: Arrival, content: StoredContent, size: int, options: dict[str, Any]
    ) -> IngestResult:
        async with self.db.connection() as conn:
            for _ in range(3):
                try:
                    async with conn.transaction():
                        result = await self._insert(conn, arrival, content, size, options)
                except Conflict:
                    # Another ingester recorded the same content or source meanwhile: look again.
                    continue
                self._count(arrival, result)
                return result
        raise TransientError(f"could not record {arrival.original_name}: concurrent ingest")

    async def _enqueue(
        self, conn: AsyncConn, arrival: Arrival, audio_id: uuid.UUID, options: dict[str, Any]
    ) -> None:
        await enqueue(
            conn,
            audio_id,
            max_attempts=self.max_attempts,
            options=options,
            priority=arrival.priority,
            head_start_s=self.priority_head_start_s,
        )

    def _count(self, arrival: Arrival, result: IngestResult) -> None:
        """Count a committed outcome (never one rolled back by a concurrent ingest)."""
        source = SOURCE_LABELS[arrival.source]
        if result.outcome == "accepted":
            self.metrics.files_ingested.labels(source).inc()
        elif result.outcome == "duplicate":
            self.metrics.files_duplicate.labels(source).inc()

    async def _insert(
        self,
        conn: AsyncConn,
        arrival: Arrival,
        content: StoredContent,
        size: int,
        options: dict[str, Any],
    ) -> IngestResult:
        if arrival.source_version is not None:
            seen = await audio_store.find_version(conn, arrival.source_uri, arrival.source_version)
            if seen is not None:
                return IngestResult("already_ingested", seen.id)
            same = await audio_store.adopt_version(
                conn, arrival.source_uri, arrival.source_version, content.sha256
            )
            if same is not None:
                return IngestResult("already_ingested", same.id, duplicate_of=same.duplicate_of)
        original = await audio_store.find_original(
            conn, tenant=arrival.tenant, sha256=content.sha256
        )
        variant_of = None
        if original is not None:
            alike = await transcribed_alike(
                conn, tenant=arrival.tenant, sha256=content.sha256, options=options
            )
            # Other options than every earlier transcription of it, or only an earlier
            # model's transcript of it: transcribe it again.
            variant_of, original = (original, None) if alike is None else (None, alike)
        audio_id = await audio_store.insert_content(
            conn, arrival, content, size=size, duplicate_of=original, variant_of=variant_of
        )
        await audio_store.supersede_pending(
            conn, arrival.source_uri, audio_id, name=arrival.original_name
        )
        if original is not None:
            log.info(
                "duplicate",
                file=arrival.original_name,
                audio_id=str(audio_id),
                duplicate_of=str(original),
                source=arrival.source,
            )
            return IngestResult("duplicate", audio_id, duplicate_of=original)
        await self._enqueue(conn, arrival, audio_id, options)
        log.info("ingested", **_ingested_fields(arrival, content, audio_id, variant_of))
        return IngestResult("accepted", audio_id)


def _ingested_fields(
    arrival: Arrival,
    content: StoredContent,
    audio_id: uuid.UUID,
    variant_of: uuid.UUID | None = None,
) -> dict[str, Any]:
    """What the ``ingested`` log line says about an accepted file."""
    return {
        "file": arrival.original_name,
        "audio_id": str(audio_id),
        **({"variant_of": str(variant_of)} if variant_of else {}),
        "duration_s": round(content.info.duration_s, 2),
        "codec": content.info.codec,
        "source": arrival.source,
    }


def _earlier_result(row: RecordedVersion) -> IngestResult:
    """What an earlier ingest of the same source version came to."""
    return IngestResult(
        outcome="rejected" if row.state == AudioState.REJECTED else "already_ingested",
        audio_id=row.id,
        reason=row.error,
        duplicate_of=row.duplicate_of,
    )


def sha256_of(source: BinaryIO, size: int) -> str:
    source.seek(0)
    digest = hashlib.sha256()
    remaining = size
    while remaining > 0:
        chunk = source.read(min(HASH_CHUNK, remaining))
        if not chunk:
            raise SourceChanged("file became shorter while it was read")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()
