"""How far a running transcription has got, told to the database while it runs.

The transcription thread calls ``report`` with the end of each segment (and of each
window) on the file's clock; that only records the furthest point, so it costs the
model nothing. The worker's event loop writes it to ``jobs.progress_s`` at most once
per ``interval_s``, fenced by the lease token like a heartbeat (a worker that lost the
job writes nothing), and sends ``pg_notify('ai2text_progress', …)`` in the same
statement for the gateway's event streams and ``ai2text show --follow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Callable

import structlog

from pipeline.db import jobs, partials
from pipeline.db.database import Database
from pipeline.errors import DatabaseError, TransientError
from pipeline.metrics import Metrics
from pipeline.progress import PROGRESS_CHANNEL, eta_s, fraction
from pipeline.tasks import cancel_and_wait
from workers.transcription import Segment, TranscribeOptions

log = structlog.get_logger(__name__)

# The most often one job's progress is written (and notified).
DEFAULT_INTERVAL_S = 1.0


class ProgressReporter:
    """Collects one job's progress from the transcription thread and writes it, throttled."""

    def __init__(
        self,
        db: Database,
        job: jobs.ClaimedJob,
        *,
        metrics: Metrics | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.job = job
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._latest = 0.0
        self._written = 0.0
        self._last_write_at: float | None = None
        self._started_at = clock()
        self._lost = False
        self._segments: list[partials.NewSegment] = []  # made, not written yet
        self._made = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    def attach(self, options: TranscribeOptions) -> TranscribeOptions:
        """``options`` with this reporter as its progress hook."""
        return dataclasses.replace(options, on_progress=self.report, on_segment=self.add_segment)

    def add_segment(self, segment: Segment) -> None:
        """A segment just produced; written with the next progress (any thread, cheap)."""
        text = segment.text.strip()
        with self._lock:
            seq, self._made = self._made, self._made + 1
            if text:
                self._segments.append(partials.NewSegment(seq, segment.start, segment.end, text))

    def report(self, progress_s: float) -> None:
        """Seconds of the file transcribed so far; any thread, cheap, never goes back."""
        with self._lock:
            if progress_s <= self._latest:
                return
            self._latest = progress_s
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed at exit
                loop.call_soon_threadsafe(self._changed.set)

    @property
    def latest_s(self) -> float:
        with self._lock:
            return self._latest

    async def write_due(self) -> bool:
        """Write the latest progress if it moved and the interval has passed; True if written.

        Once the lease is gone nothing more is written (the heartbeat cancels the job).
        """
        now = self.clock()
        progress_s = self.latest_s
        if self._lost or progress_s <= self._written:
            return False
        if self._last_write_at is not None and now - self._last_write_at < self.interval_s:
            return False
        self._last_write_at = now
        payload = self._payload(progress_s, elapsed_s=now - self._started_at)
        with self._lock:
            segments, self._segments = self._segments, []
        try:
            async with self.db.connection() as conn:
                written = await jobs.record_progress(
                    conn, self.job, progress_s, channel=PROGRESS_CHANNEL, payload=payload
                )
                if written and segments:
                    # Same transaction: a reader woken by the progress notice finds them.
                    await partials.add_segments(conn, self.job.id, self.job.lease_token, segments)
        except BaseException:
            with self._lock:  # not written: they go with the next try
                self._segments[:0] = segments
            raise
        if not written:
            self._lost = True
            log.info("progress not recorded: the lease is no longer this worker's")
            return False
        if self.metrics is not None:
            self.metrics.audio_progress_seconds.inc(progress_s - self._written)
        self._written = progress_s
        return True

    def _payload(self, progress_s: float, *, elapsed_s: float) -> str:
        duration = self.job.duration_s or None
        return json.dumps(
            {
                "audio_id": str(self.job.audio_id),
                "tenant": self.job.tenant,
                "progress_s": round(progress_s, 3),
                "duration_s": duration,
                "progress": fraction(progress_s, duration),
                "eta_s": eta_s(progress_s, duration, elapsed_s),
            },
            separators=(",", ":"),
        )

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.write_due()
            except (DatabaseError, TransientError) as exc:
                log.warning("progress not recorded; will try again", error=str(exc))
            wait_s = self.interval_s
            if self._last_write_at is not None:
                wait_s = self._last_write_at + self.interval_s - self.clock()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the throttle: at most one write per interval
                self._changed.set()  # look again: progress reported meanwhile is due now

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressReporter]:
        """Write progress in the background while the block runs (the transcription)."""
        self._loop = asyncio.get_running_loop()
        self._started_at = self.clock()
        task = asyncio.create_task(self._run(), name=f"progress-{self.job.id}")
        try:
            yield self
        finally:
            self._loop = None
            await cancel_and_wait(task)
