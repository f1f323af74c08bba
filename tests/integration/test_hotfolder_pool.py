"""The hot folder's pool of examining processes: failures in a child lose no file.

Real watcher, real child processes (spawned), real PostgreSQL. The children run
misbehaving examining functions from ``tests.faulty_examiners``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings, ValidationSettings
from pipeline.errors import RejectedInput, TransientError
from pipeline.ingest.examine import Examiner
from pipeline.ingest.hotfolder import HotFolder
from pipeline.ingest.tidy import fingerprint_of
from tests import faulty_examiners
from tests.integration.test_hotfolder import Running, SpyIngestor, row_named, rows, tiny_wav
from tests.waiting import eventually

Row = dict[str, Any]


@asynccontextmanager
async def pooled_watcher(
    settings: Settings, function: Callable[..., Any]
) -> AsyncIterator[Running]:
    """A HotFolder whose examining children run ``function``."""
    from pipeline.db.database import Database
    from pipeline.storage import FilesystemStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        store = FilesystemStore(settings.data_dir / "objects")
        ingestor = SpyIngestor(settings, database, store)
        hotfolder = HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)
        examiner = Examiner(2, ingestor.validation, function=function)
        hotfolder.examiner = hotfolder.taker.examiner = examiner
        stop = asyncio.Event()
        task = asyncio.create_task(hotfolder.run(stop))
        running = Running(settings, store, ingestor, hotfolder, task, stop)
        try:
            yield running
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await database.close()


def test_a_file_that_kills_the_examining_process_is_rejected_with_a_reason_and_others_pass(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    inbox.mkdir(parents=True)

    async def scenario() -> None:
        async with pooled_watcher(settings, faulty_examiners.crashing) as w:
            (inbox / "poison.wav").write_bytes(tiny_wav(1))
            (inbox / "crash-once.wav").write_bytes(tiny_wav(2))
            (inbox / ".crash-once.wav.crash").touch()
            for i in range(5):
                (inbox / f"good-{i}.wav").write_bytes(tiny_wav(10 + i))
            await w.wait_for(lambda: len(rows(db)) == 7, timeout=60, what="a row for every file")
            await w.wait_for(
                lambda: (settings.watch.rejected_path / "poison.wav").exists(),
                timeout=30,
                what="poison.wav moved to rejected/",
            )

    asyncio.run(scenario())
    poison = row_named(db, "poison.wav")
    assert poison is not None and poison["state"] == "rejected"
    assert "alone made the audio decoder's process die 2 times" in poison["error"]
    # Crashed once (taking down the files examined beside it too): taken again, accepted;
    # so are the files that happened to be examined beside a crash.
    once = row_named(db, "crash-once.wav")
    assert once is not None and once["state"] == "queued"
    assert {r["original_name"] for r in rows(db, "state = 'queued'")} == {
        "crash-once.wav",
        *(f"good-{i}.wav" for i in range(5)),
    }
    assert len(rows(db)) == 7  # one row each: nothing recorded twice


def test_a_bug_in_the_examining_process_leaves_the_file_in_place_to_retry(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    inbox.mkdir(parents=True)

    async def scenario() -> None:
        async with pooled_watcher(settings, faulty_examiners.raising) as w:
            (inbox / "buggy.wav").write_bytes(tiny_wav(1))
            (inbox / "fine.wav").write_bytes(tiny_wav(2))
            await w.wait_for(lambda: row_named(db, "fine.wav"), timeout=30, what="fine.wav row")
            # Tried again after each quiet period, never recorded, never moved.
            await w.wait_for(
                lambda: w.ingestor.ingested.count("buggy.wav") >= 2,
                timeout=30,
                what="buggy.wav tried again",
            )

    asyncio.run(scenario())
    assert row_named(db, "buggy.wav") is None
    assert (inbox / "buggy.wav").exists()


def test_stopping_does_not_wait_for_a_stuck_examining_process(
    make_settings: Any, db: psycopg.Connection[Row]
) -> None:
    settings = make_settings()
    inbox = settings.watch.inbox
    inbox.mkdir(parents=True)
    children: list[int] = []

    async def scenario() -> float:
        async with pooled_watcher(settings, faulty_examiners.hanging) as w:
            (inbox / "hang.wav").write_bytes(tiny_wav(1))
            (inbox / "fine.wav").write_bytes(tiny_wav(2))
            await w.wait_for(lambda: row_named(db, "fine.wav"), timeout=30, what="fine.wav row")
            await w.wait_for(
                lambda: "hang.wav" in w.ingestor.ingested, timeout=30, what="hang.wav taken"
            )
            assert w.hotfolder.examiner is not None
            pool = w.hotfolder.examiner._pool
            assert pool is not None
            children.extend(p.pid for p in pool._processes.values() if p.pid is not None)
            t0 = time.monotonic()
        return time.monotonic() - t0

    stopped_in = asyncio.run(scenario())
    assert stopped_in < 20, f"stopping took {stopped_in:.1f}s"
    assert children
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"child {pid} left running"
    assert row_named(db, "hang.wav") is None  # not recorded: taken again at the next start
    assert (inbox / "hang.wav").exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_examiner_refusals_keep_their_codes_across_the_process_boundary(tmp_path: Path) -> None:
    (tmp_path / "short.wav").write_bytes(tiny_wav(1, seconds=0.01))
    (tmp_path / "noise.wav").write_bytes(b"not audio at all" * 100)
    (tmp_path / "ok.wav").write_bytes(tiny_wav(2))

    async def scenario() -> None:
        examiner = Examiner(1, ValidationSettings(min_duration_s=0.05))
        try:
            ok = tmp_path / "ok.wav"
            examined = await examiner.examine(str(ok), fingerprint_of(ok.stat()), "ok.wav")
            assert examined.info.codec == "pcm_s16le" and len(examined.sha256) == 64
            for name, code in (("short.wav", "too_short"), ("noise.wav", "not_audio")):
                path = tmp_path / name
                with pytest.raises(RejectedInput) as refused:
                    await examiner.examine(str(path), fingerprint_of(path.stat()), name)
                assert refused.value.code == code, refused.value.reason
            # Changed since judged quiet: a transient failure, not a rejection.
            stale = fingerprint_of(ok.stat())
            ok.write_bytes(tiny_wav(3, seconds=0.3))
            with pytest.raises(TransientError):
                await examiner.examine(str(ok), stale, "ok.wav")
        finally:
            examiner.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


_KILLED_WATCHER = """
import asyncio, os, signal, sys
from pathlib import Path
from pipeline.config import ValidationSettings
from pipeline.ingest.examine import Examiner
from pipeline.ingest.tidy import fingerprint_of

async def main() -> None:
    path = Path(sys.argv[1])
    examiner = Examiner(2, ValidationSettings())
    await examiner.examine(str(path), fingerprint_of(path.stat()), path.name)
    children = [p.pid for p in examiner._pool._processes.values()]  # noqa: SLF001
    print(" ".join(map(str, children)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the watcher crashes: nothing is closed

asyncio.run(main())
"""


def test_examining_processes_end_when_the_watcher_is_killed(tmp_path: Path) -> None:
    """A crashed watcher must not leave its children waiting for work forever."""
    wav = tmp_path / "ok.wav"
    wav.write_bytes(tiny_wav(1))
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WATCHER, str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    children = [int(pid) for pid in done.stdout.split()]
    assert children, done.stderr

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in children)

    asyncio.run(eventually(gone, timeout=30, what="the orphaned examining processes to end"))
