"""The ASR worker loop: claim a job, transcribe it, store the result, repeat.

Transcription runs in a daemon thread so the event loop keeps sending lease
heartbeats; shutdown stops claiming, waits up to the grace time for the current
job, and otherwise cancels it and hands the lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog

from pipeline import queue
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.errors import LeaseLost, PermanentError, TransientError
from pipeline.ingest.validation import extension_of
from pipeline.storage import ObjectNotFound, ObjectStore
from workers.asr import Cancelled, Transcriber, Transcription
from workers.results import save_transcription

log = structlog.get_logger(__name__)

T = TypeVar("T")


def make_worker_id(index: int = 0) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


def run_in_daemon_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread, so a stuck model call cannot block process exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):  # loop already closed at exit
                loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future.set_result, result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


class AsrWorker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ObjectStore,
        transcriber: Transcriber,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.transcriber = transcriber
        self.worker_id = worker_id or make_worker_id()
        self.policy = queue.RetryPolicy(settings.queue.backoff_base_s, settings.queue.backoff_max_s)
        self._last_reap = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        self.settings.temp_dir.mkdir(parents=True, exist_ok=True)
        log.info("worker ready", worker_id=self.worker_id, device=self.transcriber.device)
        listener: psycopg.AsyncConnection[Any] | None = None
        try:
            while not stop.is_set():
                try:
                    if listener is None or listener.closed:
                        listener = await self._listen()
                    await self._reap_if_due()
                    async with self.db.connection() as conn:
                        job = await queue.claim(
                            conn, worker_id=self.worker_id, lease_s=self.settings.queue.lease_s
                        )
                    if job is None:
                        await self._wait_for_work(listener, stop)
                    else:
                        await self._process(job, stop)
                except (psycopg.OperationalError, TransientError) as exc:
                    log.warning("worker loop error; retrying", error=str(exc))
                    if listener is not None:
                        await listener.close()
                    listener = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.queue.poll_interval_s)
        finally:
            if listener is not None:
                await listener.close()
            log.info("worker stopped", worker_id=self.worker_id)

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        conn = await self.db.listen_connection()
        await conn.execute(f"LISTEN {queue.JOBS_CHANNEL}")
        return conn

    async def _wait_for_work(
        self, listener: psycopg.AsyncConnection[Any], stop: asyncio.Event
    ) -> None:
        """Sleep until a NOTIFY, the polling interval, or shutdown, whichever is first."""
        deadline = time.monotonic() + self.settings.queue.poll_interval_s
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            async for _ in listener.notifies(timeout=min(remaining, 0.5), stop_after=1):
                return

    async def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_reap < min(self.settings.queue.lease_s, 30.0):
            return
        self._last_reap = now
        async with self.db.connection() as conn:
            reaped = await queue.reap_exhausted(conn)
        if reaped:
            log.warning("jobs ended dead after their workers stopped responding", count=reaped)

    async def _process(self, job: queue.ClaimedJob, stop: asyncio.Event) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, audio_id=str(job.audio_id))
        cancel = threading.Event()
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job, cancel, lost))
        work = run_in_daemon_thread(lambda: self._transcribe(job, cancel), f"asr-job-{job.id}")
        try:
            result = await self._await_work(job, work, stop, cancel)
            if result is None:
                return
            if lost.is_set():
                raise LeaseLost(f"job {job.id} lease lost during transcription")
            await self._store(job, result)
        except LeaseLost as exc:
            log.warning("lease lost; result discarded", error=str(exc))
        except Cancelled:
            log.warning("transcription cancelled")
        except PermanentError as exc:
            await self._record_failure(job, str(exc), transient=False)
        except Exception as exc:  # noqa: BLE001 - any other failure is worth a retry
            log.exception("job failed")
            await self._record_failure(job, _describe(exc), transient=True)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            structlog.contextvars.unbind_contextvars("job_id", "audio_id")

    async def _await_work(
        self,
        job: queue.ClaimedJob,
        work: asyncio.Future[Transcription],
        stop: asyncio.Event,
        cancel: threading.Event,
    ) -> Transcription | None:
        """The transcription, or ``None`` when shutdown released the job instead."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        pending: set[asyncio.Future[Any]] = {work, stopping}
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not work.done():
            grace = self.settings.shutdown_grace_s
            log.info("shutting down: finishing the current job", grace_s=grace)
            done, _ = await asyncio.wait({work}, timeout=grace)
            if not done:
                cancel.set()
                work.add_done_callback(lambda f: f.cancelled() or f.exception())
                async with self.db.connection() as conn:
                    released = await queue.release(conn, job)
                log.warning(
                    "shutdown grace ran out: job released for another worker", released=released
                )
                return None
        return work.result()

    async def _heartbeat(
        self, job: queue.ClaimedJob, cancel: threading.Event, lost: asyncio.Event
    ) -> None:
        interval = self.settings.queue.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.db.connection() as conn:
                    await queue.heartbeat(conn, job, lease_s=self.settings.queue.lease_s)
            except LeaseLost:
                log.warning("lease lost: another worker owns this job now")
                lost.set()
                cancel.set()
                return
            except (psycopg.OperationalError, TransientError) as exc:
                log.warning("heartbeat failed; will try again", error=str(exc))

    def _transcribe(self, job: queue.ClaimedJob, cancel: threading.Event) -> Transcription:
        """Blocking: fetch the object into a private temp file, transcribe, always clean up."""
        suffix = "." + extension_of(job.storage_key) if extension_of(job.storage_key) else ""
        fd, name = tempfile.mkstemp(prefix="ai2text-", suffix=suffix, dir=self.settings.temp_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                try:
                    self.store.download(job.storage_key, tmp)
                except ObjectNotFound as exc:
                    raise PermanentError(f"stored audio is missing: {job.storage_key}") from exc
            return self.transcriber.transcribe(path, cancel)
        finally:
            path.unlink(missing_ok=True)

    async def _store(self, job: queue.ClaimedJob, result: Transcription) -> None:
        await save_transcription(
            self.db,
            self.store,
            job,
            result,
            transcriber=self.transcriber,
            worker_id=self.worker_id,
        )
        log.info(
            "transcribed",
            file=job.original_name,
            language=result.language,
            duration_s=round(result.audio_duration_s, 2),
            processing_s=round(result.processing_s, 2),
            rtf=round(result.real_time_factor, 3),
            segments=len(result.segments),
        )

    async def _record_failure(self, job: queue.ClaimedJob, error: str, *, transient: bool) -> None:
        try:
            async with self.db.connection() as conn:
                state = await queue.fail(conn, job, error, transient=transient, policy=self.policy)
        except LeaseLost:
            log.warning("lease lost before the failure could be recorded", error=error)
            return
        log.error(
            "job failed",
            file=job.original_name,
            error=error,
            next_state=state,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, TransientError) else f"{type(exc).__name__}: {text}"
