"""Freezing dataset versions from real transcripts, on real PostgreSQL and the real model.

Each test ingests real audio, transcribes it with an in-process ``AsrWorker`` and
freezes versions into a filesystem object store, then checks the manifests against
the database and the pure utterance rules.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import pytest

from pipeline.config import AsrSettings, DatasetSettings, Settings
from pipeline.datasets.eligibility import eligible_hours
from pipeline.datasets.freeze import MANIFESTS, FrozenVersion
from pipeline.datasets.materialize import materialize
from pipeline.datasets.queries import audio_keys
from pipeline.datasets.served import make_servable, model_label
from pipeline.datasets.utterances import SegmentRow, passes, split_for, utterances
from pipeline.db.database import Database
from pipeline.db.migrate import available_migrations, migrate
from pipeline.errors import TransientError
from pipeline.ingest.core import Arrival, IngestResult
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore, ObjectInfo
from tests.components import freezer_of, ingestor_of, opened, worker_of
from tests.waiting import jobs_settled
from workers.asr import LongAudioTranscriber, build_transcriber

DATA = Path(__file__).resolve().parents[1] / "data"
SPLIT_FILES = ("train.jsonl", "dev.jsonl", "test.jsonl")
BASE = ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")

Conn = psycopg.Connection[dict[str, Any]]

pytestmark = pytest.mark.slow


# -- helpers shared with test_orchestrator --------------------------------------------


@functools.cache
def whisper() -> LongAudioTranscriber:
    """The real model, loaded once per test session."""
    transcriber = build_transcriber(AsrSettings(), metrics=Metrics())
    transcriber.load()
    return transcriber


def store_of(settings: Settings) -> FilesystemStore:
    return FilesystemStore(settings.data_dir / "objects")


async def ingest(
    settings: Settings,
    database: Database,
    names: Iterable[str | tuple[str, str]],
    tenant: str = "default",
) -> dict[str, IngestResult]:
    """Ingest test files; a ``(name, data file)`` pair ingests that file under another name."""
    ingestor = ingestor_of(settings, database, store_of(settings))
    results = {}
    for entry in names:
        name, source = (entry, entry) if isinstance(entry, str) else entry
        path = DATA / source
        arrival = Arrival("folder", name, f"file:///inbox/{tenant}/{name}", "v1", tenant=tenant)
        with open(path, "rb") as f:
            results[name] = await ingestor.ingest(arrival, f, path.stat().st_size)
    return results


async def transcribe_pending(settings: Settings, database: Database, db: Conn) -> None:
    """Run one real ASR worker until no job is left queued or running; none may die."""
    stop = asyncio.Event()
    worker = worker_of(settings, database, store_of(settings), whisper(), worker_id="test:1:0")
    task = asyncio.create_task(worker.run(stop))
    try:
        await jobs_settled(settings, timeout=180, watch=[task])
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    dead = db.execute("SELECT audio_id, last_error FROM jobs WHERE state = 'dead'").fetchall()
    assert dead == [], dead


async def add_transcribed(
    settings: Settings,
    database: Database,
    db: Conn,
    *names: str | tuple[str, str],
    tenant: str = "default",
) -> dict[str, uuid.UUID]:
    """Ingest (as ``tenant``'s) and transcribe ``names``; their audio ids by name."""
    results = await ingest(settings, database, names, tenant)
    await transcribe_pending(settings, database, db)
    return {name: r.audio_id for name, r in results.items()}


async def freeze(
    settings: Settings,
    database: Database,
    store: Any = None,
    tenant: str = "default",
    languages: tuple[str, ...] = ("en",),
) -> FrozenVersion:
    """A version of ``tenant``'s ``languages`` (the test recordings are English)."""
    freezer = freezer_of(settings, database, store or store_of(settings))
    return await freezer.freeze(tenant=tenant, languages=languages)


async def hours_eligible(
    database: Database, rules: DatasetSettings, tenant: str | None = None
) -> float:
    async with database.connection() as conn:
        return await eligible_hours(conn, rules, tenant)


def version_dir(
    settings: Settings, number: int, name: str = "default", tenant: str = "default"
) -> Path:
    base = settings.data_dir / "objects" / "datasets" / name
    if tenant != "default":
        base = base / "tenants" / tenant
    return base / f"v{number}"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative names)."""
    return {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest_lines(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {name.removesuffix(".jsonl"): read_jsonl(directory / name) for name in SPLIT_FILES}


def segments_of(db: Conn, audio_id: uuid.UUID) -> list[SegmentRow]:
    rows = db.execute(
        "SELECT s.start_s, s.end_s, s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio,"
        " coalesce(s.language, t.language) AS language"
        " FROM segments s JOIN transcripts t ON t.id = s.transcript_id"
        " WHERE t.audio_id = %s ORDER BY s.idx",
        (audio_id,),
    ).fetchall()
    return [
        SegmentRow(
            r["start_s"],
            r["end_s"],
            r["text"],
            r["avg_logprob"],
            r["no_speech_prob"],
            r["compression_ratio"],
            r["language"],
        )
        for r in rows
    ]


def audio_row(db: Conn, audio_id: uuid.UUID | str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM audio WHERE id = %s", (audio_id,)).fetchone()
    assert row is not None
    return row


def items_of(
    db: Conn, version: int, name: str = "default", tenant: str = "default"
) -> dict[str, dict[str, Any]]:
    rows = db.execute(
        "SELECT i.* FROM dataset_items i JOIN dataset_versions v ON v.id = i.version_id"
        " WHERE v.tenant = %s AND v.name = %s AND v.version = %s",
        (tenant, name, version),
    ).fetchall()
    return {str(r["audio_id"]): r for r in rows}


def version_row(
    db: Conn, version: int, name: str = "default", tenant: str = "default"
) -> dict[str, Any]:
    row = db.execute(
        "SELECT * FROM dataset_versions WHERE tenant = %s AND name = %s AND version = %s",
        (tenant, name, version),
    ).fetchone()
    assert row is not None, f"no version {version}"
    return row


# -- tests ---------------------------------------------------------------------------


def test_manifests_list_every_eligible_utterance_exactly_as_the_rules_cut_it(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()
    store = store_of(settings)

    async def scenario() -> tuple[dict[str, uuid.UUID], FrozenVersion]:
        async with opened(settings) as database:
            ids = await add_transcribed(settings, database, db, *BASE)
            return ids, await freeze(settings, database)

    ids, frozen = asyncio.run(scenario())
    assert frozen.version == 1 and frozen.prefix == "datasets/default/v1"
    where = version_dir(settings, 1)
    assert sorted(p.name for p in where.iterdir()) == sorted([*MANIFESTS, "dataset.json"])
    lines = manifest_lines(where)
    meta = read_jsonl(where / "metadata.jsonl")

    by_audio: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for split, entries in lines.items():
        for entry in entries:
            by_audio.setdefault(entry["audio_id"], []).append((split, entry))
    # All three real recordings are clean speech: each is in the dataset.
    assert set(by_audio) == {str(i) for i in ids.values()}

    for name, audio_id in ids.items():
        audio = audio_row(db, audio_id)
        expected = list(utterances(segments_of(db, audio_id), settings.dataset))
        assert expected, f"{name} has no utterance"
        got = by_audio[str(audio_id)]
        # One split per audio, the one its content hash picks.
        assert {split for split, _ in got} == {split_for(audio["sha256"], settings.dataset)}
        entries = [entry for _, entry in got]
        assert [(e["offset"], e["duration"], e["text"], e["lang"]) for e in entries] == [
            (u.offset, u.duration, u.text, u.language) for u in expected
        ]
        for e in entries:
            assert set(e) == {"audio_filepath", "offset", "duration", "text", "lang", "audio_id"}
            # The object key, never the server's path: manifests are served to tenants.
            assert e["audio_filepath"] == audio["storage_key"]
            assert not Path(e["audio_filepath"]).is_absolute()
            assert (store.root / e["audio_filepath"]).is_file()
            assert e["offset"] >= 0
            assert e["duration"] > 0
            assert e["offset"] + e["duration"] <= audio["duration_s"] + 0.05
            assert e["text"].strip() == e["text"] and e["text"]
            assert e["lang"] == "en"
        assert len(entries) == len(expected)

    # metadata.jsonl says the same thing, audiofolder style.
    nemo = [(s, e) for s, entries in lines.items() for e in entries]
    assert len(meta) == len(nemo)
    assert sorted(
        (m["split"], m["audio_id"], m["offset"], m["duration"], m["transcription"], m["file_name"])
        for m in meta
    ) == sorted(
        (s, e["audio_id"], e["offset"], e["duration"], e["text"], e["audio_filepath"])
        for s, e in nemo
    )
    # The items recorded in the database match the manifests.
    items = items_of(db, 1)
    assert set(items) == set(by_audio)
    for key, item in items.items():
        entries = [e for _, e in by_audio[key]]
        assert item["split"] == by_audio[key][0][0]
        assert item["utterances"] == len(entries)
        assert item["seconds"] == pytest.approx(sum(e["duration"] for e in entries))


def test_dataset_json_hours_and_checksums_match_the_database_and_the_files(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            return await freeze(settings, database)

    frozen = asyncio.run(scenario())
    where = version_dir(settings, 1)
    description = json.loads((where / "dataset.json").read_text())
    row = version_row(db, 1)
    hours = db.execute(
        "SELECT sum(duration_s) / 3600 AS h FROM audio WHERE id IN"
        " (SELECT audio_id FROM dataset_items WHERE version_id = %s)",
        (row["id"],),
    ).fetchone()
    assert hours is not None
    assert description["audio_hours"] == pytest.approx(hours["h"], rel=1e-9)
    assert row["audio_hours"] == pytest.approx(hours["h"], rel=1e-9)
    assert frozen.audio_hours == pytest.approx(hours["h"], rel=1e-9)
    assert hours["h"] == pytest.approx(20.0 / 3600, abs=0.2 / 3600)  # 11 s + 4 s + 5 s

    seconds = db.execute(
        "SELECT sum(seconds) AS s FROM dataset_items WHERE version_id = %s", (row["id"],)
    ).fetchone()
    assert seconds is not None
    assert description["utterance_hours"] == pytest.approx(seconds["s"] / 3600)
    assert row["utterance_hours"] == pytest.approx(seconds["s"] / 3600)
    assert 0 < description["utterance_hours"] <= description["audio_hours"] + 1e-9

    files = {name: sha256_file(where / name) for name in MANIFESTS}
    assert description["manifest_sha256"] == files
    assert row["manifest_sha256"] == files
    assert row["state"] == "frozen" and row["frozen_at"] is not None
    assert row["prefix"] == "datasets/default/v1"
    assert description["name"] == "default" and description["version"] == 1
    assert description["filters"] == settings.dataset.model_dump(mode="json")
    # The model by its name ("base"), or a local directory's last parts: never a server path.
    assert description["asr_model"] == [model_label(whisper().model_name)]
    assert not description["asr_model"][0].startswith("/") and row["model"] == model_label(
        whisper().model_name
    )
    stats = description["stats"]
    assert stats == row["stats"]
    assert stats["audio"] == 3
    lines = manifest_lines(where)
    assert stats["utterances"] == sum(len(v) for v in lines.values())
    for split, entries in lines.items():
        assert stats["splits"][split]["utterances"] == len(entries)
        assert stats["splits"][split]["audio"] == len({e["audio_id"] for e in entries})


def test_freezing_again_after_new_audio_makes_v2_and_leaves_v1_byte_identical(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def first() -> None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            assert (await freeze(settings, database)).version == 1

    async def second() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "stereo_diarization.wav")
            return await freeze(settings, database)

    asyncio.run(first())
    v1_dir = version_dir(settings, 1)
    before = hashes(v1_dir)
    assert len(before) == 5
    v1_items = items_of(db, 1)

    v2 = asyncio.run(second())
    assert v2.version == 2 and v2.prefix == "datasets/default/v2"
    assert hashes(v1_dir) == before
    assert items_of(db, 1) == v1_items
    v2_items = items_of(db, 2)
    assert set(v1_items) < set(v2_items) and len(v2_items) == 3
    # An audio keeps its split from one version to the next.
    for audio_id, item in v1_items.items():
        assert v2_items[audio_id]["split"] == item["split"]
    assert version_row(db, 2)["audio_hours"] > version_row(db, 1)["audio_hours"]
    assert json.loads((version_dir(settings, 2) / "dataset.json").read_text())["version"] == 2

    # A third freeze with nothing new is a new version with the same content.
    async def third() -> FrozenVersion:
        async with opened(settings) as database:
            return await freeze(settings, database)

    v3 = asyncio.run(third())
    assert v3.version == 3
    for name in SPLIT_FILES:
        assert (version_dir(settings, 3) / name).read_bytes() == (
            version_dir(settings, 2) / name
        ).read_bytes()
    assert hashes(v1_dir) == before

    # No audio is ever in two splits, across every version.
    moved = db.execute(
        "SELECT audio_id FROM dataset_items GROUP BY audio_id HAVING count(DISTINCT split) > 1"
    ).fetchall()
    assert moved == []
    per_audio = db.execute(
        "SELECT audio_id, count(*) AS versions FROM dataset_items GROUP BY audio_id"
    ).fetchall()
    assert sorted(r["versions"] for r in per_audio) == [2, 3, 3]


class FailingStore:
    """A real filesystem store whose ``fail_on``-th put raises, like an S3 outage mid-freeze."""

    def __init__(self, real: FilesystemStore, fail_on: int) -> None:
        self.real = real
        self.fail_on = fail_on
        self.puts: list[str] = []

    def put_stream(
        self, key: str, stream: BinaryIO, size: int, content_type: str | None = None
    ) -> ObjectInfo:
        self.puts.append(key)
        if len(self.puts) == self.fail_on:
            raise TransientError(f"storage unreachable while writing {key} (injected)")
        return self.real.put_stream(key, stream, size, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_version_numbers_are_never_reused_after_a_failed_or_abandoned_freeze(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()
    failing = FailingStore(store_of(settings), fail_on=3)

    async def scenario() -> list[FrozenVersion]:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            with pytest.raises(TransientError, match="injected"):
                await freezer_of(settings, database, failing).freeze(
                    languages=["en"], run_launcher="command"
                )
            done = [await freeze(settings, database)]
            # A version some other writer reserved and gave up on also keeps its number.
            db.execute(
                "INSERT INTO dataset_versions (tenant, name, version, prefix, state)"
                " VALUES ('default', 'default', 3, 'datasets/default/v3', 'abandoned')"
            )
            done.append(await freeze(settings, database))
            return done

    v2, v4 = asyncio.run(scenario())
    assert failing.puts == [
        "datasets/default/v1/train.jsonl",
        "datasets/default/v1/dev.jsonl",
        "datasets/default/v1/test.jsonl",
    ]
    assert (v2.version, v4.version) == (2, 4)
    states = {
        r["version"]: r["state"]
        for r in db.execute(
            "SELECT version, state FROM dataset_versions WHERE name = 'default'"
        ).fetchall()
    }
    assert states == {1: "abandoned", 2: "frozen", 3: "abandoned", 4: "frozen"}
    # The failed version recorded nothing and launched nothing; it was never completed.
    assert items_of(db, 1) == {}
    assert db.execute("SELECT count(*) AS n FROM training_runs").fetchone() == {"n": 0}
    assert not (version_dir(settings, 1) / "dataset.json").exists()
    assert not (version_dir(settings, 1) / "test.jsonl").exists()
    assert (version_dir(settings, 2) / "dataset.json").exists()
    assert (version_dir(settings, 4) / "dataset.json").exists()
    assert len(items_of(db, 2)) == 2 and items_of(db, 4).keys() == items_of(db, 2).keys()


def test_materialize_copies_audio_and_rewrites_paths_to_local_files(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    settings = make_settings()
    store = store_of(settings)

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            return await freeze(settings, database)

    frozen = asyncio.run(scenario())
    source = version_dir(settings, 1)
    before = hashes(source)
    keys = db.execute(
        "SELECT a.storage_key, a.sha256 FROM dataset_items i JOIN audio a ON a.id = i.audio_id"
        " WHERE i.version_id = %s",
        (frozen.id,),
    ).fetchall()
    storage_keys = [r["storage_key"] for r in keys]
    dest = tmp_path / "train-data"

    counts = materialize(store, frozen.prefix, storage_keys, dest)

    assert counts == {name: len(read_jsonl(source / name)) for name in MANIFESTS}
    assert (dest / "dataset.json").read_bytes() == (source / "dataset.json").read_bytes()
    sha_of_audio = {
        str((dest / "audio" / Path(r["storage_key"]).name).resolve()): r["sha256"] for r in keys
    }
    for name in SPLIT_FILES:
        local, stored = read_jsonl(dest / name), read_jsonl(source / name)
        assert len(local) == len(stored)
        for here, there in zip(local, stored, strict=True):
            path = Path(here["audio_filepath"])
            assert path.is_absolute() and path.is_file()
            assert path.parent == (dest / "audio").resolve()
            assert sha256_file(path) == sha_of_audio[str(path)]
            assert {**here, "audio_filepath": there["audio_filepath"]} == there
    for entry in read_jsonl(dest / "metadata.jsonl"):
        assert Path(entry["file_name"]).is_file()
        assert Path(entry["file_name"]).parent == (dest / "audio").resolve()
    assert len(list((dest / "audio").iterdir())) == 3
    # The frozen version itself is untouched, and materializing again is harmless.
    assert hashes(source) == before
    assert materialize(store, frozen.prefix, storage_keys, dest) == counts
    assert hashes(source) == before


def test_duplicate_and_rejected_audio_never_enter_a_dataset(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    settings = make_settings()
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"this is not audio at all" * 100)

    async def scenario() -> tuple[dict[str, IngestResult], float, FrozenVersion]:
        async with opened(settings) as database:
            results = await ingest(
                settings, database, ["jfk.flac", ("jfk again.flac", "jfk.flac"), "hotwords.mp3"]
            )
            ingestor = ingestor_of(settings, database, store_of(settings))
            with open(not_audio, "rb") as f:
                results["notes.wav"] = await ingestor.ingest(
                    Arrival("folder", "notes.wav", "file:///inbox/notes.wav", "v1"),
                    f,
                    not_audio.stat().st_size,
                )
            await transcribe_pending(settings, database, db)
            hours = await hours_eligible(database, settings.dataset)
            return results, hours, await freeze(settings, database)

    results, hours, frozen = asyncio.run(scenario())
    assert results["jfk again.flac"].outcome == "duplicate"
    assert results["notes.wav"].outcome == "rejected"
    assert hours == pytest.approx(15.0 / 3600, abs=0.1 / 3600)
    items = items_of(db, frozen.version)
    assert set(items) == {str(results["jfk.flac"].audio_id), str(results["hotwords.mp3"].audio_id)}
    everywhere = {
        e["audio_id"]
        for entries in manifest_lines(version_dir(settings, 1)).values()
        for e in entries
    }
    assert everywhere == set(items)
    assert frozen.audio_hours == pytest.approx(hours)


def test_audio_whose_segments_all_fail_the_filters_is_ineligible_and_hours_drop(
    make_settings: Any, db: Conn
) -> None:
    loose = make_settings()

    async def transcribe() -> tuple[dict[str, uuid.UUID], float]:
        async with opened(loose) as database:
            ids = await add_transcribed(loose, database, db, *BASE)
            return ids, await hours_eligible(database, loose.dataset)

    ids, all_hours = asyncio.run(transcribe())
    assert all_hours == pytest.approx(20.0 / 3600, abs=0.2 / 3600)
    segments = {name: segments_of(db, audio_id) for name, audio_id in ids.items()}
    durations = {name: audio_row(db, audio_id)["duration_s"] for name, audio_id in ids.items()}
    # stereo_diarization.wav is one segment the model is least sure of: put the
    # log-probability bar between it and the others.
    assert len(segments["stereo_diarization.wav"]) == 1
    weakest = segments["stereo_diarization.wav"][0].avg_logprob
    others = min(
        s.avg_logprob if s.avg_logprob is not None else 0.0
        for n in ("jfk.flac", "hotwords.mp3")
        for s in segments[n]
    )
    assert weakest is not None and weakest < others
    cases = {
        "logprob bar": DatasetSettings(min_avg_logprob=(weakest + others) / 2),
        "no speech allowed at all": DatasetSettings(max_no_speech_prob=0.0),
    }
    for label, rules in cases.items():
        strict = make_settings(dataset=rules.model_dump())
        eligible = {n for n, segs in segments.items() if any(passes(s, rules) for s in segs)}
        expected_hours = sum(durations[n] for n in eligible) / 3600

        async def check(strict: Settings = strict) -> tuple[float, FrozenVersion]:
            async with opened(strict) as database:
                return await hours_eligible(database, strict.dataset), await freeze(
                    strict, database
                )

        hours, frozen = asyncio.run(check())
        assert hours == pytest.approx(expected_hours, abs=1e-12), label
        assert hours < all_hours, label
        assert set(items_of(db, frozen.version)) == {str(ids[n]) for n in eligible}, label
        assert frozen.audio_hours == pytest.approx(expected_hours, abs=1e-12), label
        assert "stereo_diarization.wav" not in eligible, label
        if label == "no speech allowed at all":
            # hotwords.mp3 is a single segment with some no-speech probability: it goes.
            assert len(segments["hotwords.mp3"]) == 1
            assert (segments["hotwords.mp3"][0].no_speech_prob or 0) > 0
            assert "hotwords.mp3" not in eligible


# -- known bugs ----------------------------------------------------------------------


def test_eligible_hours_agree_with_what_a_freeze_holds_for_whitespace_only_text(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> tuple[float, FrozenVersion]:
        async with opened(settings) as database:
            ids = await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            db.execute(
                "UPDATE segments SET text = E'\\n' WHERE transcript_id ="
                " (SELECT id FROM transcripts WHERE audio_id = %s)",
                (ids["hotwords.mp3"],),
            )
            return await hours_eligible(database, settings.dataset), await freeze(
                settings, database
            )

    hours, frozen = asyncio.run(scenario())
    assert frozen.stats["audio"] == 1  # hotwords.mp3 has no text left: only jfk.flac
    assert hours == pytest.approx(frozen.audio_hours)


class ReapedWhileWriting:
    """A store during whose last write another orchestrator's reaper abandons the version.

    ``reap_orphans`` abandons versions still ``freezing`` an hour after they were
    reserved; a freeze of a large dataset to slow storage can take that long.
    """

    def __init__(self, real: FilesystemStore, db: Conn) -> None:
        self.real = real
        self.db = db

    def put_stream(
        self, key: str, stream: BinaryIO, size: int, content_type: str | None = None
    ) -> ObjectInfo:
        if key.endswith("/dataset.json"):
            self.db.execute(
                "UPDATE dataset_versions SET created_at = now() - interval '2 hours'"
                " WHERE state = 'freezing'"
            )
            # What Orchestrator.reap_orphans runs:
            self.db.execute(
                "UPDATE dataset_versions SET state = 'abandoned' WHERE state = 'freezing'"
                " AND created_at < now() - interval '1 hour'"
            )
        return self.real.put_stream(key, stream, size, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_version_abandoned_while_freezing_gets_no_items_and_no_run(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()

    async def scenario() -> None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac")
            freezer = freezer_of(settings, database, ReapedWhileWriting(store_of(settings), db))
            try:
                await freezer.freeze(languages=["en"], run_launcher="command")
            except Exception:  # refusing to commit is a correct outcome too
                pass

    asyncio.run(scenario())
    assert version_row(db, 1)["state"] == "abandoned"
    assert items_of(db, 1) == {}
    assert db.execute("SELECT count(*) AS n FROM training_runs").fetchone() == {"n": 0}


# -- tenants -------------------------------------------------------------------------


def all_manifest_text(directory: Path) -> str:
    return "".join((directory / name).read_text() for name in (*MANIFESTS, "dataset.json"))


def test_each_tenants_versions_hold_only_its_audio_and_are_numbered_apart(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings()
    tenant = "acme corp/7"  # not a safe key part: its directory is a hash of the name

    async def scenario() -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID], list[Any]]:
        async with opened(settings) as database:
            theirs = await add_transcribed(
                settings, database, db, "jfk.flac", "hotwords.mp3", tenant=tenant
            )
            ours = await add_transcribed(settings, database, db, "stereo_diarization.wav")
            hours = [
                await hours_eligible(database, settings.dataset, tenant),
                await hours_eligible(database, settings.dataset, "default"),
                await hours_eligible(database, settings.dataset, "nobody"),
            ]
            frozen = [
                await freeze(settings, database, tenant=tenant),
                await freeze(settings, database),
                await freeze(settings, database, tenant=tenant),
            ]
            return theirs, ours, [hours, frozen]

    theirs, ours, (hours, (t1, d1, t2)) = asyncio.run(scenario())
    assert hours[0] == pytest.approx(15 / 3600, abs=0.2 / 3600)
    assert hours[1] == pytest.approx(5 / 3600, abs=0.2 / 3600)
    assert hours[2] == 0
    # Numbers count per tenant: both tenants have a v1.
    assert [(f.tenant, f.version) for f in (t1, d1, t2)] == [
        (tenant, 1),
        ("default", 1),
        (tenant, 2),
    ]
    assert d1.prefix == "datasets/default/v1"
    assert t1.prefix.startswith("datasets/default/tenants/=") and t1.prefix.endswith("/v1")
    assert t2.prefix == t1.prefix.removesuffix("v1") + "v2"
    assert set(items_of(db, 1, tenant=tenant)) == {str(i) for i in theirs.values()}
    assert set(items_of(db, 1)) == {str(i) for i in ours.values()}
    assert t1.audio_hours == pytest.approx(hours[0]) and d1.audio_hours == pytest.approx(hours[1])

    store = store_of(settings)
    their_dir, our_dir = store.root / t1.prefix, version_dir(settings, 1)
    their_ids = {e["audio_id"] for lines in manifest_lines(their_dir).values() for e in lines}
    our_ids = {e["audio_id"] for lines in manifest_lines(our_dir).values() for e in lines}
    assert their_ids == {str(i) for i in theirs.values()}
    assert our_ids == {str(i) for i in ours.values()}
    assert json.loads((their_dir / "dataset.json").read_text())["tenant"] == tenant
    # No file of either version names a server path.
    for directory in (their_dir, our_dir):
        assert str(settings.data_dir) not in all_manifest_text(directory)


def test_a_manifest_frozen_with_server_paths_is_served_with_object_keys(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    """Versions frozen before 0005 named audio by the store's path: served, they name keys."""
    settings = make_settings()
    store = store_of(settings)

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            return await freeze(settings, database)

    frozen = asyncio.run(scenario())
    rewritten = 0
    for name in MANIFESTS:
        current = (store.root / frozen.prefix / name).read_bytes()
        legacy = tmp_path / name
        with open(legacy, "w", encoding="utf-8") as out:
            for entry in read_jsonl(store.root / frozen.prefix / name):
                for field in ("audio_filepath", "file_name"):
                    if field in entry:
                        entry[field] = store.uri(entry[field])
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        rewritten += legacy.read_text().count(str(store.root))
        make_servable(legacy)
        assert legacy.read_bytes() == current, name
        # A current manifest passes through byte for byte.
        served = tmp_path / f"current-{name}"
        served.write_bytes(current)
        make_servable(served)
        assert served.read_bytes() == current
    assert rewritten >= 4  # two audio files, each in a split manifest and in metadata.jsonl

    # dataset.json named a local model by its full path.
    current = (store.root / frozen.prefix / "dataset.json").read_bytes()
    legacy_doc = json.loads(current)
    legacy_doc["asr_model"] = [whisper().model_name]
    legacy = tmp_path / "dataset.json"
    legacy.write_text(json.dumps(legacy_doc, indent=2) + "\n")
    make_servable(legacy, description=True)
    assert legacy.read_bytes() == current
    make_servable(legacy, description=True)  # a current one passes through unchanged
    assert legacy.read_bytes() == current


def test_versions_frozen_before_dataset_tenants_belong_to_the_default_tenant(
    database_url: str, db: Conn
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.autocommit = True
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available_migrations():
            if migration.version >= 5:
                break
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        conn.execute(
            "INSERT INTO dataset_versions (name, version, prefix, state)"
            " VALUES ('default', 1, 'datasets/default/v1', 'frozen')"
        )
        assert 5 in migrate(conn)

    rows = db.execute("SELECT tenant, name, version FROM dataset_versions").fetchall()
    assert rows == [{"tenant": "default", "name": "default", "version": 1}]
    # Another tenant may now have its own v1 of the same dataset; a writer must name one.
    db.execute(
        "INSERT INTO dataset_versions (tenant, name, version, prefix)"
        " VALUES ('acme', 'default', 1, 'datasets/default/tenants/acme/v1')"
    )
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute(
            "INSERT INTO dataset_versions (name, version, prefix)"
            " VALUES ('default', 2, 'datasets/default/v2')"
        )


def test_a_frozen_version_is_read_in_place_from_a_local_store_or_materialised(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    from workers.trainer.manifest import read_manifest

    settings = make_settings()
    store = store_of(settings)

    async def scenario() -> tuple[FrozenVersion, list[str]]:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            frozen = await freeze(settings, database)
            async with database.connection() as conn:
                return frozen, await audio_keys(conn, frozen.id)

    frozen, keys = asyncio.run(scenario())
    # In place (what the orchestrator hands a command trainer): object keys are found
    # from the store's root, the store's own files, nothing copied.
    in_place = read_manifest(str(store.root / frozen.prefix / "train.jsonl"))
    assert in_place.utterances
    root = store.root.resolve()
    for utterance in in_place.utterances:
        assert utterance.audio_path.is_file() and utterance.audio_path.is_relative_to(root)
        assert str(utterance.audio_path.relative_to(root)) in keys

    dest = tmp_path / "local"
    materialize(store, frozen.prefix, keys, dest)
    manifest = read_manifest(str(dest / "train.jsonl"))
    assert manifest.utterances and all(u.audio_path.is_file() for u in manifest.utterances)
