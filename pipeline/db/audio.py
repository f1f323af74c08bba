"""The audio store: every write to ``audio`` outside a job's life (see ``jobs`` for that).

Ingest records rows here (accepted, duplicate, rejected, or left in a source
bucket for a worker to fetch), and a worker adopts fetched content here.

Versions of one source: a hot-folder file that changed after it was ingested (a
writer carried on), or that could not be read yet, has its row marked
``supersede_pending``. The next version recorded for the same ``source_uri``
supersedes it, in the transaction that records that version: the old row keeps
its transcript but points at the new one (``superseded_by``), which keeps it out
of datasets and search.

Two concurrent writers of the same content or source version meet on a unique
index; the loser gets ``Conflict`` (its transaction rolls back) and looks again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from psycopg.rows import RowMaker, class_row, tuple_row

from pipeline.db.database import AsyncConn, translated_errors
from pipeline.db.states import AudioState, Source
from pipeline.media import AudioInfo, HeadInfo

log = structlog.get_logger(__name__)


class Origin(Protocol):
    """Where a row's audio came from (an ingest ``Arrival``)."""

    @property
    def tenant(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def original_name(self) -> str: ...
    @property
    def source_uri(self) -> str: ...
    @property
    def source_version(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RecordedVersion:
    """The row already recorded for one version of a source."""

    id: uuid.UUID
    state: AudioState
    error: str | None
    duplicate_of: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """An object version left in a source bucket, fetched later by a worker."""

    bucket: str
    key: str
    etag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class StoredContent:
    """Validated bytes held in the content-addressed store."""

    sha256: str
    storage_key: str
    info: AudioInfo


def _origin_values(origin: Origin) -> tuple[str, Source, str, str, str | None]:
    return (
        origin.tenant,
        Source(origin.source),
        origin.original_name,
        origin.source_uri,
        origin.source_version,
    )


async def find_version(
    conn: AsyncConn, source_uri: str, source_version: str
) -> RecordedVersion | None:
    async with conn.cursor(row_factory=class_row(RecordedVersion)) as cur:
        await cur.execute(
            "SELECT id, state, error, duplicate_of FROM audio"
            " WHERE source_uri = %s AND source_version = %s",
            (source_uri, source_version),
        )
        return await cur.fetchone()


async def find_original(
    conn: AsyncConn, *, tenant: str, sha256: str, other_than: uuid.UUID | None = None
) -> uuid.UUID | None:
    """The accepted row of the tenant holding this content (not ``other_than``), if any."""
    async with conn.cursor(row_factory=_first_uuid) as cur:
        await cur.execute(
            "SELECT id FROM audio WHERE tenant = %s AND sha256 = %s AND variant_of IS NULL"
            " AND (%s::uuid IS NULL OR id <> %s) AND state NOT IN ('rejected', 'duplicate')",
            (tenant, sha256, other_than, other_than),
        )
        return await cur.fetchone()


@dataclass(frozen=True, slots=True)
class Transcribed:
    """A row transcribing some content (the original or a variant) and its job's options."""

    id: uuid.UUID
    options: dict[str, Any]


async def reusable_transcriptions(
    conn: AsyncConn, *, tenant: str, sha256: str
) -> list[Transcribed]:
    """The original and the variants of this content whose transcription a new arrival may share.

    A row whose job names a model (``options.model``) is always one. A row that follows
    the workers' model is one only while it matches what that model would write now:
    not transcribed yet (it will run on the current model), transcribed by the model
    the workers run (the promoted one; NULL: the configured ``asr.model``), or corrected
    by a person (``verified``, which beats any model). A transcript by a model since
    replaced is not shared: the arrival is transcribed again as a variant.
    """
    async with conn.cursor(row_factory=class_row(Transcribed)) as cur:
        await cur.execute(
            "SELECT a.id, coalesce(j.options, '{}'::jsonb) AS options"
            " FROM audio a LEFT JOIN jobs j ON j.audio_id = a.id AND j.kind = 'transcribe'"
            " LEFT JOIN transcripts t ON t.audio_id = a.id"
            " WHERE a.tenant = %s AND a.sha256 = %s AND a.state NOT IN ('rejected', 'duplicate')"
            " AND (coalesce(j.options->>'model', '') <> ''"
            "  OR t.id IS NULL OR a.state IN ('queued', 'processing') OR t.verified"
            "  OR t.model_id IS NOT DISTINCT FROM"
            "   (SELECT m.id FROM models m WHERE m.state = 'promoted'))"
            " ORDER BY a.variant_of NULLS FIRST, a.created_at",
            (tenant, sha256),
        )
        return await cur.fetchall()


async def insert_rejected(
    conn: AsyncConn,
    origin: Origin,
    reason: str,
    *,
    size: int | None,
    supersede_pending: bool,
) -> uuid.UUID | None:
    """A ``rejected`` row; None when this very source version was accepted earlier."""
    async with conn.cursor(row_factory=_first_uuid) as cur:
        await cur.execute(
            "INSERT INTO audio (tenant, source, original_name, source_uri, source_version,"
            " size_bytes, state, error, supersede_pending)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (source_uri, source_version) WHERE source_version IS NOT NULL"
            " DO UPDATE SET error = EXCLUDED.error, updated_at = now()"
            " WHERE audio.state = 'rejected'"
            " RETURNING id",
            (*_origin_values(origin), size, AudioState.REJECTED, reason, supersede_pending),
        )
        return await cur.fetchone()


async def insert_remote(
    conn: AsyncConn, origin: Origin, where: RemoteObject, info: HeadInfo
) -> uuid.UUID | None:
    """A ``queued`` row for an object left in its bucket; None if this version is recorded."""
    async with conn.cursor(row_factory=_first_uuid) as cur:
        await cur.execute(
            "INSERT INTO audio (tenant, source, original_name, source_uri, source_version,"
            " source_bucket, source_key, source_etag, size_bytes, duration_s, sample_rate,"
            " channels, codec, container, state)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (source_uri, source_version) WHERE source_version IS NOT NULL"
            " DO NOTHING RETURNING id",
            (
                *_origin_values(origin),
                where.bucket,
                where.key,
                where.etag,
                where.size,
                info.duration_s,
                info.sample_rate,
                info.channels,
                info.codec,
                info.container,
                AudioState.QUEUED,
            ),
        )
        return await cur.fetchone()


async def insert_content(
    conn: AsyncConn,
    origin: Origin,
    content: StoredContent,
    *,
    size: int,
    duplicate_of: uuid.UUID | None,
    variant_of: uuid.UUID | None = None,
) -> uuid.UUID:
    """A ``queued`` row for stored content, or a ``duplicate`` of ``duplicate_of``.

    A ``variant_of`` row is queued too: the same content transcribed with other options.
    Raises ``Conflict`` when a concurrent ingest recorded the same content or version.
    """
    info = content.info
    state = AudioState.DUPLICATE if duplicate_of is not None else AudioState.QUEUED
    with translated_errors():
        async with conn.cursor(row_factory=_first_uuid) as cur:
            await cur.execute(
                "INSERT INTO audio (tenant, source, original_name, source_uri, source_version,"
                " sha256, size_bytes, duration_s, sample_rate, channels, codec, container,"
                " storage_key, state, duplicate_of, variant_of)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                (
                    *_origin_values(origin),
                    content.sha256,
                    size,
                    info.duration_s,
                    info.sample_rate,
                    info.channels,
                    info.codec,
                    info.container,
                    content.storage_key,
                    state,
                    duplicate_of,
                    variant_of,
                ),
            )
            audio_id = await cur.fetchone()
    assert audio_id is not None
    return audio_id


async def adopt_fetched(
    conn: AsyncConn,
    audio_id: uuid.UUID,
    content: StoredContent,
    *,
    duplicate_of: uuid.UUID | None,
    variant_of: uuid.UUID | None = None,
) -> None:
    """Record the content a worker fetched from a source bucket (a ``duplicate`` if seen).

    ``variant_of``: the content is held, but its transcriptions are not this job's to
    share (other options, or an earlier model's); the job transcribes it again.
    Raises ``Conflict`` when the same content was adopted concurrently.
    """
    info = content.info
    with translated_errors():
        await conn.execute(
            "UPDATE audio SET sha256 = %s, storage_key = %s, duration_s = %s,"
            " sample_rate = %s, channels = %s, codec = %s, container = %s,"
            " state = CASE WHEN %s::uuid IS NULL THEN state ELSE %s END,"
            " duplicate_of = %s, variant_of = %s, updated_at = now() WHERE id = %s",
            (
                content.sha256,
                content.storage_key,
                info.duration_s,
                info.sample_rate,
                info.channels,
                info.codec,
                info.container,
                duplicate_of,
                AudioState.DUPLICATE,
                duplicate_of,
                variant_of,
                audio_id,
            ),
        )


async def mark_supersede_pending(conn: AsyncConn, audio_id: uuid.UUID) -> None:
    """The source of ``audio_id`` changed after it was recorded: its next version wins."""
    await conn.execute(
        "UPDATE audio SET supersede_pending = true, updated_at = now()"
        " WHERE id = %s AND superseded_by IS NULL",
        (audio_id,),
    )


async def adopt_version(
    conn: AsyncConn, source_uri: str, source_version: str | None, sha256: str
) -> RecordedVersion | None:
    """A pending row of this source with the very same bytes takes the new version.

    Only its fingerprint moved (a ``touch``, a copy tool setting times late): it is
    the same recording, not a new one to supersede it. Returns that row, or None
    when no such row waits; raises ``Conflict`` when a concurrent ingest recorded
    this version first.
    """
    with translated_errors():  # Conflict: a concurrent ingest recorded this version
        async with conn.cursor(row_factory=class_row(RecordedVersion)) as cur:
            await cur.execute(
                "UPDATE audio SET source_version = %s, supersede_pending = false,"
                " updated_at = now()"
                " WHERE id = (SELECT id FROM audio WHERE source_uri = %s AND supersede_pending"
                "  AND sha256 = %s LIMIT 1)"
                " RETURNING id, state, error, duplicate_of",
                (source_version, source_uri, sha256),
            )
            return await cur.fetchone()


async def supersede_pending(
    conn: AsyncConn, source_uri: str, audio_id: uuid.UUID, *, name: str
) -> None:
    """Point the rows of this source that wait for a new version at ``audio_id``."""
    async with conn.cursor(row_factory=_first_uuid) as cur:
        await cur.execute(
            "UPDATE audio SET superseded_by = %s, supersede_pending = false, updated_at = now()"
            " WHERE source_uri = %s AND supersede_pending AND id <> %s RETURNING id",
            (audio_id, source_uri, audio_id),
        )
        for old_id in await cur.fetchall():
            log.info("superseded", file=name, audio_id=str(old_id), superseded_by=str(audio_id))


def _first_uuid(cursor: Any) -> RowMaker[uuid.UUID]:
    """Row factory for a query whose one column is an id."""

    def make(values: Sequence[Any]) -> uuid.UUID:
        value: uuid.UUID = values[0]
        return value

    return make


# -- many files at once (the hot folder's group commit) -------------------------------


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A recorded row of one source version, with the version it is."""

    source_uri: str
    source_version: str
    id: uuid.UUID
    state: AudioState
    error: str | None
    duplicate_of: uuid.UUID | None


async def find_versions(
    conn: AsyncConn, versions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], RecordedVersion]:
    """``find_version`` for many (source_uri, source_version) pairs in one query."""
    if not versions:
        return {}
    wanted = set(versions)
    async with conn.cursor(row_factory=class_row(VersionRow)) as cur:
        await cur.execute(
            "SELECT source_uri, source_version, id, state, error, duplicate_of FROM audio"
            " WHERE source_uri = ANY(%s) AND source_version = ANY(%s)",
            (sorted({u for u, _ in wanted}), sorted({v for _, v in wanted})),
        )
        rows = await cur.fetchall()
    return {
        (r.source_uri, r.source_version): RecordedVersion(r.id, r.state, r.error, r.duplicate_of)
        for r in rows
        if (r.source_uri, r.source_version) in wanted
    }


@dataclass(frozen=True, slots=True)
class NewContent:
    """One accepted file for ``insert_new``: nothing recorded yet for its source or bytes."""

    origin: Origin
    content: StoredContent
    size: int


async def needing_care(conn: AsyncConn, items: Sequence[NewContent]) -> set[int]:
    """Which of ``items`` (by index) ``insert_new`` must not take in bulk.

    Those whose source version is recorded, whose source has a row waiting to be
    superseded, or whose content the tenant already holds: for each of them the
    one-file path decides (already ingested, adopt, supersede, duplicate, variant).
    """
    uris = sorted({i.origin.source_uri for i in items})
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT 'version', source_uri, source_version FROM audio"
            " WHERE source_uri = ANY(%(uris)s) AND source_version = ANY(%(versions)s)"
            " UNION ALL SELECT 'pending', source_uri, NULL FROM audio"
            " WHERE supersede_pending AND source_uri = ANY(%(uris)s)"
            " UNION ALL SELECT 'content', tenant, sha256 FROM audio"
            " WHERE tenant = ANY(%(tenants)s) AND sha256 = ANY(%(shas)s)"
            " AND state NOT IN ('rejected', 'duplicate') AND variant_of IS NULL",
            {
                "uris": uris,
                "versions": sorted({i.origin.source_version or "" for i in items}),
                "tenants": sorted({i.origin.tenant for i in items}),
                "shas": sorted({i.content.sha256 for i in items}),
            },
        )
        found = await cur.fetchall()
    versions: set[tuple[str, str]] = set()
    pending: set[str] = set()
    contents: set[tuple[str, str]] = set()
    for kind, first, second in found:
        if kind == "version":
            versions.add((first, second))
        elif kind == "pending":
            pending.add(first)
        else:
            contents.add((first, second))
    care: set[int] = set()
    for n, item in enumerate(items):
        o = item.origin
        if (
            (o.source_uri, o.source_version) in versions
            or o.source_uri in pending
            or (o.tenant, item.content.sha256) in contents
        ):
            care.add(n)
    return care


async def insert_new(conn: AsyncConn, items: Sequence[NewContent]) -> list[uuid.UUID]:
    """``queued`` rows for ``items`` in one statement; their ids, in order.

    For items ``needing_care`` found plain and distinct from one another (no two with
    one source or one content; ids are matched to items by source). Raises
    ``Conflict`` when a concurrent ingest recorded one of them meanwhile (the
    transaction is then lost: take them one by one).
    """
    columns: list[list[Any]] = [[] for _ in range(13)]
    for item in items:
        info = item.content.info
        values = (
            *_origin_values(item.origin),
            item.content.sha256,
            item.size,
            info.duration_s,
            info.sample_rate,
            info.channels,
            info.codec,
            info.container,
            item.content.storage_key,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    with translated_errors():
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "INSERT INTO audio (tenant, source, original_name, source_uri, source_version,"
                " sha256, size_bytes, duration_s, sample_rate, channels, codec, container,"
                " storage_key, state)"
                " SELECT tenant, source, name, uri, version, sha256, size, duration, rate,"
                " channels, codec, container, key, %s FROM unnest(%s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::float8[],"
                " %s::int[], %s::int[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY"
                " AS t(tenant, source, name, uri, version, sha256, size, duration, rate,"
                " channels, codec, container, key, n)"
                " ORDER BY n RETURNING id, source_uri",
                (AudioState.QUEUED, *columns),
            )
            rows = await cur.fetchall()
    by_uri: dict[str, uuid.UUID] = {uri: audio_id for audio_id, uri in rows}
    return [by_uri[item.origin.source_uri] for item in items]
