"""The ingest path on real audio, a real PostgreSQL and the filesystem object store."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import pytest

from pipeline.db.database import Database
from pipeline.ingest.core import Arrival, Ingestor, IngestResult, SourceChanged, StillArriving
from pipeline.storage import FilesystemStore, content_key
from tests.components import ingestor_of

DATA = Path(__file__).resolve().parents[1] / "data"
JFK = DATA / "jfk.flac"
STEREO = DATA / "stereo_diarization.wav"


@asynccontextmanager
async def ingestor(settings: Any, objects: Path) -> AsyncIterator[Ingestor]:
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        yield ingestor_of(settings, database, FilesystemStore(objects))
    finally:
        await database.close()


def arrival_for(path: Path, name: str | None = None, version: str | None = "v1") -> Arrival:
    name = name or path.name
    return Arrival(
        source="folder",
        original_name=name,
        source_uri=f"/inbox/{name}",
        source_version=version,
    )


def open_source(path: Path) -> tuple[BinaryIO, int]:
    return open(path, "rb"), path.stat().st_size  # closed by the caller


async def ingest_file(ing: Ingestor, path: Path, arrival: Arrival, **kw: Any) -> IngestResult:
    source, size = open_source(path)
    with source:
        return await ing.ingest(arrival, source, size, **kw)


def stored_files(objects: Path) -> list[Path]:
    return [p for p in objects.rglob("*") if p.is_file()] if objects.exists() else []


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ingest_accepts_audio_stores_it_and_queues_one_job(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    settings = make_settings()
    objects = tmp_path / "objects"

    async def scenario() -> IngestResult:
        async with ingestor(settings, objects) as ing:
            return await ingest_file(ing, JFK, arrival_for(JFK))

    result = asyncio.run(scenario())

    assert result.outcome == "accepted"
    assert result.reason is None and result.duplicate_of is None
    row = db.execute("SELECT * FROM audio WHERE id = %s", (result.audio_id,)).fetchone()
    assert row is not None
    sha = sha256_of(JFK)
    assert row["state"] == "queued"
    assert row["sha256"] == sha
    assert row["size_bytes"] == JFK.stat().st_size
    assert row["duration_s"] == pytest.approx(11.0, abs=0.1)
    assert row["codec"] == "flac"
    assert row["container"] == "flac"
    # What the file really is (tests/data/README.md says mono 16 kHz; it is not).
    assert row["sample_rate"] == 44100
    assert row["channels"] == 2
    assert (row["source"], row["original_name"], row["source_uri"], row["source_version"]) == (
        "folder",
        "jfk.flac",
        "/inbox/jfk.flac",
        "v1",
    )
    assert row["error"] is None and row["duplicate_of"] is None
    assert row["storage_key"] == content_key(sha, "flac")

    store = FilesystemStore(objects)
    assert store.get_bytes(row["storage_key"]) == JFK.read_bytes()
    assert stored_files(objects) == [objects / row["storage_key"]]  # no temp files left

    jobs = db.execute("SELECT audio_id, state, attempts, max_attempts FROM jobs").fetchall()
    assert jobs == [
        {
            "audio_id": result.audio_id,
            "state": "queued",
            "attempts": 0,
            "max_attempts": settings.queue.max_attempts,
        }
    ]


def test_ingest_wav_records_its_format(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    async def scenario() -> IngestResult:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            return await ingest_file(ing, STEREO, arrival_for(STEREO))

    result = asyncio.run(scenario())
    assert result.outcome == "accepted"
    row = db.execute("SELECT * FROM audio WHERE id = %s", (result.audio_id,)).fetchone()
    assert row is not None
    assert row["channels"] == 2
    assert row["container"] == "wav"
    assert row["codec"].startswith("pcm_")
    assert 1.0 < row["duration_s"] < 10.0
    assert row["storage_key"].endswith(".wav")


def test_same_bytes_under_another_name_is_a_duplicate_without_a_job(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    copy = tmp_path / "kennedy.flac"
    shutil.copyfile(JFK, copy)
    objects = tmp_path / "objects"

    async def scenario() -> tuple[IngestResult, IngestResult]:
        async with ingestor(make_settings(), objects) as ing:
            first = await ingest_file(ing, JFK, arrival_for(JFK))
            second = await ingest_file(ing, copy, arrival_for(copy))
            return first, second

    first, second = asyncio.run(scenario())

    assert first.outcome == "accepted"
    assert second.outcome == "duplicate"
    assert second.duplicate_of == first.audio_id
    assert second.audio_id != first.audio_id
    row = db.execute("SELECT * FROM audio WHERE id = %s", (second.audio_id,)).fetchone()
    assert row is not None
    assert (row["state"], row["duplicate_of"], row["original_name"]) == (
        "duplicate",
        first.audio_id,
        "kennedy.flac",
    )
    assert row["sha256"] == sha256_of(JFK)
    jobs = db.execute("SELECT audio_id FROM jobs").fetchall()
    assert jobs == [{"audio_id": first.audio_id}]
    assert len(stored_files(objects)) == 1  # content-addressed: stored once


def test_same_arrival_again_is_already_ingested(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    arrival = arrival_for(JFK, version="1234:5678")

    Found = IngestResult | None

    async def scenario() -> tuple[IngestResult, IngestResult, Found, Found]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            assert await ing.find_existing(arrival) is None
            first = await ingest_file(ing, JFK, arrival)
            again = await ingest_file(ing, JFK, arrival)
            found = await ing.find_existing(arrival)
            other_version = await ing.find_existing(
                Arrival("folder", arrival.original_name, arrival.source_uri, "9999:1")
            )
            return first, again, found, other_version

    first, again, found, other_version = asyncio.run(scenario())

    assert first.outcome == "accepted"
    assert again.outcome == "already_ingested"
    assert again.audio_id == first.audio_id
    assert found is not None
    assert (found.outcome, found.audio_id, found.reason) == (
        "already_ingested",
        first.audio_id,
        None,
    )
    assert other_version is None
    assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 1}
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 1}


def test_find_existing_without_source_version_is_none(make_settings: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            arrival = arrival_for(JFK, version=None)
            assert (await ingest_file(ing, JFK, arrival)).outcome == "accepted"
            assert await ing.find_existing(arrival) is None

    asyncio.run(scenario())


def test_text_file_named_wav_is_rejected_without_object_or_job(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("These are my meeting notes, not audio.\n" * 20)
    objects = tmp_path / "objects"
    arrival = arrival_for(fake)

    async def scenario() -> tuple[IngestResult, IngestResult | None]:
        async with ingestor(make_settings(), objects) as ing:
            result = await ingest_file(ing, fake, arrival)
            return result, await ing.find_existing(arrival)

    result, found = asyncio.run(scenario())

    assert result.outcome == "rejected"
    assert result.reason
    assert "audio" in result.reason.lower()
    assert "Traceback" not in result.reason
    row = db.execute("SELECT * FROM audio WHERE id = %s", (result.audio_id,)).fetchone()
    assert row is not None
    assert (row["state"], row["error"], row["original_name"]) == (
        "rejected",
        result.reason,
        "notes.wav",
    )
    assert row["sha256"] is None and row["storage_key"] is None
    assert row["size_bytes"] == fake.stat().st_size
    assert stored_files(objects) == []
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 0}
    assert found is not None
    assert (found.outcome, found.audio_id, found.reason) == (
        "rejected",
        result.audio_id,
        result.reason,
    )


def test_disallowed_extension_is_rejected_with_reason(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    exe = tmp_path / "jfk.exe"
    shutil.copyfile(JFK, exe)

    async def scenario() -> IngestResult:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            return await ingest_file(ing, exe, arrival_for(exe))

    result = asyncio.run(scenario())
    assert result.outcome == "rejected"
    assert result.reason is not None and ".exe" in result.reason
    assert stored_files(tmp_path / "objects") == []
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 0}


@pytest.mark.parametrize("copies", [2, 4])
def test_concurrent_ingests_of_same_content_accept_exactly_one(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path, copies: int
) -> None:
    paths = []
    for i in range(copies):
        p = tmp_path / f"copy{i}.flac"
        shutil.copyfile(JFK, p)
        paths.append(p)
    objects = tmp_path / "objects"

    async def scenario() -> list[IngestResult]:
        async with ingestor(make_settings(), objects) as ing:
            return list(await asyncio.gather(*(ingest_file(ing, p, arrival_for(p)) for p in paths)))

    results = asyncio.run(scenario())

    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["accepted"] + ["duplicate"] * (copies - 1)
    accepted = next(r for r in results if r.outcome == "accepted")
    assert all(r.duplicate_of == accepted.audio_id for r in results if r is not accepted)
    assert len({r.audio_id for r in results}) == copies
    rows = db.execute("SELECT state, count(*) AS n FROM audio GROUP BY state ORDER BY state")
    assert rows.fetchall() == [
        {"state": "duplicate", "n": copies - 1},
        {"state": "queued", "n": 1},
    ]
    assert db.execute("SELECT audio_id FROM jobs").fetchall() == [{"audio_id": accepted.audio_id}]
    assert len(stored_files(objects)) == 1


def test_ingests_racing_past_the_duplicate_lookup_still_accept_exactly_one(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path, database_url: str
) -> None:
    """Force the race: both ingests look for the content, find nothing, then insert.

    A SHARE lock on ``audio`` lets both run their SELECTs but holds both INSERTs
    until both are waiting; the loser must hit the unique index and retry. Two
    ingestors, as two processes would be: one ingestor records its files in turn.
    """
    copy = tmp_path / "copy.flac"
    shutil.copyfile(JFK, copy)
    objects = tmp_path / "objects"

    async def waiting_inserts(watcher: psycopg.AsyncConnection[Any]) -> bool:
        cur = await watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
            " AND relation = 'audio'::regclass AND mode = 'RowExclusiveLock'"
        )
        row = await cur.fetchone()
        assert row is not None
        return bool(row[0] == 2)

    async def scenario() -> list[IngestResult]:
        async with (
            ingestor(make_settings(), objects) as ing,
            ingestor(make_settings(), objects) as other,
        ):
            blocker = await psycopg.AsyncConnection.connect(database_url)
            watcher = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
            try:
                await blocker.execute("LOCK TABLE audio IN SHARE MODE")
                tasks = [
                    asyncio.create_task(ingest_file(ing, JFK, arrival_for(JFK))),
                    asyncio.create_task(ingest_file(other, copy, arrival_for(copy))),
                ]
                deadline = asyncio.get_running_loop().time() + 30
                while not await waiting_inserts(watcher):
                    assert asyncio.get_running_loop().time() < deadline, "inserts never blocked"
                    assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
                    # Wake early if an ingest ends (it must not), else look at pg_locks again.
                    await asyncio.wait(tasks, timeout=0.02)
                await blocker.rollback()
                return list(await asyncio.gather(*tasks))
            finally:
                await blocker.close()
                await watcher.close()

    results = asyncio.run(scenario())

    assert sorted(r.outcome for r in results) == ["accepted", "duplicate"]
    accepted = next(r for r in results if r.outcome == "accepted")
    duplicate = next(r for r in results if r.outcome == "duplicate")
    assert duplicate.duplicate_of == accepted.audio_id
    assert db.execute("SELECT audio_id FROM jobs").fetchall() == [{"audio_id": accepted.audio_id}]
    assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 2}


def test_reingesting_an_accepted_arrival_under_stricter_limits_is_a_no_op(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    arrival = arrival_for(JFK)

    async def scenario() -> tuple[IngestResult, IngestResult]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            first = await ingest_file(ing, JFK, arrival)
        strict = make_settings(validation={"max_duration_s": 5})
        async with ingestor(strict, tmp_path / "objects") as ing:
            again = await ingest_file(ing, JFK, arrival)
        return first, again

    first, again = asyncio.run(scenario())
    assert first.outcome == "accepted"
    row = db.execute("SELECT state, error FROM audio WHERE id = %s", (first.audio_id,)).fetchone()
    assert row == {"state": "queued", "error": None}
    assert again.outcome == "already_ingested"


def test_source_changed_during_ingest_raises_and_records_nothing(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    calls: list[int] = []

    def unchanged() -> bool:
        calls.append(1)
        return False

    async def scenario() -> None:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            with pytest.raises(SourceChanged):
                await ingest_file(ing, JFK, arrival_for(JFK), unchanged=unchanged)
            assert await ing.find_existing(arrival_for(JFK)) is None
            # A later, stable delivery of the same version is accepted normally.
            result = await ingest_file(ing, JFK, arrival_for(JFK), unchanged=lambda: True)
            assert result.outcome == "accepted"

    asyncio.run(scenario())
    assert calls == [1]
    assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 1}
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 1}


def test_source_changed_leaves_no_rows(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            with pytest.raises(SourceChanged):
                await ingest_file(ing, JFK, arrival_for(JFK), unchanged=lambda: False)

    asyncio.run(scenario())
    assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 0}
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 0}


# -- a source that changed after it was recorded --------------------------------------


def half_of(path: Path, tmp_path: Path) -> Path:
    raw = path.read_bytes()
    half = tmp_path / f"half-{path.name}"
    half.write_bytes(raw[: len(raw) // 2])
    return half


def test_incomplete_audio_raises_still_arriving_when_asked_to_wait_and_records_nothing(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    half = half_of(JFK, tmp_path)

    async def scenario() -> IngestResult:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            with pytest.raises(StillArriving) as waiting:
                await ingest_file(ing, half, arrival_for(half), wait_if_incomplete=True)
            assert waiting.value.code == "truncated" and "11.0 s" in waiting.value.reason
            assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 0}
            # Uploads and S3 objects are complete by definition: rejected at once.
            return await ingest_file(ing, half, arrival_for(half))

    result = asyncio.run(scenario())
    assert result.outcome == "rejected" and result.reason is not None
    assert "truncated" in result.reason
    assert stored_files(tmp_path / "objects") == []


def test_the_next_version_of_a_changed_source_supersedes_the_first(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    grown = tmp_path / "grown.wav"
    grown.write_bytes(STEREO.read_bytes() + bytes(2))  # other bytes, same recording, longer

    async def scenario() -> tuple[IngestResult, ...]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            first = await ingest_file(ing, STEREO, arrival_for(STEREO, "talk.wav", "v1"))
            other = await ingest_file(ing, JFK, arrival_for(JFK, "other.flac", "v1"))
            await ing.mark_supersede_pending(first.audio_id)  # the hot folder saw it change
            second = await ingest_file(ing, grown, arrival_for(grown, "talk.wav", "v2"))
            third = await ingest_file(ing, JFK, arrival_for(JFK, "other.flac", "v2"))
            return first, other, second, third

    first, other, second, third = asyncio.run(scenario())
    assert (first.outcome, second.outcome) == ("accepted", "accepted")
    row = db.execute(
        "SELECT superseded_by, supersede_pending FROM audio WHERE id = %s", (first.audio_id,)
    ).fetchone()
    assert row == {"superseded_by": second.audio_id, "supersede_pending": False}
    # Only a row marked pending is superseded: a new version of other.flac is a duplicate.
    assert third.outcome == "duplicate" and third.duplicate_of == other.audio_id
    superseded = db.execute("SELECT id FROM audio WHERE superseded_by IS NOT NULL").fetchall()
    assert [r["id"] for r in superseded] == [first.audio_id]
    jobs = db.execute("SELECT audio_id FROM jobs ORDER BY id").fetchall()
    assert [j["audio_id"] for j in jobs] == [first.audio_id, other.audio_id, second.audio_id]


def test_a_changed_source_with_the_same_bytes_is_the_same_audio_not_a_new_version(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A ``touch`` during ingest moves the fingerprint, not the content: nothing to supersede."""

    async def scenario() -> tuple[IngestResult, IngestResult, IngestResult | None]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            first = await ingest_file(ing, JFK, arrival_for(JFK, version="v1"))
            await ing.mark_supersede_pending(first.audio_id)
            again = await ingest_file(ing, JFK, arrival_for(JFK, version="v2"))
            return first, again, await ing.find_existing(arrival_for(JFK, version="v2"))

    first, again, found = asyncio.run(scenario())
    assert again.outcome == "already_ingested" and again.audio_id == first.audio_id
    assert found is not None and found.audio_id == first.audio_id
    (row,) = db.execute("SELECT * FROM audio").fetchall()
    assert row["source_version"] == "v2"
    assert row["superseded_by"] is None and not row["supersede_pending"]
    assert db.execute("SELECT count(*) AS n FROM jobs").fetchone() == {"n": 1}


def test_a_refusal_marked_pending_is_superseded_by_the_version_taken_later(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """How an unreadable hot-folder file is recorded, then replaced once it can be read."""

    async def scenario() -> tuple[IngestResult, IngestResult]:
        async with ingestor(make_settings(), tmp_path / "objects") as ing:
            placeholder = await ing.reject(
                arrival_for(JFK, version="unreadable:v1"),
                "cannot read the file (Permission denied)",
                code="unreadable",
                supersede_pending=True,
            )
            return placeholder, await ingest_file(ing, JFK, arrival_for(JFK, version="v1"))

    placeholder, taken = asyncio.run(scenario())
    assert placeholder.outcome == "rejected" and taken.outcome == "accepted"
    row = db.execute(
        "SELECT state, superseded_by, supersede_pending FROM audio WHERE id = %s",
        (placeholder.audio_id,),
    ).fetchone()
    assert row == {"state": "rejected", "superseded_by": taken.audio_id, "supersede_pending": False}


def test_the_same_audio_with_other_options_is_transcribed_again_and_both_are_kept(
    make_settings: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A variant gets its own job; the same options again are a duplicate of that variant."""
    settings = make_settings()

    async def scenario() -> list[IngestResult]:
        async with ingestor(settings, tmp_path / "objects") as ing:
            plain = await ingest_file(ing, JFK, arrival_for(JFK, "a.flac"))
            prompted = await ingest_file(
                ing, JFK, arrival_for(JFK, "b.flac"), options={"vocabulary": ["Kennedy"]}
            )
            again = await ingest_file(
                ing, JFK, arrival_for(JFK, "c.flac"), options={"vocabulary": ["Kennedy"]}
            )
            # Unset options are no options: the first row answers for them.
            same_as_first = await ingest_file(
                ing, JFK, arrival_for(JFK, "d.flac"), options={"prompt": None, "language": None}
            )
            return [plain, prompted, again, same_as_first]

    plain, prompted, again, same_as_first = asyncio.run(scenario())

    assert plain.outcome == "accepted"
    assert prompted.outcome == "accepted" and prompted.duplicate_of is None
    assert again.outcome == "duplicate" and again.duplicate_of == prompted.audio_id
    assert same_as_first.outcome == "duplicate" and same_as_first.duplicate_of == plain.audio_id
    variant = db.execute(
        "SELECT a.state, a.variant_of, j.options FROM audio a JOIN jobs j ON j.audio_id = a.id"
        " WHERE a.id = %s",
        (prompted.audio_id,),
    ).fetchone()
    assert variant is not None
    assert variant["state"] == "queued" and variant["variant_of"] == plain.audio_id
    assert variant["options"] == {"vocabulary": ["Kennedy"]}
    jobs = db.execute(
        "SELECT count(*) AS n FROM jobs WHERE audio_id IN (%s, %s, %s, %s)",
        tuple(r.audio_id for r in (plain, prompted, again, same_as_first)),
    ).fetchone()
    assert jobs is not None and jobs["n"] == 2
