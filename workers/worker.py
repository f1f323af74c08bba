"""The ASR worker loop: claim a job, transcribe it, store the result, repeat.

Transcription runs in a daemon thread so the event loop keeps sending lease
heartbeats; shutdown stops claiming, waits up to the grace time for the current
job, and otherwise cancels it and hands the lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pipeline.backoff import Backoff
from pipeline.config import QualitySettings, QueueSettings, ValidationSettings
from pipeline.db import jobs
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub, Subscription, shared_or_own
from pipeline.db.notify import next_notices
from pipeline.errors import (
    DatabaseError,
    DatabaseUnavailable,
    LeaseLost,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from pipeline.metrics import Metrics
from pipeline.registry.records import MODELS_CHANNEL
from pipeline.sources.registry import SourceRegistry
from pipeline.staging import process_staging_dir
from pipeline.storage import ObjectStore
from pipeline.tasks import cancel_and_wait
from workers.fetch import Fetched, adopt, fetch
from workers.gpu import GpuMemoryProbe
from workers.model_follow import ActiveModel, ModelFollower
from workers.presence import Presence, WorkerIdentity, forget_departed_workers
from workers.progress import ProgressReporter
from workers.results import RetryWait, save_transcription
from workers.transcription import Cancelled, TranscribeOptions, Transcriber, Transcription

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How often a busy worker checks that its lease is still its own.
LEASE_CHECK_S = 1.0


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


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker reads of the settings; the runtime builds it from the groups."""

    queue: QueueSettings
    # Audio fetched from a source bucket is validated again, with the same rules.
    validation: ValidationSettings
    temp_dir: Path
    shutdown_grace_s: float
    # The limits of each transcript's verdict (ok or review).
    quality: QualitySettings


class AsrWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        db: Database,
        store: ObjectStore,
        transcriber: Transcriber,
        *,
        sources: SourceRegistry,
        metrics: Metrics,
        worker_id: str | None = None,
        notifications: NotificationHub | None = None,
        follower: ModelFollower | None = None,
    ) -> None:
        """``sources`` reach audio left in a watched bucket (``fetch``); ``follower``
        (shared by the process's workers) switches to the promoted model between jobs,
        else every job runs on ``transcriber``."""
        self.settings = settings
        self.metrics = metrics
        self.db = db
        # The process's shared hub (else the worker opens its own while it runs).
        self.notifications = notifications
        self.store = store
        self.transcriber = transcriber
        self.follower = follower
        self._model_version = follower.version if follower is not None else 0
        self.worker_id = worker_id or make_worker_id()
        self.sources = sources
        self.policy = jobs.RetryPolicy(
            settings.queue.backoff_base_s,
            settings.queue.backoff_max_s,
            settings.queue.priority_head_start_s,
        )
        self._last_reap = 0.0
        self.outage = Backoff("object storage (worker)", base_s=1.0, cap_s=60.0)
        self._current_job: int | None = None
        device = transcriber.device_label
        self.presence = Presence(
            db,
            WorkerIdentity(
                worker_id=self.worker_id,
                device=device,
                compute_type=transcriber.compute_type,
                model=self._model().name,
                batch_size=transcriber.batch_size,
            ),
            self.metrics,
            gpu=GpuMemoryProbe(int(device.split(":")[1])) if device.startswith("cuda:") else None,
            model_id=self._model().model_id,
            model_problem=follower.problem if follower is not None else None,
        )

    def _model(self) -> ActiveModel:
        """The model the next job runs on (the follower's, else the fixed transcriber)."""
        if self.follower is not None:
            return self.follower.active
        return ActiveModel(self.transcriber, None, self.transcriber.model_name)

    async def run(self, stop: asyncio.Event) -> None:
        process_staging_dir(self.settings.temp_dir)
        log.info("worker ready", worker_id=self.worker_id, device=self.transcriber.device)
        presence = asyncio.create_task(self._presence_loop())
        try:
            async with (
                shared_or_own(self.db, self.notifications) as hub,
                hub.subscription(jobs.JOBS_CHANNEL) as new_jobs,
                hub.subscription(MODELS_CHANNEL) as model_changes,
            ):
                await self._claim_until_stopped(new_jobs, model_changes, stop)
        finally:
            await cancel_and_wait(presence)
            with contextlib.suppress(DatabaseError, TransientError):
                await self.presence.stopped()
            log.info("worker stopped", worker_id=self.worker_id)

    async def _claim_until_stopped(
        self, new_jobs: Subscription, model_changes: Subscription, stop: asyncio.Event
    ) -> None:
        """Claim and process jobs; with none queued, sleep until NOTIFY or the poll interval.

        Between jobs the worker follows the promoted model (a NOTIFY on the registry's
        channel, or the follower's own check when it is due).
        """
        while not stop.is_set():
            try:
                if model_changes.get_nowait() is not None:
                    model_changes.clear()
                    self._registry_changed()
                await self._follow_model()
                await self._reap_if_due()
                async with self.db.connection() as conn:
                    job = await jobs.claim(
                        conn, worker_id=self.worker_id, lease_s=self.settings.queue.lease_s
                    )
                if job is None:
                    notices = await next_notices(
                        (new_jobs, model_changes), (stop,), self.settings.queue.poll_interval_s
                    )
                    if any(n.channel == MODELS_CHANNEL for n in notices):
                        self._registry_changed()
                else:
                    await self._process(job, stop)
            except TransientError as exc:
                log.warning("worker loop error; retrying", error=str(exc))
                if isinstance(exc, DatabaseUnavailable):
                    self.metrics.db_errors.labels("worker").inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.queue.poll_interval_s)

    def _registry_changed(self) -> None:
        if self.follower is not None:
            self.follower.changed()

    async def _follow_model(self) -> None:
        """Switch models if another is promoted; tell the worker's row what it runs."""
        if self.follower is None:
            return
        await self.follower.follow()
        if self.follower.version == self._model_version:
            return
        version, active = self.follower.version, self.follower.active
        try:
            await self.presence.model_changed(active.name, active.model_id, self.follower.problem)
        except (DatabaseError, TransientError) as exc:
            log.warning("could not record the worker's model; will try again", error=str(exc))
            return
        self._model_version = version

    async def _presence_loop(self) -> None:
        """Say the worker is alive (and what it does) every heartbeat interval, busy or not."""
        registered = False
        while True:
            try:
                if not registered:
                    await self.presence.started()
                    registered = True
                else:
                    await self.presence.beat(self._current_job)
            except (DatabaseError, TransientError) as exc:
                self.metrics.db_errors.labels("worker").inc()
                log.warning("worker heartbeat failed; will try again", error=str(exc))
            await asyncio.sleep(self.settings.queue.heartbeat_interval_s)

    async def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_reap < min(self.settings.queue.lease_s, 30.0):
            return
        self._last_reap = now
        async with self.db.connection() as conn:
            reaped = await jobs.reap_exhausted(conn)
        if reaped:
            log.warning("jobs ended dead after their workers stopped responding", count=reaped)
        forgotten = await forget_departed_workers(self.db)
        if forgotten:
            log.info("forgot workers not seen for a week", count=forgotten)

    async def _process(self, job: jobs.ClaimedJob, stop: asyncio.Event) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, audio_id=str(job.audio_id))
        started = time.monotonic()
        self._current_job = job.id
        cancel = threading.Event()
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job, cancel, lost))
        fetched: Fetched | None = None
        outcome = "released"
        try:
            fetched = await self._blocking(
                lambda: fetch(
                    job,
                    validation=self.settings.validation,
                    temp_dir=self.settings.temp_dir,
                    store=self.store,
                    sources=self.sources,
                ),
                job,
                stop,
                cancel,
            )
            if fetched is None:
                return
            if await self._is_duplicate(job, fetched):
                outcome = "duplicate"
                return
            path = fetched.path
            model = await self._model_for(job)
            progress = ProgressReporter(self.db, job, metrics=self.metrics)
            options = progress.attach(self._options_for(job, stop))
            async with progress.running():
                result = await self._blocking(
                    lambda: model.transcriber.transcribe(path, cancel, options), job, stop, cancel
                )
            if result is None:
                return
            if lost.is_set():
                raise LeaseLost(f"job {job.id} lease lost during transcription")
            await self._store(
                job,
                result,
                model,
                fetched.storage_key or job.storage_key,
                self._commit_patience(stop, lost),
            )
            self._record_transcription(result)
            outcome = "done"
            self.outage.succeeded()
        except LeaseLost as exc:
            outcome = "lease_lost"
            log.warning("lease lost; result discarded", error=str(exc))
        except Cancelled:
            outcome = "cancelled"
            log.warning("transcription cancelled")
        except PermanentError as exc:
            outcome = await self._record_failure(job, str(exc), transient=False)
        except StorageUnavailable as exc:
            await self._wait_out_outage(job, str(exc))
        except TransientError as exc:
            outcome = await self._record_failure(job, str(exc), transient=True)
        except Exception as exc:  # noqa: BLE001 - any other failure is worth a retry
            log.exception("job failed")
            outcome = await self._record_failure(job, _describe(exc), transient=True)
        finally:
            if fetched is not None:
                fetched.path.unlink(missing_ok=True)
            await cancel_and_wait(beat)
            self._current_job = None
            await self._job_finished(outcome, time.monotonic() - started)
            structlog.contextvars.unbind_contextvars("job_id", "audio_id")

    async def _model_for(self, job: jobs.ClaimedJob) -> ActiveModel:
        """The job's model: the one it asked for by name, else the worker's current one."""
        requested = job.options.get("model")
        if self.follower is None:
            return self._model()
        return await self.follower.for_job(str(requested) if requested else None)

    def _options_for(self, job: jobs.ClaimedJob, stop: asyncio.Event) -> TranscribeOptions:
        """The job's options; bulk work may pause (between windows or runs) for someone waiting."""
        options = TranscribeOptions.from_job(job.options)
        if job.priority >= jobs.PRIORITY_LEVELS["high"]:
            return options
        loop = asyncio.get_running_loop()

        def serve_waiting_request() -> None:  # on the transcribing thread
            asyncio.run_coroutine_threadsafe(self._serve_urgent(stop), loop).result()

        return dataclasses.replace(options, at_pause_point=serve_waiting_request)

    async def _serve_urgent(self, stop: asyncio.Event) -> None:
        """At a pause point of bulk work: transcribe a waiting high-priority job first.

        The bulk job keeps its lease (its heartbeat runs on) and carries on afterwards
        from where it paused; an interactive request waits at most for one window or
        stretch of speech (≤ 30 s of audio when languages are detected per stretch).
        """
        if stop.is_set():
            return
        try:
            async with self.db.connection() as conn:
                urgent = await jobs.claim_urgent(
                    conn, worker_id=self.worker_id, lease_s=self.settings.queue.lease_s
                )
        except (DatabaseError, TransientError) as exc:
            log.warning("could not look for waiting requests; carrying on", error=str(exc))
            return
        if urgent is None:
            return
        paused = self._current_job
        log.info("pausing bulk work for a waiting request", job_id=paused, urgent_job=urgent.id)
        try:
            await self._process(urgent, stop)
        finally:
            self._current_job = paused

    def _record_transcription(self, result: Transcription) -> None:
        device = self.transcriber.device_label
        self.metrics.real_time_factor.labels(device).observe(result.real_time_factor)
        self.metrics.audio_transcribed_seconds.inc(result.audio_duration_s)

    async def _job_finished(self, outcome: str, seconds: float) -> None:
        self.metrics.jobs_finished.labels(outcome).inc()
        self.metrics.job_seconds.labels(outcome).observe(seconds)
        if outcome not in ("done", "duplicate", "failed", "retry"):
            return
        try:
            await self.presence.job_finished(succeeded=outcome in ("done", "duplicate"))
        except (DatabaseError, TransientError) as exc:
            self.metrics.db_errors.labels("worker").inc()
            log.warning("could not count the job on the worker's row", error=str(exc))

    async def _is_duplicate(self, job: jobs.ClaimedJob, fetched: Fetched) -> bool:
        """For audio fetched from a source bucket: record it, and stop if seen before."""
        if fetched.sha256 is None:
            return False
        original = await adopt(self.db, job, fetched)
        if original is None:
            return False
        log.info("duplicate", file=job.original_name, duplicate_of=str(original))
        return True

    async def _blocking(
        self,
        fn: Callable[[], T],
        job: jobs.ClaimedJob,
        stop: asyncio.Event,
        cancel: threading.Event,
    ) -> T | None:
        """Run ``fn`` in a daemon thread; ``None`` when shutdown released the job instead."""
        work = run_in_daemon_thread(fn, f"asr-job-{job.id}")
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
                    released = await jobs.release(
                        conn, job, head_start_s=self.policy.priority_head_start_s
                    )
                log.warning(
                    "shutdown grace ran out: job released for another worker", released=released
                )
                return None
        return work.result()

    async def _heartbeat(
        self, job: jobs.ClaimedJob, cancel: threading.Event, lost: asyncio.Event
    ) -> None:
        """Extend the lease every heartbeat interval, and check it every second in between.

        A lease taken over by another worker (or released by an operator) cancels the
        transcription within about a second instead of at the next extension.
        """
        interval = self.settings.queue.heartbeat_interval_s
        check_every = min(LEASE_CHECK_S, interval)
        extend_at = time.monotonic() + interval
        failing = False
        while True:
            await asyncio.sleep(check_every)
            try:
                async with self.db.connection() as conn:
                    if time.monotonic() >= extend_at:
                        await jobs.heartbeat(conn, job, lease_s=self.settings.queue.lease_s)
                        extend_at = time.monotonic() + interval
                    elif not await jobs.holds_lease(conn, job):
                        raise LeaseLost(f"job {job.id} lease lost")
            except LeaseLost:
                log.warning("lease lost: another worker owns this job now")
                lost.set()
                cancel.set()
                return
            except TransientError as exc:
                if not failing:
                    log.warning("heartbeat failed; will try again", error=str(exc))
                failing = True
            else:
                failing = False

    def _commit_patience(self, stop: asyncio.Event, lost: asyncio.Event) -> RetryWait:
        """How long a finished transcription waits for the database to come back.

        As long as it takes while the worker runs and holds the lease (the fenced commit
        decides who wins if another worker took the job meanwhile); after a stop request,
        only the shutdown grace.
        """
        give_up_at: float | None = None

        async def wait(delay_s: float) -> bool:
            nonlocal give_up_at
            self.metrics.db_errors.labels("worker").inc()
            if lost.is_set():
                return False
            if stop.is_set():
                if give_up_at is None:
                    give_up_at = time.monotonic() + self.settings.shutdown_grace_s
                left = give_up_at - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(delay_s, left))
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            return True

        return wait

    async def _store(
        self,
        job: jobs.ClaimedJob,
        result: Transcription,
        model: ActiveModel,
        storage_key: str | None,
        wait_to_retry: RetryWait,
    ) -> None:
        assert storage_key is not None
        judged = await save_transcription(
            self.db,
            self.store,
            job,
            result,
            storage_key=storage_key,
            transcriber=model.transcriber,
            model_id=model.model_id,
            worker_id=self.worker_id,
            wait_to_retry=wait_to_retry,
            quality=self.settings.quality,
            metrics=self.metrics,
        )
        log.info(
            "transcribed",
            file=job.original_name,
            language=result.language,
            model=model.name,
            duration_s=round(result.audio_duration_s, 2),
            processing_s=round(result.processing_s, 2),
            rtf=round(result.real_time_factor, 3),
            segments=len(result.segments),
            windows=result.windows,
            verdict=judged.verdict,
            reasons=judged.reason_texts,
        )

    async def _wait_out_outage(self, job: jobs.ClaimedJob, error: str) -> None:
        """Hand the job back for later without spending an attempt; back off while down."""
        delay = self.outage.failed(error)
        async with self.db.connection() as conn:
            await jobs.release(
                conn,
                job,
                delay_s=delay,
                error=error,
                head_start_s=self.policy.priority_head_start_s,
            )

    async def _record_failure(self, job: jobs.ClaimedJob, error: str, *, transient: bool) -> str:
        """Record the failure; return the outcome for metrics (retry, failed or lease_lost)."""
        try:
            async with self.db.connection() as conn:
                state = await jobs.fail(conn, job, error, transient=transient, policy=self.policy)
        except LeaseLost:
            log.warning("lease lost before the failure could be recorded", error=error)
            return "lease_lost"
        log.error(
            "job failed",
            file=job.original_name,
            error=error,
            next_state=state,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        return "retry" if state == "queued" else "failed"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, TransientError) else f"{type(exc).__name__}: {text}"
