"""Transcript files where users are: the outbox beside folder drops, and S3 output buckets.

Real parts throughout: audio is ingested (by the hot folder, the S3 event processor,
or the ingestor for versions of one file), transcribed by a worker running tiny.en,
and the events the database trigger wrote are handed to the delivery handlers as
the runner would hand them.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import AsrSettings, Settings, SubtitleSettings
from pipeline.db.database import Database
from pipeline.deliveries.base import DeliveryFailed, Event
from pipeline.deliveries.bucket import BucketHandler
from pipeline.deliveries.outbox import OutboxHandler
from pipeline.errors import ConfigError
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.sources import inbox as s3_inbox
from pipeline.sources.events import ObjectEvent
from pipeline.storage import FilesystemStore
from pipeline.storage.s3 import S3Store
from tests.components import hotfolder_of, ingestor_of, processor_of, sources_of, worker_of
from tests.e2e.gateway_harness import parse_srt, parse_vtt
from tests.waiting import jobs_settled
from workers.asr import LongAudioTranscriber, build_transcriber

DATA = Path(__file__).resolve().parents[1] / "data"
JFK = DATA / "jfk.flac"
Row = dict[str, Any]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber() -> LongAudioTranscriber:
    t = build_transcriber(AsrSettings(model="tiny.en"), metrics=Metrics())
    t.load()
    return t


def fast_settings(make_settings: Any, **overrides: Any) -> Settings:
    settings: Settings = make_settings(asr={"model": "tiny.en"}, **overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


async def events_for(database: Database, target: str) -> list[Event]:
    """The events that have a delivery to ``target``, oldest first (as the trigger wrote)."""
    async with database.connection() as conn:
        cur = await conn.execute(
            "SELECT e.id, e.seq, e.tenant, e.type, e.audio_id, e.state, e.occurred_at"
            " FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.target = %s"
            " ORDER BY e.seq",
            (target,),
        )
        return [Event(**row) for row in await cur.fetchall()]  # type: ignore[arg-type]


async def transcribe_all(
    settings: Settings, database: Database, transcriber: LongAudioTranscriber, *, at_least: int
) -> None:
    store = FilesystemStore(settings.data_dir / "objects")
    worker = worker_of(settings, database, store, transcriber, worker_id="files:0")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await jobs_settled(settings, timeout=180, at_least=at_least, watch=[task])
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def transcript_of(db: psycopg.Connection[Row], audio_id: uuid.UUID) -> Row:
    row = db.execute(
        "SELECT t.id, t.text, a.state FROM transcripts t JOIN audio a ON a.id = t.audio_id"
        " WHERE t.audio_id = %s",
        (audio_id,),
    ).fetchone()
    assert row is not None and row["state"] == "transcribed", row
    return row


def segment_texts(db: psycopg.Connection[Row], transcript_id: uuid.UUID) -> list[str]:
    rows = db.execute(
        "SELECT text FROM segments WHERE transcript_id = %s ORDER BY idx", (transcript_id,)
    ).fetchall()
    return [r["text"].strip() for r in rows if r["text"].strip()]


def assert_subtitles_readable(srt: str, vtt: str, limits: SubtitleSettings) -> None:
    """Both parse, and every cue keeps the broadcast limits (lines, width, length)."""
    cues = parse_srt(srt)
    assert len(parse_vtt(vtt)) == len(cues)
    for block in re.split(r"\n\s*\n", srt.strip()):
        lines = block.splitlines()[2:]
        assert 1 <= len(lines) <= limits.max_lines, block
        assert all(len(line) <= limits.max_line_chars for line in lines), block
    assert all(c.end - c.start <= limits.max_cue_s + 0.001 for c in cues), cues


def leftovers(root: Path) -> list[Path]:
    """Temp files a writer left behind (hidden names, ``.tmp``)."""
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# -- folder drops --------------------------------------------------------------------


def test_a_drop_in_a_sub_folder_gets_its_transcript_files_in_the_mirrored_outbox(
    make_settings: Any,
    db: psycopg.Connection[Row],
    transcriber: LongAudioTranscriber,
    tmp_path: Path,
) -> None:
    settings = fast_settings(make_settings)
    inbox = settings.watch.inbox
    outbox = inbox / "transcripts"
    elsewhere = tmp_path / "elsewhere"

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        stop = asyncio.Event()
        store = FilesystemStore(settings.data_dir / "objects")
        hotfolder = hotfolder_of(settings, ingestor_of(settings, database, store))
        worker = worker_of(settings, database, store, transcriber, worker_id="files:0")
        tasks = [
            asyncio.create_task(hotfolder.run(stop)),
            asyncio.create_task(worker.run(stop)),
        ]
        try:
            (inbox / "calls" / "monday").mkdir(parents=True)
            staged = settings.data_dir / "call.flac.part"
            shutil.copyfile(JFK, staged)
            staged.rename(inbox / "calls" / "monday" / "call.v2.flac")
            await jobs_settled(settings, timeout=180, at_least=1, watch=tasks)

            (event,) = await events_for(database, "outbox")
            assert event.type == "audio.transcribed"
            await OutboxHandler(settings.watch, settings.subtitles, database).deliver(
                event, "outbox"
            )
            # Written while the hot folder watches the inbox: it must not take them. A
            # second drop, settled after them, shows it had every chance to.
            shutil.copyfile(DATA / "hotwords.mp3", staged)
            staged.rename(inbox / "second.mp3")
            await jobs_settled(settings, timeout=180, at_least=2, watch=tasks)

            def handler(**watch: Any) -> OutboxHandler:
                chosen = settings.watch.model_copy(update=watch)
                return OutboxHandler(chosen, settings.subtitles, database)

            await handler(outbox="beside").deliver(event, "outbox")
            everything = listing(inbox)
            await handler(outbox="off").deliver(event, "outbox")
            assert listing(inbox) == everything
            await handler(outbox=elsewhere, outbox_formats=("txt",)).deliver(event, "outbox")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await database.close()

    asyncio.run(scenario())

    audio = db.execute(
        "SELECT id FROM audio WHERE original_name = 'calls/monday/call.v2.flac'"
    ).fetchone()
    assert audio is not None
    transcript = transcript_of(db, audio["id"])
    assert "country" in transcript["text"].lower()

    # The default outbox mirrors the sub-folders; the name keeps its whole stem.
    assert listing(outbox) == {
        f"calls/monday/call.v2.{fmt}" for fmt in ("txt", "srt", "vtt", "json")
    }
    folder = outbox / "calls" / "monday"
    txt = (folder / "call.v2.txt").read_text(encoding="utf-8")
    assert txt.splitlines() == segment_texts(db, transcript["id"])
    assert " ".join(txt.split()) == " ".join(transcript["text"].split())
    assert_subtitles_readable(
        (folder / "call.v2.srt").read_text(encoding="utf-8"),
        (folder / "call.v2.vtt").read_text(encoding="utf-8"),
        settings.subtitles,
    )
    document = json.loads((folder / "call.v2.json").read_text(encoding="utf-8"))
    assert document["audio_id"] == str(audio["id"])
    assert document["text"] == transcript["text"]
    assert [s["text"].strip() for s in document["segments"] if s["text"].strip()] == (
        segment_texts(db, transcript["id"])
    )
    assert leftovers(inbox) == []

    # Nothing in the outbox was taken or refused: two drops, two rows, no .error.txt.
    names = [r["original_name"] for r in db.execute("SELECT original_name FROM audio").fetchall()]
    assert sorted(names) == ["calls/monday/call.v2.flac", "second.mp3"]
    assert (
        not settings.watch.rejected_path.exists() or listing(settings.watch.rejected_path) == set()
    )

    # "beside": next to the processed audio, mirrored the same way.
    processed = listing(settings.watch.processed_path)
    assert "calls/monday/call.v2.flac" in processed
    assert {f"calls/monday/call.v2.{fmt}" for fmt in ("txt", "srt", "vtt", "json")} <= processed
    # A directory of its own, with only the formats asked for.
    assert listing(elsewhere) == {"calls/monday/call.v2.txt"}
    assert (elsewhere / "calls/monday/call.v2.txt").read_text(encoding="utf-8") == txt


async def ingest_version(
    settings: Settings, database: Database, content: Path, version: str
) -> uuid.UUID:
    """One version of ``<inbox>/call.flac``, recorded as the hot folder records it."""
    ingestor = ingestor_of(settings, database, FilesystemStore(settings.data_dir / "objects"))
    path = settings.watch.inbox / "call.flac"
    with open(content, "rb") as f:
        result = await ingestor.ingest(
            Arrival("folder", "call.flac", path.as_uri(), version),
            f,
            content.stat().st_size,
            choices=settings.watch,
        )
    assert result.outcome == "accepted", result
    return result.audio_id


def test_a_newer_version_replaces_the_files_whole_and_a_late_older_one_does_not(
    make_settings: Any, db: psycopg.Connection[Row], transcriber: LongAudioTranscriber
) -> None:
    settings = fast_settings(make_settings)
    txt = settings.watch.inbox / "transcripts" / "call.txt"
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            handler = OutboxHandler(settings.watch, settings.subtitles, database)
            old_id = await ingest_version(settings, database, JFK, "v1")
            await transcribe_all(settings, database, transcriber, at_least=1)
            (old_event,) = await events_for(database, "outbox")
            await handler.deliver(old_event, "outbox")
            seen["old_text"] = txt.read_text(encoding="utf-8")
            seen["old_inode"] = txt.stat().st_ino

            # The file changed after it was taken: the next version supersedes this one.
            store = FilesystemStore(settings.data_dir / "objects")
            await ingestor_of(settings, database, store).mark_supersede_pending(old_id)
            seen["new_id"] = await ingest_version(settings, database, DATA / "speech_fr.flac", "v2")
            await transcribe_all(settings, database, transcriber, at_least=2)
            events = await events_for(database, "outbox")
            (new_event,) = [e for e in events if e.audio_id == seen["new_id"]]
            await handler.deliver(new_event, "outbox")
            seen["new_text"] = txt.read_text(encoding="utf-8")
            seen["new_inode"] = txt.stat().st_ino
            # The older version's delivery, retried late: it must not bring its text back.
            await handler.deliver(old_event, "outbox")
            seen["after_late"] = txt.read_text(encoding="utf-8")

            # Dropped again under the same name (nothing superseded): the newest drop wins
            # too, and the one before it, delivered late, leaves its files alone.
            seen["third_id"] = await ingest_version(
                settings, database, DATA / "speech_es.flac", "v3"
            )
            await transcribe_all(settings, database, transcriber, at_least=3)
            events = await events_for(database, "outbox")
            (third_event,) = [e for e in events if e.audio_id == seen["third_id"]]
            await handler.deliver(third_event, "outbox")
            await handler.deliver(new_event, "outbox")
            seen["third_text"] = txt.read_text(encoding="utf-8")
        finally:
            await database.close()

    asyncio.run(scenario())

    old = db.execute("SELECT id, superseded_by FROM audio WHERE source_version = 'v1'").fetchone()
    assert old is not None and old["superseded_by"] == seen["new_id"]
    old_text = transcript_of(db, old["id"])["text"]
    new_text = transcript_of(db, seen["new_id"])["text"]
    assert old_text != new_text
    assert " ".join(seen["old_text"].split()) == " ".join(old_text.split())
    # Replaced by rename (a new file, never the old one rewritten in place), and whole.
    assert seen["new_inode"] != seen["old_inode"]
    assert " ".join(seen["new_text"].split()) == " ".join(new_text.split())
    assert seen["after_late"] == seen["new_text"]
    third_text = transcript_of(db, seen["third_id"])["text"]
    assert third_text != new_text
    assert " ".join(seen["third_text"].split()) == " ".join(third_text.split())
    assert leftovers(settings.watch.inbox) == []


def test_a_write_that_fails_is_retried_and_leaves_no_temp_file(
    make_settings: Any, transcriber: LongAudioTranscriber, tmp_path: Path
) -> None:
    settings = fast_settings(make_settings)
    outbox = settings.watch.inbox / "transcripts"
    # Where call.srt should go stands a directory: that one file cannot be replaced.
    (outbox / "call.srt").mkdir(parents=True)

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            await ingest_version(settings, database, JFK, "v1")
            await transcribe_all(settings, database, transcriber, at_least=1)
            (event,) = await events_for(database, "outbox")
            handler = OutboxHandler(settings.watch, settings.subtitles, database)
            with pytest.raises(DeliveryFailed, match="call.srt"):
                await handler.deliver(event, "outbox")
            assert leftovers(outbox) == []
            (outbox / "call.srt").rmdir()  # fixed: the retry writes every file

            # A watcher of another inbox (sharing the database) leaves it to this one's.
            other = settings.watch.model_copy(update={"inbox": tmp_path / "other"})
            with pytest.raises(DeliveryFailed, match="another inbox"):
                await OutboxHandler(other, settings.subtitles, database).deliver(event, "outbox")
            assert not (tmp_path / "other").exists()
            await handler.deliver(event, "outbox")
        finally:
            await database.close()

    asyncio.run(scenario())
    assert listing(outbox) == {f"call.{fmt}" for fmt in ("txt", "srt", "vtt", "json")}
    assert parse_srt((outbox / "call.srt").read_text(encoding="utf-8"))
    assert leftovers(outbox) == []


def test_a_copy_under_another_name_gets_the_same_files_once_the_original_is_transcribed(
    make_settings: Any, db: psycopg.Connection[Row], transcriber: LongAudioTranscriber
) -> None:
    """Same content dropped as ``copy.flac``: a duplicate, whose files are its original's."""
    settings = fast_settings(make_settings)
    outbox = settings.watch.inbox / "transcripts"
    ingestor_args = (FilesystemStore(settings.data_dir / "objects"),)

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            await ingest_version(settings, database, JFK, "v1")
            ingestor = ingestor_of(settings, database, *ingestor_args)
            copy = settings.watch.inbox / "copy.flac"
            with open(JFK, "rb") as f:
                result = await ingestor.ingest(
                    Arrival("folder", "copy.flac", copy.as_uri(), "c1"),
                    f,
                    JFK.stat().st_size,
                    choices=settings.watch,
                )
            assert result.outcome == "duplicate"
            (early,) = await events_for(database, "outbox")
            assert early.audio_id == result.audio_id
            handler = OutboxHandler(settings.watch, settings.subtitles, database)
            # The original is still queued: retried later, nothing written yet.
            with pytest.raises(DeliveryFailed, match="not transcribed yet"):
                await handler.deliver(early, "outbox")
            assert not (outbox / "copy.txt").exists()
            async with database.connection() as conn:  # as the runner backs off
                await conn.execute(
                    "UPDATE deliveries SET next_attempt_at = now() + interval '1 hour'"
                    " WHERE event_id = %s",
                    (early.id,),
                )

            await transcribe_all(settings, database, transcriber, at_least=1)
            for event in await events_for(database, "outbox"):
                await handler.deliver(event, "outbox")
        finally:
            await database.close()

    asyncio.run(scenario())
    assert listing(outbox) == {
        f"{n}.{fmt}" for n in ("call", "copy") for fmt in ("txt", "srt", "vtt", "json")
    }
    assert (outbox / "copy.txt").read_text(encoding="utf-8") == (outbox / "call.txt").read_text(
        encoding="utf-8"
    )
    # The original's transcript made the duplicate's waiting delivery due at once.
    row = db.execute(
        "SELECT d.next_attempt_at <= now() AS due FROM deliveries d JOIN events e"
        " ON e.id = d.event_id WHERE e.state = 'duplicate' AND d.target = 'outbox'"
    ).fetchone()
    assert row is not None and row["due"]


def test_an_outbox_that_is_the_inbox_is_refused_at_start(make_settings: Any) -> None:
    settings = fast_settings(make_settings)
    inbox = settings.watch.inbox
    settings.watch.outbox = inbox
    database = Database(settings.database, embedded=None)  # never opened: refused first
    store = FilesystemStore(settings.data_dir / "objects")
    hotfolder = hotfolder_of(settings, ingestor_of(settings, database, store))
    with pytest.raises(ConfigError, match="watch.outbox is the inbox"):
        asyncio.run(hotfolder.run(asyncio.Event()))


# -- S3 sources ----------------------------------------------------------------------


@pytest.fixture
def buckets(moto_endpoint: str) -> Iterator[dict[str, str]]:
    names = {
        "source": f"src-{uuid.uuid4().hex[:12]}",
        "output": f"out-{uuid.uuid4().hex[:12]}",
        "plain": f"plain-{uuid.uuid4().hex[:12]}",
    }
    yield names


def s3_settings(make_settings: Any, endpoint: str, buckets: dict[str, str]) -> Settings:
    return fast_settings(
        make_settings,
        storage={
            "endpoint": endpoint,
            "access_key": "testing",
            "secret_key": "testing",
            "secure": False,
            "bucket": f"store-{uuid.uuid4().hex[:12]}",
            "timeout_s": 5,
        },
        s3_sources=[
            {
                "bucket": buckets["source"],
                "prefix": "in/",
                "quiet_period_s": 0,
                "output_bucket": buckets["output"],
                "output_prefix": "transcripts/",
                "output_formats": ["txt", "srt", "json"],
            },
            {"bucket": buckets["plain"], "quiet_period_s": 0},
        ],
    )


def created(bucket: str, key: str) -> ObjectEvent:
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name="s3:ObjectCreated:Put",
        size=None,
        etag=None,
        version_id=None,
        sequencer=None,
    )


def object_text(store: S3Store, key: str) -> str:
    buf = io.BytesIO()
    store.download(key, buf)
    return buf.getvalue().decode("utf-8")


def test_s3_sources_get_their_files_in_the_output_bucket_and_a_missing_bucket_is_retried(
    make_settings: Any,
    db: psycopg.Connection[Row],
    moto_endpoint: str,
    buckets: dict[str, str],
    transcriber: LongAudioTranscriber,
) -> None:
    settings = s3_settings(make_settings, moto_endpoint, buckets)
    stores = {
        name: S3Store.from_settings(settings.storage.model_copy(update={"bucket": bucket}))
        for name, bucket in buckets.items()
    }
    for name, key, content in (
        ("source", "in/calls/jfk.flac", JFK),
        ("plain", "fr.flac", DATA / "speech_fr.flac"),
    ):
        data = content.read_bytes()
        stores[name].ensure_bucket()
        stores[name].client.put_object(buckets[name], key, io.BytesIO(data), len(data))
    results: dict[str, Any] = {}

    async def scenario() -> None:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            sources = sources_of(settings)
            processor = processor_of(
                settings, database, ingestor_of(settings, database, store), sources
            )
            async with database.connection() as conn:
                await s3_inbox.record_events(
                    conn,
                    [
                        created(buckets["source"], "in/calls/jfk.flac"),
                        created(buckets["plain"], "fr.flac"),
                    ],
                    "webhook",
                )
            while await processor.process_one():
                pass
            await transcribe_all(settings, database, transcriber, at_least=2)
            events = await events_for(database, "bucket")
            assert len(events) == 2, events
            async with database.connection() as conn:
                cur = await conn.execute(
                    "SELECT id FROM audio WHERE original_name = 'in/calls/jfk.flac'"
                )
                row = await cur.fetchone()
            assert row is not None
            (ours,) = [e for e in events if e.audio_id == row["id"]]
            handler = BucketHandler(
                settings.s3_sources, settings.storage, settings.subtitles, database
            )
            # The output bucket does not exist yet: the PUT fails, the runner retries.
            with pytest.raises(DeliveryFailed, match=buckets["output"]):
                await handler.deliver(ours, "bucket")
            results["created_by_handler"] = stores["output"].client.bucket_exists(buckets["output"])
            stores["output"].ensure_bucket()
            for event in events:
                await handler.deliver(event, "bucket")
            await handler.deliver(ours, "bucket")  # at least once: the same bytes again
        finally:
            await database.close()

    asyncio.run(scenario())

    assert results["created_by_handler"] is False  # the user's bucket is never created
    out = stores["output"]
    keys = {o.object_name for o in out.client.list_objects(buckets["output"], recursive=True)}
    assert keys == {f"transcripts/in/calls/jfk.flac.{fmt}" for fmt in ("txt", "srt", "json")}
    audio = db.execute("SELECT id FROM audio WHERE original_name = 'in/calls/jfk.flac'").fetchone()
    assert audio is not None
    transcript = transcript_of(db, audio["id"])
    txt = object_text(out, "transcripts/in/calls/jfk.flac.txt")
    assert txt.splitlines() == segment_texts(db, transcript["id"])
    assert parse_srt(object_text(out, "transcripts/in/calls/jfk.flac.srt"))
    document = json.loads(object_text(out, "transcripts/in/calls/jfk.flac.json"))
    assert document["audio_id"] == str(audio["id"]) and document["segments"]
    stat = out.client.stat_object(buckets["output"], "transcripts/in/calls/jfk.flac.txt")
    assert (stat.content_type or "").startswith("text/plain")
    # The source without an output bucket: nothing written anywhere, its bucket untouched.
    plain = {o.object_name for o in stores["plain"].client.list_objects(buckets["plain"])}
    assert plain == {"fr.flac"}
