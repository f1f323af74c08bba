"""Freezing a dataset version: immutable manifests in object storage, recorded in the DB.

A version belongs to one tenant and holds only that tenant's audio, and is of one
language or an explicit list (``languages``): it holds the utterances of the
segments in those languages only, each manifest line naming its segment's
language. Numbers count per tenant and dataset name, across languages (the row
and ``dataset.json`` say which languages a version is of).

The version number is reserved first (committed as ``freezing``), then the files
are written under its prefix (see :mod:`pipeline.datasets.layout`), then one
transaction marks it ``frozen`` with its items (and, for the orchestrator, its
training run). A writer that dies leaves a ``freezing`` row that is later marked
``abandoned``; its number is never reused and nothing ever rewrites a frozen
version.

Manifests name audio by its object key (``audio/sha256/…``), never by a server
path or URL: they are served to tenants as they are. ``materialize`` copies the
audio next to manifests that point at the local copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog
from psycopg import sql
from psycopg.rows import class_row

from pipeline.config import DatasetSettings
from pipeline.datasets.eligibility import (
    LANGUAGE_SHARES,
    SEGMENT_LANGUAGE,
    admits_pseudo_labels,
    filter_params,
)
from pipeline.datasets.languages import Languages
from pipeline.datasets.layout import DEFAULT_TENANT, version_base
from pipeline.datasets.served import model_label
from pipeline.datasets.utterances import SegmentRow, Split, split_for, utterances
from pipeline.db.database import AsyncConn, Database
from pipeline.errors import Ai2TextError
from pipeline.manifests import manifest_line
from pipeline.staging import process_staging_dir
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

SPLITS: tuple[Split, ...] = ("train", "dev", "test")
# What an utterance's text is: a person's verified correction, or the model's own.
LABEL_KINDS = ("verified", "pseudo")
MANIFESTS = ("train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl")


class VersionAbandoned(Ai2TextError):
    """The version was marked abandoned before its writer finished; nothing is recorded."""


@dataclass(slots=True)
class FrozenVersion:
    id: int
    name: str
    version: int
    prefix: str
    audio_hours: float
    utterance_hours: float
    stats: dict[str, Any]
    manifest_sha256: dict[str, str]
    tenant: str = DEFAULT_TENANT
    # The languages the version is of, sorted ("de", "en").
    languages: Languages = ()
    run_id: uuid.UUID | None = None
    items: list[tuple[uuid.UUID, Split, int, float]] = field(default_factory=list)
    # The ASR models whose transcripts are this version's labels.
    models: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _SplitCount:
    audio: int = 0
    utterances: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    # utterances by label kind (LABEL_KINDS)
    verified: int = 0
    pseudo: int = 0


@dataclass(frozen=True, slots=True)
class _Reserved:
    id: int
    version: int
    prefix: str


class Freezer:
    """Freezes versions by the ``dataset`` rules, staging files under ``temp_dir``."""

    def __init__(
        self, db: Database, store: ObjectStore, *, dataset: DatasetSettings, temp_dir: Path
    ) -> None:
        self.rules = dataset
        self.temp_dir = temp_dir
        self.db = db
        self.store = store

    async def freeze(
        self,
        *,
        languages: Iterable[str],
        tenant: str = DEFAULT_TENANT,
        run_launcher: str | None = None,
    ) -> FrozenVersion:
        """Write and record ``tenant``'s new version of ``languages``; with
        ``run_launcher``, create its run."""
        chosen: Languages = tuple(sorted(set(languages)))
        if not chosen:
            raise ValueError("a dataset version is of at least one language")
        reserved = await self._reserve(tenant, chosen)
        try:
            staging = process_staging_dir(self.temp_dir)
            with tempfile.TemporaryDirectory(prefix="freeze-", dir=staging) as tmp:
                frozen = await self._build(Path(tmp), tenant, chosen, reserved)
                await asyncio.to_thread(_upload, self.store, Path(tmp), reserved.prefix)
            await self._commit(frozen, run_launcher)
        except BaseException:
            await self._abandon(reserved.id)
            raise
        log.info(
            "dataset version frozen",
            tenant=tenant,
            languages=list(chosen),
            name=frozen.name,
            version=frozen.version,
            audio_hours=round(frozen.audio_hours, 4),
            utterances=frozen.stats["utterances"],
        )
        return frozen

    async def _reserve(self, tenant: str, languages: Languages) -> _Reserved:
        name = self.rules.name
        async with self.db.connection() as conn, conn.transaction():
            # Serialise reservations per tenant and name; abandoned numbers stay taken.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (tenant, name)
            )
            async with conn.cursor(row_factory=class_row(_Reserved)) as cur:
                await cur.execute(
                    "INSERT INTO dataset_versions (tenant, name, version, prefix, languages)"
                    " SELECT %(tenant)s, %(name)s, n, %(base)s || '/v' || n, %(languages)s FROM"
                    "  (SELECT coalesce(max(version), 0) + 1 AS n FROM dataset_versions"
                    "   WHERE tenant = %(tenant)s AND name = %(name)s) AS next"
                    " RETURNING id, version, prefix",
                    {
                        "tenant": tenant,
                        "name": name,
                        "base": version_base(tenant, name),
                        "languages": list(languages),
                    },
                )
                row = await cur.fetchone()
        assert row is not None
        return row

    async def _build(
        self, tmp: Path, tenant: str, languages: Languages, reserved: _Reserved
    ) -> FrozenVersion:
        counts = {s: _SplitCount() for s in SPLITS}
        by_language = {code: _SplitCount() for code in languages}
        by_kind = {kind: _SplitCount() for kind in LABEL_KINDS}
        items: list[tuple[uuid.UUID, Split, int, float]] = []
        models: set[str] = set()
        outputs = _open_outputs(tmp)
        try:
            async with self.db.connection() as conn:
                pseudo_admitted = await admits_pseudo_labels(conn, self.rules, tenant)
                async for audio, segments in _eligible_audio(conn, self.rules, tenant, languages):
                    split = split_for(str(audio["sha256"]), self.rules)
                    cues = list(utterances(segments, self.rules, languages))
                    if not cues:
                        continue
                    _write_audio(outputs, split, audio, cues)
                    seconds = sum(c.duration for c in cues)
                    items.append((audio["id"], split, len(cues), seconds))
                    models.add(model_label(str(audio["model"])))
                    count = counts[split]
                    count.audio += 1
                    count.utterances += len(cues)
                    count.seconds += seconds
                    # The audio's hours in these languages, as eligibility counts them.
                    count.audio_seconds += float(audio["seconds"] or 0.0)
                    kind = "verified" if audio["verified"] else "pseudo"
                    setattr(count, kind, getattr(count, kind) + len(cues))
                    by_kind[kind].audio += 1
                    by_kind[kind].utterances += len(cues)
                    by_kind[kind].seconds += seconds
                    for cue in cues:
                        by_language[str(cue.language)].utterances += 1
                        by_language[str(cue.language)].seconds += cue.duration
        finally:
            for f in outputs.values():
                f.close()
        checksums = {name: _sha256(tmp / name) for name in MANIFESTS}
        audio_hours = sum(c.audio_seconds for c in counts.values()) / 3600.0
        utterance_hours = sum(c.seconds for c in counts.values()) / 3600.0
        stats = {
            "audio": sum(c.audio for c in counts.values()),
            "utterances": sum(c.utterances for c in counts.values()),
            "splits": {
                s: {
                    "audio": c.audio,
                    "utterances": c.utterances,
                    "hours": c.seconds / 3600.0,
                    "audio_hours": c.audio_seconds / 3600.0,
                    "verified_utterances": c.verified,
                    "pseudo_utterances": c.pseudo,
                }
                for s, c in counts.items()
            },
            # Utterances whose text a person verified, and the model's own (pseudo-labels).
            "labels": {
                kind: {"audio": c.audio, "utterances": c.utterances, "hours": c.seconds / 3600.0}
                for kind, c in by_kind.items()
            },
            "languages": {
                code: {"utterances": c.utterances, "hours": c.seconds / 3600.0}
                for code, c in by_language.items()
            },
        }
        description = {
            "tenant": tenant,
            "name": self.rules.name,
            "version": reserved.version,
            "languages": list(languages),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "audio_hours": audio_hours,
            "utterance_hours": utterance_hours,
            "stats": stats,
            "asr_model": sorted(models),
            # dataset.labels, and whether it let the model's own transcripts in this time.
            "labels": {"setting": self.rules.labels, "pseudo_labels_admitted": pseudo_admitted},
            "filters": self.rules.model_dump(mode="json"),
            "manifest_sha256": checksums,
            "manifest_format": "NeMo (audio_filepath, offset, duration, text, lang, audio_id)",
            "audio_filepath": "the audio's object key in the ai2text object store",
        }
        (tmp / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
        return FrozenVersion(
            id=reserved.id,
            name=self.rules.name,
            version=reserved.version,
            prefix=reserved.prefix,
            audio_hours=audio_hours,
            utterance_hours=utterance_hours,
            stats=stats,
            manifest_sha256=checksums,
            tenant=tenant,
            languages=languages,
            items=items,
            models=sorted(models),
        )

    async def _commit(self, frozen: FrozenVersion, run_launcher: str | None) -> None:
        from psycopg.types.json import Jsonb

        async with self.db.connection() as conn, conn.transaction():
            marked = await conn.execute(
                "UPDATE dataset_versions SET state = 'frozen', frozen_at = now(),"
                " audio_hours = %s, utterance_hours = %s, stats = %s, filters = %s,"
                " manifest_sha256 = %s, model = %s WHERE id = %s AND state = 'freezing'",
                (
                    frozen.audio_hours,
                    frozen.utterance_hours,
                    Jsonb(frozen.stats),
                    Jsonb(self.rules.model_dump(mode="json")),
                    Jsonb(frozen.manifest_sha256),
                    ", ".join(frozen.models),
                    frozen.id,
                ),
            )
            if marked.rowcount != 1:
                # Someone judged this writer dead and abandoned the version meanwhile.
                raise VersionAbandoned(f"dataset version {frozen.version} was abandoned")
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO dataset_items (version_id, audio_id, split, utterances, seconds)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(frozen.id, *item) for item in frozen.items],
                )
            if run_launcher is not None:
                cur2 = await conn.execute(
                    "INSERT INTO training_runs (version_id, launcher, heartbeat_at)"
                    " VALUES (%s, %s, now()) RETURNING id",
                    (frozen.id, run_launcher),
                )
                row = await cur2.fetchone()
                assert row is not None
                frozen.run_id = uuid.UUID(str(row["id"]))

    async def _abandon(self, version_id: int) -> None:
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE dataset_versions SET state = 'abandoned' WHERE id = %s"
                    " AND state = 'freezing'",
                    (version_id,),
                )
        except Exception:  # noqa: BLE001 - the original error matters more; a reaper retries
            log.exception("could not mark dataset version abandoned", version_id=version_id)


async def _eligible_audio(
    conn: AsyncConn, rules: DatasetSettings, tenant: str, languages: Languages
) -> Any:
    """Yield (audio row, its segments) for ``tenant``'s eligible audio with passing
    segments in ``languages``, oldest first, streamed. ``seconds``: the audio's
    duration shared out to those languages (:data:`eligibility.LANGUAGE_SHARES`)."""
    query = sql.SQL(
        "SELECT a.id, a.sha256, a.storage_key, a.duration_s, a.original_name,"
        " t.id AS transcript_id, t.model, t.verified, mine.seconds"
        " FROM (SELECT id, sum(seconds) AS seconds FROM ({}) AS shares"
        "       WHERE language = ANY(%(languages)s) GROUP BY id) AS mine"
        " JOIN audio a ON a.id = mine.id JOIN transcripts t ON t.audio_id = a.id"
        " ORDER BY a.created_at, a.id"
    ).format(LANGUAGE_SHARES)
    params = {**filter_params(rules), "tenant": tenant, "languages": list(languages)}
    async with conn.cursor(name="eligible_audio") as cur:
        await cur.execute(query, params)
        async for audio in cur:
            async with conn.cursor(row_factory=class_row(SegmentRow)) as seg_cur:
                await seg_cur.execute(
                    sql.SQL(
                        # A verified segment is not judged by the model's scores.
                        "SELECT s.start_s AS start, s.end_s AS end, s.text,"
                        " CASE WHEN NOT t.verified THEN s.avg_logprob END AS avg_logprob,"
                        " CASE WHEN NOT t.verified THEN s.no_speech_prob END AS no_speech_prob,"
                        " CASE WHEN NOT t.verified THEN s.compression_ratio END"
                        " AS compression_ratio, {} AS language"
                        " FROM segments s JOIN transcripts t ON t.id = s.transcript_id"
                        " WHERE s.transcript_id = %s ORDER BY s.idx"
                    ).format(SEGMENT_LANGUAGE),
                    (audio["transcript_id"],),
                )
                segments = await seg_cur.fetchall()
            yield audio, segments


def _write_audio(
    outputs: dict[str, IO[str]], split: Split, audio: dict[str, Any], cues: list[Any]
) -> None:
    key = str(audio["storage_key"])  # a key, never a server path: manifests are served
    for cue in cues:
        outputs[f"{split}.jsonl"].write(
            manifest_line(
                audio_filepath=key,
                offset=cue.offset,
                duration=cue.duration,
                text=cue.text,
                lang=cue.language,  # the segment's own: a file may hold several
                audio_id=audio["id"],
            )
        )
        meta = {
            "file_name": key,
            "transcription": cue.text,
            "offset": cue.offset,
            "duration": cue.duration,
            "split": split,
            "language": cue.language,
            "audio_id": str(audio["id"]),
        }
        outputs["metadata.jsonl"].write(json.dumps(meta, ensure_ascii=False) + "\n")


def _open_outputs(tmp: Path) -> dict[str, IO[str]]:
    return {name: open(tmp / name, "w", encoding="utf-8") for name in MANIFESTS}  # noqa: SIM115


def _upload(store: ObjectStore, tmp: Path, prefix: str) -> None:
    """Manifests first, ``dataset.json`` last: its presence means the version is whole."""
    for name in (*MANIFESTS, "dataset.json"):
        path = tmp / name
        with open(path, "rb") as f:
            store.put_stream(f"{prefix}/{name}", f, path.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
