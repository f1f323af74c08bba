"""The hot folder in-process: real watcher, real Ingestor, filesystem store, real PostgreSQL.

Each scenario runs the watcher as a task in one event loop (``asyncio.run`` inside a
sync test) and waits on what it can observe (rows in ``audio``, files on disk) with
a deadline, never on a bare sleep.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial as partial_fn
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import sql
from psycopg.rows import dict_row

from pipeline import catalog
from pipeline.choices import TranscriptionPolicy
from pipeline.config import DatasetSettings, Settings
from pipeline.datasets.eligibility import ELIGIBLE_AUDIO, filter_params
from pipeline.db.database import Database
from pipeline.ingest.core import Arrival, Ingestor, IngestResult
from pipeline.ingest.hotfolder import HotFolder
from pipeline.metrics import Metrics
from pipeline.storage import FilesystemStore
from tests.e2e.gateway_harness import Signer, bearer, new_rsa_key, public_pem, start_gateway
from tests.e2e.harness import cli_json, cli_text
from tests.waiting import eventually
from tests.wav import tone_pcm, wav_bytes

Row = dict[str, Any]
LOW_SPACE = "low disk space: not taking new files until space returns"
SPACE_BACK = "disk space back above the floor: taking files again"


# -- audio ------------------------------------------------------------------


def tiny_wav(variant: int = 0, seconds: float = 0.2) -> bytes:
    """A short, valid mono 16-bit WAV of a sine tone; ``variant`` makes the bytes distinct."""
    return wav_bytes(tone_pcm(seconds, variant=variant + 1))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- running the watcher ----------------------------------------------------


class SpyIngestor(Ingestor):
    """The real Ingestor, remembering what the watcher asked of it."""

    def __init__(self, settings: Settings, db: Database, store: FilesystemStore) -> None:
        super().__init__(
            db,
            store,
            validation=settings.validation,
            max_attempts=settings.queue.max_attempts,
            metrics=Metrics(),
            policy=TranscriptionPolicy(settings.asr, settings.tenants),
        )
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
    # How often the watcher walked the inbox (scans) and re-checked its files (ticks).
    counts: dict[str, int] = field(default_factory=lambda: {"scans": 0, "ticks": 0})

    async def wait_for(self, check: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Re-check ``check`` until truthy; fail early if the watcher died, late at the deadline."""
        return await eventually(check, timeout=timeout, what=what, watch=[self.task])

    async def holds_until(
        self, check: Callable[[], object], until: Callable[[], bool], *, what: str
    ) -> None:
        """Keep ``check`` passing (an absence asserted) until the watcher has done ``until``."""

        def checked() -> bool:
            check()
            return until()

        await self.wait_for(checked, timeout=60, what=what)
        check()

    def scans_from_now(self, count: int) -> Callable[[], bool]:
        """True once the watcher has walked the inbox ``count`` more times."""
        start = self.counts["scans"]
        return lambda: self.counts["scans"] >= start + count

    def ticks_from_now(self, count: int) -> Callable[[], bool]:
        """True once the watcher has re-checked its files ``count`` more times."""
        start = self.counts["ticks"]
        return lambda: self.counts["ticks"] >= start + count


@asynccontextmanager
async def watcher(
    settings: Settings, ingestor_class: type[SpyIngestor] = SpyIngestor
) -> AsyncIterator[Running]:
    """Run a HotFolder (with its own DB pool) until the block ends; stop it cleanly."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # as the runtime does
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        store = FilesystemStore(settings.data_dir / "objects")
        ingestor = ingestor_class(settings, database, store)
        hotfolder = HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)
        counts = {"scans": 0, "ticks": 0}
        scan, recheck = hotfolder._scan, hotfolder._recheck

        def counted_scan(root: Path) -> Iterator[Path]:
            yield from scan(root)
            counts["scans"] += 1

        def counted_recheck(now: float) -> None:
            recheck(now)
            counts["ticks"] += 1

        hotfolder._scan = counted_scan  # type: ignore[method-assign]
        hotfolder._recheck = counted_recheck  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(hotfolder.run(stop))
        running = Running(settings, store, ingestor, hotfolder, task, stop, counts)
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
            # Many rescans (10 span 4 quiet periods) later, it has not been taken again.
            await w.holds_until(
                kept_and_recorded_once, w.scans_from_now(10), what="10 rescans of keep.wav"
            )
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
            await w.holds_until(
                kept_and_recorded_once, w.scans_from_now(10), what="10 more rescans of keep.wav"
            )
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

            # Past its quiet period (it would be taken now), then 20 more ticks: not taken.
            def quiet_long_enough() -> bool:
                due = w.hotfolder.tracker.next_due()
                return due is not None and due <= time.monotonic()

            await w.holds_until(held, quiet_long_enough, what="held.wav's quiet period")
            start_calls = calls["n"]
            await w.holds_until(held, w.ticks_from_now(20), what="20 ticks with held.wav due")
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

            # Once the watcher has settled all it saw, and 20 ticks more, the ignored names
            # are still untouched (they never entered its bookkeeping).
            def settled() -> bool:
                return not w.hotfolder.tracker.paths() and w.hotfolder.held.next_due() is None

            await w.holds_until(ignored_untouched, settled, what="the watcher to settle")
            await w.holds_until(ignored_untouched, w.ticks_from_now(20), what="20 more ticks")

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


# -- 7. FIFOs, sockets and other special files -------------------------------


def test_fifo_and_socket_named_wav_are_rejected_as_not_regular_files_never_opened(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    inbox.mkdir(parents=True)
    os.mkfifo(inbox / "early.wav")  # present at start-up: found by the scan
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def scenario() -> None:
        async with watcher(settings) as w:
            os.mkfifo(inbox / "pipe.wav")  # and one that arrives while watching
            listener.bind(str(inbox / "sock.wav"))
            for name in ("early.wav", "pipe.wav", "sock.wav"):
                await w.wait_for(partial_fn(row_named, db, name), timeout=30, what=name)
                await w.wait_for(
                    partial_fn((inbox / "rejected" / f"{name}.error.txt").exists),
                    timeout=30,
                    what=f"{name} moved to rejected/",
                )

    with listener, structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())

    for name, kind in (("early.wav", "FIFO"), ("pipe.wav", "FIFO"), ("sock.wav", "socket")):
        row = row_named(db, name)
        assert row is not None and row["state"] == "rejected"
        assert "not a regular file" in row["error"] and kind in row["error"], row["error"]
        assert row["sha256"] is None and row["storage_key"] is None
        assert not (inbox / name).exists() and not (inbox / name).is_symlink()
        note = (inbox / "rejected" / f"{name}.error.txt").read_text()
        assert "not a regular file" in note
    assert stat.S_ISFIFO((inbox / "rejected" / "pipe.wav").lstat().st_mode)
    assert stat.S_ISSOCK((inbox / "rejected" / "sock.wav").lstat().st_mode)
    # Nobody holds the FIFO open for reading: a writer that does not wait finds no reader.
    with pytest.raises(OSError) as no_reader:
        os.open(inbox / "rejected" / "pipe.wav", os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == errno.ENXIO
    rejected = [e for e in logs if e["event"] == "rejected"]
    assert sorted(e["file"] for e in rejected) == ["early.wav", "pipe.wav", "sock.wav"]
    assert {e["code"] for e in rejected} == {"not_regular"}
    assert len(rows(db)) == 3


# -- 8. a header that promises more than the file holds ---------------------


def without_sizes(wav: bytes) -> bytes:
    """The WAV as a streaming recorder writes it: no final RIFF and data sizes."""
    raw = bytearray(wav)
    raw[4:8] = b"\xff\xff\xff\xff"
    at = raw.index(b"data")
    raw[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    return bytes(raw)


def test_file_whose_header_promises_more_waits_then_is_rejected_after_incomplete_timeout(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    timeout_s = 3.0
    settings = make_settings(watch={"incomplete_timeout_s": timeout_s})
    inbox = settings.watch.inbox
    full = tiny_wav(41, seconds=2.0)

    async def scenario() -> float:
        async with watcher(settings) as w:
            (inbox / "cut.wav").write_bytes(full[: len(full) // 2])  # final sizes, half the data
            written = time.time()

            def waiting_logged() -> bool:
                return any(e["event"] == "waiting for the rest of the file" for e in logs)

            await w.wait_for(waiting_logged, timeout=30, what="the watcher to wait for the rest")
            assert rows(db) == [], "rejected while it could still be arriving"
            await w.wait_for(
                lambda: (inbox / "rejected" / "cut.wav.error.txt").exists(),
                timeout=30,
                what="cut.wav rejected after the incomplete timeout",
            )
            return written

    with structlog.testing.capture_logs() as logs:
        written = asyncio.run(scenario())

    (row,) = rows(db)
    assert row["original_name"] == "cut.wav" and row["state"] == "rejected"
    assert (
        "truncated" in row["error"] and f"no more data arrived for {timeout_s:g} s" in row["error"]
    )
    waited = row["created_at"].timestamp() - written
    assert waited >= timeout_s, f"rejected {waited:.2f} s after the last write"
    assert (inbox / "rejected" / "cut.wav").read_bytes() == full[: len(full) // 2]
    assert [e["event"] for e in logs].count("waiting for the rest of the file") == 1


# -- 9. a file still open for writing ---------------------------------------


def test_file_held_open_for_writing_waits_then_is_taken_after_incomplete_timeout(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    """A writer that never closes cannot keep a file out forever: it is taken, with a warning."""
    timeout_s = 3.0
    settings = make_settings(watch={"incomplete_timeout_s": timeout_s})
    inbox = settings.watch.inbox
    data = without_sizes(tiny_wav(42, seconds=1.0))

    async def scenario() -> float:
        async with watcher(settings) as w:
            with (inbox / "open.wav").open("wb") as writer:
                writer.write(data)
                writer.flush()
                written = time.time()

                def open_logged() -> bool:
                    return any(e["event"] == "waiting: file still open for writing" for e in logs)

                await w.wait_for(open_logged, timeout=30, what="the watcher to see the writer")
                assert rows(db) == []
                await w.wait_for(
                    lambda: row_named(db, "open.wav"), timeout=30, what="open.wav taken anyway"
                )
            return written

    with structlog.testing.capture_logs() as logs:
        written = asyncio.run(scenario())

    row = row_named(db, "open.wav")
    assert row is not None and row["state"] == "queued" and row["sha256"] == sha256(data)
    assert row["created_at"].timestamp() - written >= timeout_s
    events = [e["event"] for e in logs]
    assert events.count("waiting: file still open for writing") == 1
    taken = [e for e in logs if e["event"].startswith("taking a file still open for writing")]
    assert len(taken) == 1 and taken[0]["pid"] == os.getpid()


# -- 10. a file that changes after it was ingested --------------------------


class PausingIngestor(SpyIngestor):
    """Holds the first ingest of ``changing.wav`` after its row is recorded, until told.

    That is the window between ingest and tidying in which a writer may resume.
    """

    recorded: threading.Event
    resume: threading.Event

    def __init__(self, settings: Settings, db: Database, store: FilesystemStore) -> None:
        super().__init__(settings, db, store)
        self.recorded = threading.Event()
        self.resume = threading.Event()

    async def ingest(self, arrival: Arrival, *args: Any, **kwargs: Any) -> IngestResult:
        result = await super().ingest(arrival, *args, **kwargs)
        if arrival.original_name == "changing.wav" and not self.recorded.is_set():
            self.recorded.set()
            assert await asyncio.to_thread(self.resume.wait, 30), "the writer never resumed"
        return result


def add_transcript(db: psycopg.Connection[Row], audio_id: Any, text: str) -> None:
    """What a worker leaves behind for ``audio_id``: a transcript with one segment."""
    job = db.execute("SELECT id FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None
    transcript = db.execute(
        "INSERT INTO transcripts (audio_id, job_id, attempt, worker_id, language, text, model,"
        " device, compute_type, audio_duration_s, processing_s, real_time_factor, verdict)"
        " VALUES (%s, %s, 1, 'test', 'en', %s, 'tiny', 'cpu', 'int8', 1, 0.1, 0.1, 'ok')"
        " RETURNING id",
        (audio_id, job["id"], text),
    ).fetchone()
    assert transcript is not None
    db.execute(
        "INSERT INTO segments (transcript_id, idx, start_s, end_s, text, avg_logprob,"
        " no_speech_prob, compression_ratio) VALUES (%s, 0, 0, 1, %s, -0.2, 0.01, 1.2)",
        (transcript["id"], text),
    )
    db.execute("UPDATE audio SET state = 'transcribed' WHERE id = %s", (audio_id,))
    db.execute("UPDATE jobs SET state = 'done' WHERE id = %s", (job["id"],))


def test_file_changed_after_ingest_stays_and_its_new_version_supersedes_the_first(
    make_settings: Any, db: psycopg.Connection[Row], database_url: str, tmp_path: Path
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    full = without_sizes(tiny_wav(43, seconds=2.0))  # no length: any prefix looks complete
    first = full[: 44 + 32000]  # the header and the first second

    def writer(running: PausingIngestor) -> None:
        (inbox / "changing.wav").write_bytes(first)  # closed: no open writer to see
        assert running.recorded.wait(30), "the first half was never ingested"
        with (inbox / "changing.wav").open("ab") as f:
            f.write(full[len(first) :])
        running.resume.set()

    async def scenario() -> None:
        async with watcher(settings, PausingIngestor) as w:
            assert isinstance(w.ingestor, PausingIngestor)
            thread = threading.Thread(target=writer, args=(w.ingestor,))
            thread.start()
            try:
                await w.wait_for(
                    lambda: (inbox / "processed" / "changing.wav").exists(),
                    timeout=30,
                    what="the complete file to be taken and moved",
                )
            finally:
                w.ingestor.resume.set()
                await asyncio.to_thread(thread.join, 30)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())

    old, new = rows(db, "original_name = %s", ("changing.wav",))
    assert old["duration_s"] == pytest.approx(1.0, abs=0.01)
    assert old["sha256"] == sha256(first)
    assert new["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert new["sha256"] == sha256(full) and new["state"] == "queued"
    assert old["superseded_by"] == new["id"] and new["superseded_by"] is None
    assert not old["supersede_pending"] and not new["supersede_pending"]
    jobs = db.execute("SELECT audio_id FROM jobs ORDER BY id").fetchall()
    assert [j["audio_id"] for j in jobs] == [old["id"], new["id"]]  # the new one gets a job
    assert (inbox / "processed" / "changing.wav").read_bytes() == full
    assert not (inbox / "changing.wav").exists()
    events = [e["event"] for e in logs]
    assert events.count("file changed after ingest; its next version will supersede this one") == 1
    assert events.count("superseded") == 1

    # Both get transcribed; only the complete version is training data and searchable.
    add_transcript(db, old["id"], "halfway there")
    add_transcript(db, new["id"], "halfway there and all the way")
    eligible = db.execute(
        sql.SQL("SELECT a.id FROM audio a JOIN transcripts t ON t.audio_id = a.id WHERE {}").format(
            ELIGIBLE_AUDIO
        ),
        filter_params(DatasetSettings()),
    ).fetchall()
    assert [r["id"] for r in eligible] == [new["id"]]

    async def found(query: str) -> list[Row]:
        async with await psycopg.AsyncConnection.connect(
            database_url, row_factory=dict_row
        ) as conn:
            return await catalog.search(conn, tenant=None, query=query, limit=10)

    assert [r["audio_id"] for r in asyncio.run(found("halfway"))] == [new["id"]]

    # ls, show and the HTTP API say which audio replaced the first.
    env = {"AI2TEXT_DATABASE__URL": database_url, "AI2TEXT_DATA_DIR": str(tmp_path / "cli")}
    listed = {r["id"]: r for r in cli_json(env, "ls")}
    assert listed[str(old["id"])]["superseded_by"] == str(new["id"])
    assert listed[str(new["id"])]["superseded_by"] is None
    line = next(x for x in cli_text(env, "ls").splitlines() if x.startswith(str(old["id"])[:8]))
    assert f"(superseded by {str(new['id'])[:8]})" in line
    shown = subprocess.run(
        [sys.executable, "-m", "ai2text", "show", str(old["id"]), "--format", "txt"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"superseded by {new['id']}" in shown.stderr
    assert shown.stdout.strip() == "halfway there"  # the first transcript is kept

    key = new_rsa_key()
    pem = tmp_path / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    gateway = start_gateway(
        "gateway",
        tmp_path / "gw",
        database_url,
        Signer(key),
        {"AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem)},
    )
    try:
        with gateway.client() as http:
            token = gateway.signer.token("audio:read")
            body = http.get(f"/v1/audio/{old['id']}", headers=bearer(token)).json()
            assert body["superseded_by"] == str(new["id"])
            body = http.get(f"/v1/audio/{new['id']}", headers=bearer(token)).json()
            assert body["superseded_by"] is None
    finally:
        assert gateway.service.stop() == 0
