"""The hot folder: watch, wait for files to settle, hand them to the take loops.

Events come from watchfiles (``awatch``, recursive); a scan at start-up and a
periodic rescan catch whatever events missed. A file is ready once quiet for
``quiet_period_s`` and no process holds it open for writing; a quiet file whose
header promises more than it holds waits up to ``incomplete_timeout_s`` for the
rest; an unreadable one is retried with a growing delay. Links and special files
(FIFOs, sockets, devices) are refused at once, never opened. Taking one file is
``take.FileTaker``'s job; this module decides when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import structlog
from watchfiles import Change, awatch

from pipeline.config import WatchSettings
from pipeline.deliveries.outbox import outbox_root
from pipeline.errors import ConfigError, DatabaseUnavailable, TransientError
from pipeline.ingest.core import Ingestor
from pipeline.ingest.examine import Examiner
from pipeline.ingest.open_writers import open_for_writing
from pipeline.ingest.stability import Fingerprint, Held, HeldFiles, StabilityTracker, backoff_s
from pipeline.ingest.take import FileTaker, Outcome, Taking
from pipeline.ingest.tidy import fingerprint_of
from pipeline.metrics import Metrics

log = structlog.get_logger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload")
# An unreadable file is tried again after a quiet period, then ever less often, up to this.
UNREADABLE_RETRY_MAX_S = 300.0


def is_ignored_name(name: str) -> bool:
    """Hidden files and the names browsers and copy tools use while writing."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


class HotFolder:
    def __init__(
        self,
        watch: WatchSettings,
        ingestor: Ingestor,
        *,
        data_dir: Path,
        metrics: Metrics | None = None,
    ) -> None:
        """``data_dir``'s free space gates taking files; ``metrics`` defaults to the ingestor's."""
        self.data_dir = data_dir
        self.metrics = metrics if metrics is not None else ingestor.metrics
        self.watch = watch
        self.inbox = watch.inbox
        self.ingestor = ingestor
        self.tracker = StabilityTracker(watch.quiet_period_s)
        self.held = HeldFiles()
        workers = watch.ingest_processes
        if workers is None:
            workers = len(os.sched_getaffinity(0))
        self.examiner = Examiner(workers, ingestor.validation) if workers > 0 else None
        self.taker = FileTaker(watch, ingestor, self.examiner)
        self._candidates: set[Path] = set()
        # Files handed to the take loops, with what they looked like when judged ready.
        # They leave the tracker when dispatched, so the tick never re-examines them.
        self._in_flight: dict[Path, Taking] = {}
        self._kept: dict[Path, Fingerprint] = {}
        self._open_noted: set[Path] = set()  # said once that a writer holds it open
        self._ready: asyncio.Queue[Path] = asyncio.Queue()
        self._excluded: tuple[Path, ...] = ()
        self._low_space = False

    # -- lifecycle ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._prepare_dirs()
        log.info(
            "watching",
            inbox=str(self.inbox),
            quiet_period_s=self.watch.quiet_period_s,
            incomplete_timeout_s=self.watch.incomplete_timeout_s,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_events(stop))
                tg.create_task(self._tick(stop))
                for _ in range(self.watch.ingest_concurrency):
                    tg.create_task(self._take_loop(stop))
                if self.examiner is not None:
                    tg.create_task(self._close_examiner_on(stop))
        finally:
            if self.examiner is not None:
                await asyncio.to_thread(self.examiner.close)

    async def _close_examiner_on(self, stop: asyncio.Event) -> None:
        """At stop, end the examining processes, so no take loop waits on a stuck child."""
        await stop.wait()
        assert self.examiner is not None
        await asyncio.to_thread(self.examiner.close)

    def _prepare_dirs(self) -> None:
        for path in (self.inbox, self.watch.processed_path, self.watch.rejected_path):
            path.mkdir(parents=True, exist_ok=True)
        self.inbox = self.inbox.resolve()
        excluded = [self.watch.processed_path.resolve(), self.watch.rejected_path.resolve()]
        outbox = outbox_root(self.watch)
        if outbox is not None:
            # Transcript files are written there: never drops to take (nor to reject).
            outbox = outbox.resolve()
            if outbox == self.inbox:
                raise ConfigError(
                    f"watch.outbox is the inbox ({outbox}): each transcript written there"
                    " would be taken as a new drop; choose another directory or 'beside'"
                )
            excluded.append(outbox)
        self._excluded = tuple(excluded)

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
                    self._forget(path)
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
            self._observe(path, st, time.monotonic())
        else:
            self._candidates.add(path)

    def _observe(self, path: Path, st: os.stat_result, now: float) -> None:
        fp = fingerprint_of(st)
        if self._kept.get(path) == fp or self.held.observe(path, fp, st.st_ctime_ns, now):
            return
        self.tracker.observe(path, fp, now)

    def _forget(self, path: Path) -> None:
        self.tracker.discard(path)
        self.held.discard(path)
        self._candidates.discard(path)
        self._kept.pop(path, None)
        self._open_noted.discard(path)

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
                await self._dispatch_ready(now)
                due = min(
                    (t for t in (self.tracker.next_due(), self.held.next_due()) if t is not None),
                    default=None,
                )
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
                self._forget(path)
                continue
            if stat.S_ISREG(st.st_mode):
                self._observe(path, st, now)
            elif not stat.S_ISDIR(st.st_mode):
                # A link, FIFO, socket or device: refused at once, nothing to wait for.
                self._dispatch(path, Taking(None, now))

    async def _dispatch_ready(self, now: float) -> None:
        """Hand quiet files to the take loops, unless a process still has them open to write."""
        ready = {
            path: taking
            for path in dict.fromkeys(self.tracker.ready(now) + self.held.due(now))
            if (taking := self._taking(path, now)) is not None
        }
        if not ready:
            return
        writers = await asyncio.to_thread(open_for_writing, list(ready))
        for path, taking in ready.items():
            if self._taking(path, now) != taking:
                continue  # changed while /proc was read: it waits for a new quiet period
            pid = writers.get(path)
            if pid is not None and not taking.final:
                self._hold_open(path, taking, pid, now)
                continue
            if pid is not None:
                log.warning(
                    "taking a file still open for writing: it has not changed for"
                    " watch.incomplete_timeout_s",
                    file=str(path),
                    pid=pid,
                )
            self._dispatch(path, taking)

    def _taking(self, path: Path, now: float) -> Taking | None:
        held = self.held.get(path)
        if held is not None:
            fp, since, attempts = held.fingerprint, held.quiet_since, held.attempts
            if held.reason != "unreadable":
                attempts = 0
        else:
            tracked, quiet_since = self.tracker.fingerprint(path), self.tracker.quiet_since(path)
            if tracked is None or quiet_since is None:
                return None
            fp, since, attempts = tracked, quiet_since, 0
        final = now - since >= self.watch.incomplete_timeout_s
        return Taking(fp, since, final=final, attempts=attempts)

    def _hold_open(self, path: Path, taking: Taking, pid: int, now: float) -> None:
        assert taking.fingerprint is not None
        if path not in self._open_noted:
            self._open_noted.add(path)
            log.info("waiting: file still open for writing", file=str(path), pid=pid)
        self.tracker.discard(path)
        due = min(
            now + max(self.watch.quiet_period_s, 1.0),
            taking.quiet_since + self.watch.incomplete_timeout_s,
        )
        ctime = self._ctime_of(path)
        self.held.hold(path, Held("open", taking.fingerprint, ctime, taking.quiet_since, due))
        self._candidates.add(path)  # compare once more: it may have grown meanwhile

    def _dispatch(self, path: Path, taking: Taking | None = None) -> None:
        """Hand ``path`` to a take loop (``taking``: as tracked or held now, if not given)."""
        if path not in self._in_flight:
            now = time.monotonic()
            self._in_flight[path] = taking or self._taking(path, now) or Taking(None, now)
            self.tracker.discard(path)
            self.held.discard(path)
            self._ready.put_nowait(path)

    def _retry_later(self, path: Path) -> None:
        """Track ``path`` again from now: it is taken after another quiet period."""
        taking = self._in_flight.get(path)
        if taking is None or taking.fingerprint is None:
            self._candidates.add(path)
        else:
            self.tracker.observe(path, taking.fingerprint, time.monotonic())

    def _space_ok(self) -> bool:
        free = shutil.disk_usage(self.data_dir).free
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
                outcome = await self.taker.take(path, self.inbox, self._in_flight[path])
                self._after(path, self._in_flight[path], outcome)
            except DatabaseUnavailable as exc:
                self.metrics.db_errors.labels("watcher").inc()
                log.warning("database unavailable; will retry file", file=str(path), error=str(exc))
                self._retry_later(path)
            except TransientError as exc:
                log.warning("will retry file", file=str(path), error=str(exc))
                self._retry_later(path)
            except Exception:  # noqa: BLE001 - one bad file must not stop the watcher
                log.exception("failed to take file; left in place", file=str(path))
                self._retry_later(path)
            finally:
                self._in_flight.pop(path, None)

    def _after(self, path: Path, taking: Taking, outcome: Outcome) -> None:
        """Act on what taking ``path`` came to: done, changed, or held for later."""
        now = time.monotonic()
        if outcome.kind == "done":
            self._open_noted.discard(path)
            if outcome.kept is not None:
                self._kept[path] = outcome.kept
            return
        assert outcome.fingerprint is not None
        if outcome.kind == "changed":
            self.tracker.observe(path, outcome.fingerprint, now)
            return
        if outcome.kind == "incomplete":
            due = taking.quiet_since + self.watch.incomplete_timeout_s
            held = Held(
                "incomplete", outcome.fingerprint, outcome.ctime_ns, taking.quiet_since, due
            )
        else:
            attempts = taking.attempts + 1
            base = max(self.watch.quiet_period_s, 1.0)
            delay = backoff_s(attempts, base_s=base, cap_s=UNREADABLE_RETRY_MAX_S)
            due = now + delay
            # Said once (the row and its log line); each retry only at debug level.
            log.debug("still unreadable", file=str(path), attempts=attempts, retry_in_s=delay)
            held = Held(
                "unreadable",
                outcome.fingerprint,
                outcome.ctime_ns,
                taking.quiet_since,
                due,
                attempts=attempts,
            )
        self.held.hold(path, held)
        self._candidates.add(path)  # compare once more: it may have changed meanwhile

    @staticmethod
    def _ctime_of(path: Path) -> int:
        try:
            return path.lstat().st_ctime_ns
        except FileNotFoundError:
            return 0
