"""The hot folder: watch, wait for files to settle, ingest, then tidy up.

Events come from watchfiles (``awatch``, recursive); a scan at start-up and a
periodic rescan catch whatever events missed. Files are opened without
following symlinks and compared on the open handle (``fstat``) with what was
judged quiet, so a file swapped between the check and the read is not taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import structlog
from watchfiles import Change, awatch

from pipeline.config import Settings
from pipeline.errors import TransientError
from pipeline.ingest.core import Arrival, Ingestor, IngestResult
from pipeline.ingest.stability import Fingerprint, StabilityTracker
from pipeline.ingest.tidy import fingerprint_of, tidy_after_ingest
from pipeline.metrics import Metrics

log = structlog.get_logger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload")


def is_ignored_name(name: str) -> bool:
    """Hidden files and the names browsers and copy tools use while writing."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


class HotFolder:
    def __init__(
        self, settings: Settings, ingestor: Ingestor, *, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else ingestor.metrics
        self.watch = settings.watch
        self.inbox = settings.watch.inbox
        self.ingestor = ingestor
        self.tracker = StabilityTracker(settings.watch.quiet_period_s)
        self._candidates: set[Path] = set()
        # Files handed to the take loops, with the fingerprint they were judged quiet at.
        # They leave the tracker when dispatched, so the tick never re-examines them.
        self._in_flight: dict[Path, Fingerprint | None] = {}
        self._kept: dict[Path, Fingerprint] = {}
        self._ready: asyncio.Queue[Path] = asyncio.Queue()
        self._excluded: tuple[Path, ...] = ()
        self._low_space = False

    # -- lifecycle ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._prepare_dirs()
        log.info("watching", inbox=str(self.inbox), quiet_period_s=self.watch.quiet_period_s)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_events(stop))
            tg.create_task(self._tick(stop))
            for _ in range(self.watch.ingest_concurrency):
                tg.create_task(self._take_loop(stop))

    def _prepare_dirs(self) -> None:
        for path in (self.inbox, self.watch.processed_path, self.watch.rejected_path):
            path.mkdir(parents=True, exist_ok=True)
        self.inbox = self.inbox.resolve()
        self._excluded = (
            self.watch.processed_path.resolve(),
            self.watch.rejected_path.resolve(),
        )

    # -- discovering files -------------------------------------------------

    async def _watch_events(self, stop: asyncio.Event) -> None:
        async for changes in awatch(
            self.inbox,
            stop_event=stop,
            watch_filter=None,
            recursive=True,
            debounce=200,
            step=50,
            yield_on_timeout=False,
            rust_timeout=1000,
        ):
            for change, raw in changes:
                path = Path(raw)
                if change == Change.deleted:
                    self.tracker.discard(path)
                    self._candidates.discard(path)
                else:
                    self._note(path)

    def _note(self, path: Path) -> None:
        if self._is_excluded(path):
            return
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._candidates.update(self._scan(path))
        elif stat.S_ISREG(st.st_mode) and path not in self._in_flight:
            # Start the quiet period from this event, not from the next tick.
            fp = fingerprint_of(st)
            if self._kept.get(path) != fp:
                self.tracker.observe(path, fp, time.monotonic())
        else:
            self._candidates.add(path)

    def _is_excluded(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return True
        if any(is_ignored_name(part) for part in rel.parts):
            return True
        return any(path == ex or path.is_relative_to(ex) for ex in self._excluded)

    def _scan(self, root: Path) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            keep = []
            for d in dirnames:
                sub = base / d
                if self._is_excluded(sub):
                    continue
                if sub.is_symlink():
                    yield sub  # refused when taken, never followed
                else:
                    keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                path = base / name
                if not self._is_excluded(path):
                    yield path

    # -- deciding what is ready -------------------------------------------

    async def _tick(self, stop: asyncio.Event) -> None:
        next_scan = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                self._candidates.update(self._scan(self.inbox))
                next_scan = now + self.watch.rescan_interval_s
            self._recheck(now)
            due = None
            if self._space_ok():
                for path in self.tracker.ready(now):
                    self._dispatch(path)
                due = self.tracker.next_due()
            # Wake at the next tick, or exactly when the next file's quiet period ends.
            wait_s = self.watch.recheck_interval_s
            if due is not None:
                wait_s = min(wait_s, max(0.005, due - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    def _recheck(self, now: float) -> None:
        paths = self._candidates.union(self.tracker.paths())
        self._candidates.clear()
        for path in paths:
            if path in self._in_flight:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                self.tracker.discard(path)
                self._kept.pop(path, None)
                continue
            if stat.S_ISLNK(st.st_mode):
                self._dispatch(path)  # refused at once, nothing to wait for
            elif stat.S_ISREG(st.st_mode):
                fp = fingerprint_of(st)
                if self._kept.get(path) != fp:
                    self.tracker.observe(path, fp, now)

    def _dispatch(self, path: Path) -> None:
        if path not in self._in_flight:
            self._in_flight[path] = self.tracker.fingerprint(path)
            self.tracker.discard(path)
            self._ready.put_nowait(path)

    def _retry_later(self, path: Path) -> None:
        """Track ``path`` again from now: it is taken after another quiet period."""
        fp = self._in_flight.get(path)
        if fp is None:
            self._candidates.add(path)
        else:
            self.tracker.observe(path, fp, time.monotonic())

    def _space_ok(self) -> bool:
        free = shutil.disk_usage(self.settings.data_dir).free
        low = free < self.watch.min_free_bytes
        if low != self._low_space:
            self._low_space = low
            if low:
                log.warning(
                    "low disk space: not taking new files until space returns",
                    free_bytes=free,
                    floor_bytes=self.watch.min_free_bytes,
                )
            else:
                log.info("disk space back above the floor: taking files again", free_bytes=free)
        return not low

    # -- taking a file -------------------------------------------------------

    async def _take_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            get = asyncio.ensure_future(self._ready.get())
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({get, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                stopped.cancel()
                return
            stopped.cancel()
            path = get.result()
            try:
                await self._take(path)
            except TransientError as exc:
                log.warning("will retry file", file=str(path), error=str(exc))
                self._retry_later(path)
            except psycopg.OperationalError as exc:
                self.metrics.db_errors.labels("watcher").inc()
                log.warning("database unavailable; will retry file", file=str(path), error=str(exc))
                self._retry_later(path)
            except Exception:  # noqa: BLE001 - one bad file must not stop the watcher
                log.exception("failed to take file; left in place", file=str(path))
                self._retry_later(path)
            finally:
                self._in_flight.pop(path, None)

    async def _take(self, path: Path) -> None:
        rel = path.relative_to(self.inbox)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            self.tracker.discard(path)
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                await self._refuse_symlink(path, rel)
                return
            raise TransientError(f"cannot open {rel}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as source:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.tracker.discard(path)
                return
            fp = fingerprint_of(st)
            if self._in_flight.get(path) != fp:
                # It changed (or was swapped) since it was judged quiet: wait again.
                self.tracker.observe(path, fp, time.monotonic())
                return
            if not path.parent.resolve().is_relative_to(self.inbox):
                await self._finish(
                    path,
                    rel,
                    await self.ingestor.reject(
                        self._arrival(rel, path, fp),
                        "path resolves outside the watched folder",
                        code="outside_inbox",
                    ),
                )
                return
            arrival = self._arrival(rel, path, fp)
            result = await self.ingestor.find_existing(arrival)
            if result is None:
                result = await self.ingestor.ingest(
                    arrival, source, fp.size, unchanged=lambda: fingerprint_of(os.fstat(fd)) == fp
                )
        self.tracker.discard(path)
        await self._finish(path, rel, result)

    def _arrival(self, rel: Path, path: Path, fp: Fingerprint) -> Arrival:
        return Arrival(
            source="folder",
            original_name=str(rel),
            source_uri=path.as_uri(),
            source_version=f"{fp.size}:{fp.mtime_ns}:{fp.inode}",
            tenant=self.watch.tenant,
        )

    async def _refuse_symlink(self, path: Path, rel: Path) -> None:
        try:
            arrival, reason = self._describe_symlink(path, rel)
        except FileNotFoundError:
            return
        result = await self.ingestor.find_existing(arrival) or await self.ingestor.reject(
            arrival, reason, code="symlink"
        )
        await self._finish(path, rel, result)

    def _describe_symlink(self, path: Path, rel: Path) -> tuple[Arrival, str]:
        target = os.readlink(path)
        inside = path.resolve().is_relative_to(self.inbox)
        where = "a file inside the watched folder" if inside else "outside the watched folder"
        st = path.lstat()
        arrival = Arrival(
            source="folder",
            original_name=str(rel),
            source_uri=path.as_uri(),
            source_version=f"symlink:{st.st_ino}:{st.st_mtime_ns}",
            tenant=self.watch.tenant,
        )
        reason = (
            f"symbolic link to {where} ({target}): links are not followed;"
            " put the file itself in the inbox"
        )
        return arrival, reason

    # -- after ingest --------------------------------------------------------

    async def _finish(self, path: Path, rel: Path, result: IngestResult) -> None:
        try:
            kept = await asyncio.to_thread(tidy_after_ingest, path, rel, result, self.watch)
        except OSError as exc:
            log.error("could not tidy file after ingest", file=str(path), error=str(exc))
            return
        if kept is not None:
            self._kept[path] = kept
