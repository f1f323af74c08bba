"""Taking one settled hot-folder file: open it safely, ingest it, check it again, tidy up.

The file is opened without following symlinks and compared on the open handle
(``fstat``) with what was judged quiet, so a file swapped between the check and
the read is not taken. After ingest its path is compared again (size, mtime,
inode) before it is moved: a file that changed meanwhile stays in place, its row
is marked to be superseded, and the scheduler takes the new version once quiet.

What happens next is returned as an ``Outcome`` for the scheduler (``HotFolder``)
to act on; this module never decides when to look again.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import structlog

from pipeline.config import WatchSettings
from pipeline.errors import TransientError
from pipeline.ingest.core import Arrival, Examined, Ingestor, IngestResult, StillArriving
from pipeline.ingest.examine import Examiner
from pipeline.ingest.refusals import describe_refusal
from pipeline.ingest.stability import Fingerprint
from pipeline.ingest.tidy import fingerprint_of, tidy_after_ingest

log = structlog.get_logger(__name__)

_UNREADABLE = (errno.EACCES, errno.EPERM)


@dataclass(frozen=True, slots=True)
class Taking:
    """A file handed to a take loop: what it looked like when judged ready."""

    fingerprint: Fingerprint | None  # None: a link or special file, refused unopened
    quiet_since: float  # monotonic
    final: bool = False  # quiet for ``incomplete_timeout_s``: take it as it is
    attempts: int = 0  # earlier tries of this version that ended held as unreadable


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["done", "changed", "incomplete", "unreadable"]
    fingerprint: Fingerprint | None = None  # changed/held: what it looks like now
    ctime_ns: int = 0
    kept: Fingerprint | None = None  # done, left in place (``after_ingest = keep``)


DONE = Outcome("done")


class FileTaker:
    def __init__(
        self, watch: WatchSettings, ingestor: Ingestor, examiner: Examiner | None = None
    ) -> None:
        """``examiner``: probe and hash in its processes (None: in this one, in a thread)."""
        self.watch = watch
        self.ingestor = ingestor
        self.examiner = examiner

    async def take(self, path: Path, inbox: Path, taking: Taking) -> Outcome:
        rel = path.relative_to(inbox)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return DONE
        if not stat.S_ISREG(st.st_mode):
            return await self._refuse(path, rel, inbox)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return DONE
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return await self._refuse(path, rel, inbox)
            if exc.errno in _UNREADABLE:
                return await self._unreadable(path, rel, st, taking, exc)
            raise TransientError(f"cannot open {rel}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as source:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device since lstat
                return await self._refuse(path, rel, inbox)
            fp = fingerprint_of(st)
            if taking.fingerprint != fp:
                return Outcome("changed", fp)  # changed or swapped since judged quiet
            arrival = self._arrival(rel, path, fp)
            if not path.parent.resolve().is_relative_to(inbox):
                result = await self.ingestor.reject(
                    arrival, "path resolves outside the watched folder", code="outside_inbox"
                )
            else:
                try:
                    result = await self._ingest(arrival, path, source, fd, fp)
                except StillArriving as waiting:
                    if not taking.final:
                        log.info(
                            "waiting for the rest of the file",
                            file=str(rel),
                            detail=waiting.reason,
                            reject_after_s=self.watch.incomplete_timeout_s,
                        )
                        return Outcome("incomplete", fp, st.st_ctime_ns)
                    result = await self.ingestor.reject(
                        arrival,
                        f"{waiting.reason}; no more data arrived for"
                        f" {self.watch.incomplete_timeout_s:g} s",
                        size=fp.size,
                        code=waiting.code,
                    )
        return await self._finish(path, rel, result, fp)

    async def _ingest(
        self, arrival: Arrival, path: Path, source: BinaryIO, fd: int, fp: Fingerprint
    ) -> IngestResult:
        found = await self.ingestor.find_existing(arrival)
        if found is not None:
            return found
        examine: Callable[[], Awaitable[Examined]] | None = None
        if self.examiner is not None:
            examiner = self.examiner

            async def in_pool() -> Examined:
                return await examiner.examine(str(path), fp, arrival.original_name, source=source)

            examine = in_pool

        return await self.ingestor.ingest(
            arrival,
            source,
            fp.size,
            unchanged=lambda: fingerprint_of(os.fstat(fd)) == fp,
            choices=self.watch,
            wait_if_incomplete=True,
            examine=examine,
            looked_up=True,
        )

    def _arrival(self, rel: Path, path: Path, fp: Fingerprint, prefix: str = "") -> Arrival:
        return Arrival(
            source="folder",
            original_name=str(rel),
            source_uri=path.as_uri(),
            source_version=f"{prefix}{fp.size}:{fp.mtime_ns}:{fp.inode}",
            tenant=self.watch.tenant,
        )

    async def _refuse(self, path: Path, rel: Path, inbox: Path) -> Outcome:
        """Record a symlink or special file as rejected, without opening it."""
        try:
            arrival, reason, code = describe_refusal(path, rel, inbox, self.watch.tenant)
        except FileNotFoundError:
            return DONE
        result = await self.ingestor.find_existing(arrival) or await self.ingestor.reject(
            arrival, reason, code=code
        )
        return await self._finish(path, rel, result, None)

    async def _unreadable(
        self, path: Path, rel: Path, st: os.stat_result, taking: Taking, exc: OSError
    ) -> Outcome:
        """Say so once (a log line and a row ``ls`` shows); the scheduler backs off."""
        fp = fingerprint_of(st)
        if taking.attempts == 0:  # later failures are silent: the row already says it
            await self.ingestor.reject(
                self._arrival(rel, path, fp, prefix="unreadable:"),
                f"cannot read the file ({exc.strerror}); it stays in the inbox and is"
                " tried again, less and less often, until it can be read",
                size=fp.size,
                code="unreadable",
                supersede_pending=True,
            )
        return Outcome("unreadable", fp, st.st_ctime_ns)

    async def _finish(
        self, path: Path, rel: Path, result: IngestResult, fp: Fingerprint | None
    ) -> Outcome:
        if fp is not None:
            try:
                now = fingerprint_of(os.lstat(path))
            except FileNotFoundError:
                return DONE
            if now != fp:
                # A writer carried on after the bytes were read: keep the file where it is
                # and take the new version, which supersedes this one, once it is quiet.
                await self.ingestor.mark_supersede_pending(result.audio_id)
                log.warning(
                    "file changed after ingest; its next version will supersede this one",
                    file=str(rel),
                    audio_id=str(result.audio_id),
                )
                return Outcome("changed", now)
        try:
            kept = await asyncio.to_thread(tidy_after_ingest, path, rel, result, self.watch)
        except OSError as exc:
            log.error("could not tidy file after ingest", file=str(path), error=str(exc))
            return DONE
        return Outcome("done", kept=kept)
