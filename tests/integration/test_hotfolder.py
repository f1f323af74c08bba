"""The hot folder in-process: real watcher, real Ingestor, filesystem store, real PostgreSQL.

Each scenario runs the watcher as a task in one event loop (``asyncio.run`` inside a
sync test) and waits on what it can observe (rows in ``audio``, files on disk) with
a deadline, never on a bare sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import os
import shutil
import struct
import time
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial as partial_fn
from pathlib import Path
from typing import Any

import psycopg
import structlog

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.ingest.core import Arrival, Ingestor, IngestResult
from pipeline.ingest.hotfolder import HotFolder
from pipeline.storage import FilesystemStore
from tests.waiting import eventually

Row = dict[str, Any]
LOW_SPACE = "low disk space: not taking new files until space returns"
SPACE_BACK = "disk space back above the floor: taking files again"


# -- audio ------------------------------------------------------------------


def tiny_wav(variant: int = 0, seconds: float = 0.2, rate: int = 16000) -> bytes:
    """A short, valid mono 16-bit WAV of a sine tone; ``variant`` makes the bytes distinct."""
    frames = int(seconds * rate)
    samples = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames)]
    # Stamp the variant into the first two samples: inaudible, but a distinct sha256.
    samples[0] = (variant & 0x7FFF) - 0x4000
    samples[1] = ((variant >> 15) & 0x7FFF) - 0x4000
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{frames}h", *samples))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- running the watcher ----------------------------------------------------


class SpyIngestor(Ingestor):
    """The real Ingestor, remembering what the watcher asked of it."""

    def __init__(self, settings: Settings, db: Database, store: FilesystemStore) -> None:
        super().__init__(settings, db, store)
        self.looked_up: list[tuple[str, IngestResult | None]] = []
        self.ingested: list[str] = []

    async def find_existing(self, arrival: Arrival) -> IngestResult | None:
        result = await super().find_existing(arrival)
        self.looked_up.append((arrival.original_name, result))
        return result

    async def ingest(self, arrival: Arrival, *args: Any, **kwargs: Any) -> IngestResult:
        self.ingested.append(arrival.original_name)
        return await super().ingest(arrival, *args, **kwargs)


@dataclass
class Running:
    settings: Settings
    store: FilesystemStore
    ingestor: SpyIngestor
    hotfolder: HotFolder
    task: asyncio.Task[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, check: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Re-check ``check`` until truthy; fail early if the watcher died, late at the deadline."""
        return await eventually(check, timeout=timeout, what=what, watch=[self.task])

    async def observe_for(self, seconds: float, check: Callable[[], object]) -> None:
        """Keep ``check`` passing for a whole observation window (asserting an absence)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            check()
            assert not self.task.done(), "watcher stopped"
            await asyncio.sleep(0.05)
        check()


@asynccontextmanager
async def watcher(settings: Settings) -> AsyncIterator[Running]:
    """Run a HotFolder (with its own DB pool) until the block ends; stop it cleanly."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # as the runtime does
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        store = FilesystemStore(settings.data_dir / "objects")
        ingestor = SpyIngestor(settings, database, store)
        hotfolder = HotFolder(settings, ingestor)
        stop = asyncio.Event()
        task = asyncio.create_task(hotfolder.run(stop))
        running = Running(settings, store, ingestor, hotfolder, task, stop)
        try:
            await running.wait_for(
                lambda: settings.watch.rejected_path.is_dir(), timeout=10, what="watcher start"
            )
            yield running
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await database.close()


def rows(
    db: psycopg.Connection[Row], where: str = "TRUE", params: tuple[Any, ...] = ()
) -> list[Row]:
    return db.execute(f"SELECT * FROM audio WHERE {where} ORDER BY created_at", params).fetchall()


def row_named(db: psycopg.Connection[Row], name: str) -> Row | None:
    found = rows(db, "original_name = %s", (name,))
    return found[0] if found else None


# -- 1. a thousand files at once --------------------------------------------


def test_thousand_files_dropped_at_once_are_ready_together_after_one_quiet_period(
    make_settings: Any, db: psycopg.Connection[Row], tmp_path: Path
) -> None:
    n = 1000
    quiet = 1.0
    settings = make_settings(watch={"quiet_period_s": quiet})
    inbox = settings.watch.inbox
    staging = tmp_path / "staging"  # same filesystem as the inbox: rename is atomic
    staging.mkdir()
    contents = {f"f{i:04d}.wav": tiny_wav(i) for i in range(n)}
    for name, data in contents.items():
        (staging / name).write_bytes(data)
    assert len({sha256(d) for d in contents.values()}) == n

    async def scenario() -> tuple[datetime, datetime, float]:
        async with watcher(settings) as w:
            # Warm-up: one file through the event path proves the watch is live.
            (inbox / "warmup.wav").write_bytes(tiny_wav(n + 1))
            await w.wait_for(lambda: row_named(db, "warmup.wav"), timeout=30, what="warm-up row")

            t0 = time.monotonic()
            drop_start = datetime.now(UTC)
            for name in contents:
                os.rename(staging / name, inbox / name)
                # Freshly written, as if copied in now: the quiet period starts at the drop.
                os.utime(inbox / name)
            drop_end = datetime.now(UTC)
            drop_s = time.monotonic() - t0

            def all_recorded() -> bool:
                count = db.execute(
                    "SELECT count(*) AS n FROM audio WHERE original_name LIKE 'f%%.wav'"
                ).fetchone()
                return count is not None and count["n"] == n

            await w.wait_for(all_recorded, timeout=180, what=f"{n} rows")
            await w.wait_for(
                lambda: len(list((inbox / "processed").glob("f*.wav"))) == n,
                timeout=60,
                what="all sources moved to processed/",
            )
            return drop_start, drop_end, drop_s

    drop_start, drop_end, drop_s = asyncio.run(scenario())

    recorded = rows(db, "original_name LIKE 'f%%.wav'")
    assert len(recorded) == n
    assert {r["original_name"] for r in recorded} == set(contents)
    assert {r["state"] for r in recorded} == {"queued"}
    assert {r["sha256"] for r in recorded} == {sha256(d) for d in contents.values()}
    jobs = db.execute("SELECT count(*) AS n FROM jobs WHERE state = 'queued'").fetchone()
    assert jobs == {"n": n + 1}  # and the warm-up file

    first = recorded[0]["created_at"]
    last = recorded[-1]["created_at"]
    # Every file was last modified during the drop, so none may be taken before a
    # whole quiet period has passed since the drop began (the first file's mtime).
    assert drop_s < 5.0, f"the drop itself took {drop_s:.2f}s"
    assert first >= drop_start + timedelta(seconds=quiet), (first, drop_start)
    # Ready together: one shared timer, not one quiet period per file. The first
    # is taken soon after one quiet period, and the spread is ingest work only
    # (sequentially that would be 1000 s of quiet periods alone).
    assert first - drop_end < timedelta(seconds=quiet + 15), first - drop_end
    assert last - drop_end < timedelta(seconds=120), last - drop_end
    assert last - first < timedelta(seconds=n * quiet / 10), last - first

    inbox = settings.watch.inbox
    assert not list(inbox.glob("f*.wav")), "sources left in the inbox"
    moved = {p.name: p.read_bytes() for p in (inbox / "processed").glob("f*.wav")}
    assert moved == contents


# -- 2. keep ----------------------------------------------------------------


def test_after_ingest_keep_leaves_file_recorded_once_across_restart(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings(
        watch={"after_ingest": "keep", "rescan_interval_s": 0.2, "recheck_interval_s": 0.05}
    )
    inbox = settings.watch.inbox
    data = tiny_wav(7)

    async def first_run() -> list[str]:
        async with watcher(settings) as w:
            (inbox / "keep.wav").write_bytes(data)
            await w.wait_for(lambda: row_named(db, "keep.wav"), timeout=30, what="keep.wav row")
            # Many rescans and quiet periods later, it has not been taken again.
            await w.observe_for(4 * settings.watch.quiet_period_s, kept_and_recorded_once)
            return w.ingestor.ingested

    def kept_and_recorded_once() -> None:
        assert len(rows(db, "original_name = %s", ("keep.wav",))) == 1
        assert (inbox / "keep.wav").exists()

    ingested = asyncio.run(first_run())
    assert ingested == ["keep.wav"]
    assert (inbox / "keep.wav").read_bytes() == data
    assert not (inbox / "processed" / "keep.wav").exists()

    async def second_run() -> list[tuple[str, IngestResult | None]]:
        async with watcher(settings) as w:

            def seen_again() -> bool:
                return any(
                    name == "keep.wav" and result is not None
                    for name, result in w.ingestor.looked_up
                )

            await w.wait_for(seen_again, timeout=30, what="restarted watcher to look at keep.wav")
            await w.observe_for(4 * settings.watch.quiet_period_s, kept_and_recorded_once)
            assert w.ingestor.ingested == []
            return w.ingestor.looked_up

    looked_up = asyncio.run(second_run())
    outcomes = [r.outcome for name, r in looked_up if name == "keep.wav" and r is not None]
    assert outcomes == ["already_ingested"]
    assert len(rows(db)) == 1
    assert (inbox / "keep.wav").read_bytes() == data


# -- 3. delete --------------------------------------------------------------


def test_after_ingest_delete_removes_source_and_keeps_identical_stored_object(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings(watch={"after_ingest": "delete"})
    inbox = settings.watch.inbox
    data = tiny_wav(3, seconds=0.5)

    async def scenario() -> Path:
        async with watcher(settings) as w:
            (inbox / "gone.wav").write_bytes(data)
            row = await w.wait_for(lambda: row_named(db, "gone.wav"), timeout=30, what="row")
            await w.wait_for(
                lambda: not (inbox / "gone.wav").exists(), timeout=30, what="source deleted"
            )
            return w.store.root / str(row["storage_key"])

    stored = asyncio.run(scenario())
    row = row_named(db, "gone.wav")
    assert row is not None and row["state"] == "queued"
    assert row["sha256"] == sha256(data)
    assert stored.read_bytes() == data
    assert not (settings.watch.inbox / "gone.wav").exists()
    assert not list((settings.watch.inbox / "processed").rglob("*"))


# -- 4. disk space floor ----------------------------------------------------


def test_low_disk_space_holds_files_and_warns_once_until_floor_lowered(
    make_settings: Any, db: psycopg.Connection[Row], tmp_path: Path
) -> None:
    settings = make_settings(watch={"recheck_interval_s": 0.05})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.data_dir).free
    settings.watch.min_free_bytes = free + 1024**4  # a terabyte more than there is
    inbox = settings.watch.inbox
    data = tiny_wav(11)
    calls = {"n": 0}

    async def scenario() -> None:
        async with watcher(settings) as w:
            real_space_ok = w.hotfolder._space_ok

            def counting_space_ok() -> bool:
                calls["n"] += 1
                return real_space_ok()

            w.hotfolder._space_ok = counting_space_ok  # type: ignore[method-assign]
            (inbox / "held.wav").write_bytes(data)
            # Many ticks, several quiet periods: the file is not taken.
            start_calls = calls["n"]
            await w.observe_for(6 * settings.watch.quiet_period_s, held)
            assert calls["n"] - start_calls >= 20, calls
            assert w.ingestor.looked_up == []

            settings.watch.min_free_bytes = 0
            await w.wait_for(lambda: row_named(db, "held.wav"), timeout=30, what="held.wav row")

    def held() -> None:
        assert rows(db) == [], "file taken while disk space was below the floor"
        assert (inbox / "held.wav").exists()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())

    warnings = [e for e in logs if e["event"] == LOW_SPACE]
    assert len(warnings) == 1, warnings
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["floor_bytes"] == free + 1024**4
    assert [e["event"] for e in logs].count(SPACE_BACK) == 1
    row = row_named(db, "held.wav")
    assert row is not None and row["state"] == "queued"
    assert (inbox / "processed" / "held.wav").read_bytes() == data


# -- 5. subfolders, ignored names, symlinks ---------------------------------


def test_subfolders_ingested_ignored_names_left_and_symlinks_out_refused(
    make_settings: Any, db: psycopg.Connection[Row], tmp_path: Path
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    nested = tiny_wav(21)
    hidden = tiny_wav(22)
    partial = tiny_wav(23)
    secret = tiny_wav(24)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(secret)
    # Present before start: found by the start-up scan.
    inbox.mkdir(parents=True)
    (inbox / "linkdir").symlink_to(outside, target_is_directory=True)
    (inbox / "filelink.wav").symlink_to(outside / "secret.wav")

    async def scenario() -> None:
        async with watcher(settings) as w:
            (inbox / "sub" / "dir").mkdir(parents=True)
            (inbox / "sub" / "dir" / "a.wav").write_bytes(nested)
            (inbox / ".x.wav").write_bytes(hidden)
            (inbox / "a.wav.part").write_bytes(partial)
            await w.wait_for(
                lambda: row_named(db, "sub/dir/a.wav"), timeout=30, what="sub/dir/a.wav row"
            )
            for name in ("linkdir", "filelink.wav"):
                await w.wait_for(partial_fn(row_named, db, name), timeout=30, what=name)

            def ignored_untouched() -> None:
                assert (inbox / ".x.wav").exists() and (inbox / "a.wav.part").exists()
                looked_at = {name for name, _ in w.ingestor.looked_up}
                assert not looked_at & {".x.wav", "a.wav.part"}, looked_at

            # Two quiet periods more, and the ignored names are still untouched.
            await w.observe_for(2 * settings.watch.quiet_period_s, ignored_untouched)

    asyncio.run(scenario())

    row = row_named(db, "sub/dir/a.wav")
    assert row is not None and row["state"] == "queued" and row["sha256"] == sha256(nested)
    assert (inbox / "processed" / "sub" / "dir" / "a.wav").read_bytes() == nested

    # Ignored names: no row, left where they were.
    all_rows = rows(db)
    names = {r["original_name"] for r in all_rows}
    assert ".x.wav" not in names and "a.wav.part" not in names
    assert (inbox / ".x.wav").read_bytes() == hidden
    assert (inbox / "a.wav.part").read_bytes() == partial

    # Symlinks: refused without reading what is behind them.
    for name in ("linkdir", "filelink.wav"):
        refused = row_named(db, name)
        assert refused is not None
        assert refused["state"] == "rejected"
        assert refused["sha256"] is None and refused["storage_key"] is None
        assert "symbolic link" in refused["error"] and "outside" in refused["error"]
    assert sha256(secret) not in {r["sha256"] for r in all_rows}
    assert not any("secret" in r["original_name"] for r in all_rows)
    assert (outside / "secret.wav").read_bytes() == secret  # untouched, still outside
    assert (inbox / "rejected" / "linkdir").is_symlink()
    assert (inbox / "rejected" / "filelink.wav").is_symlink()
    assert (inbox / "rejected" / "linkdir.error.txt").exists()


# -- 6. start-up scan --------------------------------------------------------


def test_file_dropped_while_stopped_is_ingested_by_startup_scan(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    data = tiny_wav(31)

    async def run_once(check: Callable[[Running], Any]) -> None:
        async with watcher(settings) as w:
            await check(w)

    async def idle(w: Running) -> None:
        assert inbox.is_dir()

    asyncio.run(run_once(idle))
    # Dropped while no watcher runs: no event will ever be seen for it.
    (inbox / "offline.wav").write_bytes(data)

    async def ingested(w: Running) -> None:
        await w.wait_for(lambda: row_named(db, "offline.wav"), timeout=30, what="offline row")
        await w.wait_for(
            lambda: (inbox / "processed" / "offline.wav").exists(), timeout=30, what="moved"
        )

    asyncio.run(run_once(ingested))
    row = row_named(db, "offline.wav")
    assert row is not None and row["state"] == "queued" and row["sha256"] == sha256(data)
    assert not (inbox / "offline.wav").exists()
