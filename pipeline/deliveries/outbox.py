"""Transcript files of folder drops, written where the user dropped the audio (target 'outbox').

Where (``watch.outbox``): None, the default, is ``<inbox>/transcripts/``; a directory
of its own; "beside", next to the processed audio in ``processed/``; "off", nowhere.
The first three mirror the inbox's sub-folders: ``<inbox>/calls/monday/a.mp3`` gives
``calls/monday/a.txt`` (and .srt, .vtt, .json: ``watch.outbox_formats``) under that
directory. "beside" always means the processed folder, also with ``after_ingest``
``delete`` (the folder then holds only transcripts) or ``keep`` (files written into
the inbox itself would be taken as new drops).

Each file is written to a hidden temp file in its own directory, flushed to disk and
renamed over the final name, so a program watching the outbox sees a whole file or
none. A newer version of the same source (a file dropped again under the same name,
or one superseded after a writer carried on) replaces the files; an older version
delivered late never overwrites them (``files.current_version``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path, PurePosixPath

import structlog

from pipeline.config import SubtitleSettings, WatchSettings
from pipeline.db.database import Database
from pipeline.deliveries.base import DeliveryFailed, Event
from pipeline.deliveries.files import DB_SLOTS, current_version, render_files
from pipeline.errors import TransientError

log = structlog.get_logger(__name__)

TARGET = "outbox"


def outbox_root(watch: WatchSettings) -> Path | None:
    """The directory transcript files go under (mirroring the inbox), or None when off."""
    if watch.outbox == "off":
        return None
    if watch.outbox == "beside":
        return watch.processed_path
    if watch.outbox is None:
        return watch.inbox / "transcripts"
    return watch.outbox


def file_stem(original_name: str) -> PurePosixPath | None:
    """The audio's path in the inbox without its extension; None if it is not relative.

    ``calls/a.b.mp3`` → ``calls/a.b``. A folder drop's ``original_name`` is its path
    relative to the inbox; anything else (absolute, ``..``) is never written outside.
    """
    rel = PurePosixPath(original_name)
    if not rel.parts or rel.is_absolute() or any(p in ("", ".", "..") for p in rel.parts):
        return None
    return rel.with_suffix("") if rel.suffix else rel


def write_atomically(dest: Path, data: bytes) -> None:
    """Replace ``dest`` with ``data`` whole: temp file beside it, fsync, rename, fsync dir."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # noqa: S103 - as any file a user gets; mkstemp made it 0600
        os.replace(temp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OutboxHandler:
    """Writes a transcribed folder drop's files into the outbox (``DeliveryHandler``)."""

    # The runner's bound on one delivery: local files, though maybe on a slow share.
    timeout_s = 60.0

    def __init__(self, watch: WatchSettings, subtitles: SubtitleSettings, db: Database) -> None:
        self.watch = watch
        self.subtitles = subtitles
        self.db = db
        # Each delivery holds a pooled connection (and its source's lock) while it
        # writes: a few at a time, so a burst never takes the pool from other roles.
        self._slots = asyncio.Semaphore(DB_SLOTS)

    async def deliver(self, event: Event, target: str) -> None:
        root = outbox_root(self.watch)
        if root is None or not self.watch.outbox_formats:
            return
        try:
            await self._deliver(event, target, root)
        except (OSError, TransientError) as exc:
            raise DeliveryFailed(f"cannot write transcript files under {root}: {exc}") from exc

    async def _deliver(self, event: Event, target: str, root: Path) -> None:
        async with self._slots, current_version(self.db, event.audio_id, target=target) as current:
            if current is None:
                log.info(
                    "outbox: not the latest version, nothing written", audio_id=str(event.audio_id)
                )
                return
            audio = current.audio
            stem = file_stem(audio.original_name)
            if audio.source != "folder" or stem is None:
                log.warning("outbox: not a drop in an inbox", name=audio.original_name)
                return
            if audio.source_uri != (self.watch.inbox.resolve() / audio.original_name).as_uri():
                # Several watchers share the database: the one watching that inbox writes.
                raise DeliveryFailed(
                    f"{audio.source_uri} was dropped into another inbox than {self.watch.inbox}"
                )
            files = render_files(current.transcript, self.watch.outbox_formats, self.subtitles)
            written = [root / f"{stem}.{fmt}" for fmt in files]
            for path, data in zip(written, files.values(), strict=True):
                await asyncio.to_thread(write_atomically, path, data)
        log.info(
            "transcript files written",
            audio_id=str(event.audio_id),
            files=[str(p) for p in written],
        )
