"""The training orchestrator: freeze a version and launch one run per threshold crossing.

Datasets are per tenant and per language (one language, or each explicit list in
``dataset.languages``): each dataset's eligible hours are compared with the
threshold on their own, and its crossing freezes a version of that tenant's
audio in those languages only and launches its run. Checked on every finished transcript
(LISTEN/NOTIFY) and on a timer. Several orchestrators may run: the
check-freeze-record step holds a PostgreSQL advisory lock, and each new version's
run is recorded in the same transaction that marks the version frozen, so each
crossing yields exactly one run. Runs heartbeat
while their launcher works; a run whose orchestrator died is marked failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import AsrSettings, DatasetSettings, TrainingSettings
from pipeline.datasets import launchers
from pipeline.datasets.eligibility import DatasetStanding, dataset_standings
from pipeline.datasets.freeze import Freezer, FrozenVersion
from pipeline.datasets.languages import label
from pipeline.datasets.layout import local_dir_name
from pipeline.datasets.materialize import materialize
from pipeline.datasets.queries import audio_keys
from pipeline.db.database import AsyncConn, Database
from pipeline.db.jobs import TRANSCRIPTS_CHANNEL
from pipeline.db.notifications import NotificationHub, shared_or_own
from pipeline.db.notify import wait_for_notify
from pipeline.errors import Ai2TextError, DatabaseUnavailable
from pipeline.metrics import Metrics
from pipeline.registry import candidates
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

# Shared by every orchestrator process ("ai2o").
ORCHESTRATOR_LOCK_KEY = 0x6169326F


class Orchestrator:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        *,
        training: TrainingSettings,
        dataset: DatasetSettings,
        data_dir: Path,
        temp_dir: Path,
        metrics: Metrics,
        notifications: NotificationHub | None = None,
        asr: AsrSettings | None = None,
    ) -> None:
        """Runs go under ``training.materialize_dir``, else ``data_dir``; freezing stages
        its files under ``temp_dir``. ``asr`` names the model workers run without a
        promoted one (``{base_model_dir}``, and what a candidate is compared with)."""
        self.asr = asr or AsrSettings()
        self.metrics = metrics
        # The process's shared hub (else the orchestrator opens its own while it runs).
        self.notifications = notifications
        self.training = training
        self.dataset = dataset
        self.data_dir = data_dir
        self.db = db
        self.store = store
        self.freezer = Freezer(db, store, dataset=dataset, temp_dir=temp_dir)
        self.launcher = launchers.launcher_for(training.launch)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._launches: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "orchestrator ready",
            threshold_hours=self.training.threshold_hours,
            launcher=self.training.launcher,
        )
        try:
            async with (
                shared_or_own(self.db, self.notifications) as hub,
                hub.subscription(TRANSCRIPTS_CHANNEL) as transcripts,
            ):
                while not stop.is_set():
                    await self._check_once()
                    # Until a transcript is committed, the check interval passes, or stop.
                    await wait_for_notify(transcripts, stop, self.training.check_interval_s)
        finally:
            for task in list(self._launches):
                task.cancel()
            await asyncio.gather(*self._launches, return_exceptions=True)

    async def _check_once(self) -> None:
        try:
            await self.reap_orphans()
            await self.check()
        except DatabaseUnavailable as exc:
            self.metrics.db_errors.labels("orchestrator").inc()
            log.warning("orchestrator check failed; will retry", error=str(exc))
        except Ai2TextError as exc:
            log.warning("orchestrator check failed; will retry", error=str(exc))
        except Exception:  # noqa: BLE001 - the loop must outlive one bad check
            log.exception("orchestrator check failed; will retry")

    async def check(self) -> list[FrozenVersion]:
        """Freeze and start a run for every dataset whose crossing happened (or none if busy).

        One dataset's failed freeze does not cost the others their run: the versions
        frozen are launched, then the first failure is raised for the caller to log.
        """
        frozen: list[FrozenVersion] = []
        failure: Exception | None = None
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(%s) AS got", (ORCHESTRATOR_LOCK_KEY,)
            )
            row = await cur.fetchone()
            if row is None or not row["got"]:
                return []
            try:
                for dataset in await self._crossed(conn):
                    try:
                        frozen.append(
                            await self.freezer.freeze(
                                tenant=dataset.tenant,
                                languages=dataset.languages,
                                run_launcher=self.training.launcher,
                            )
                        )
                    except Exception as exc:  # noqa: BLE001 - raised below, after the others
                        log.warning(
                            "could not freeze a crossed dataset",
                            tenant=dataset.tenant,
                            languages=label(dataset.languages),
                            error=str(exc),
                        )
                        failure = failure or exc
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (ORCHESTRATOR_LOCK_KEY,))
        for version in frozen:
            task = asyncio.create_task(self.launch(version))
            self._launches.add(task)
            task.add_done_callback(self._launches.discard)
        if failure is not None:
            raise failure
        return frozen

    async def _crossed(self, conn: AsyncConn) -> list[DatasetStanding]:
        """Datasets at the threshold with enough new hours since their last run."""
        crossed = []
        for dataset in await dataset_standings(conn, self.dataset):
            total, before = dataset.eligible_hours, dataset.hours_at_last_run
            if total < self.training.threshold_hours:
                continue
            if total - before < self.training.new_hours_needed:
                continue
            log.info(
                "training threshold crossed",
                tenant=dataset.tenant,
                languages=label(dataset.languages),
                eligible_hours=round(total, 4),
                hours_at_last_run=round(before, 4),
            )
            crossed.append(dataset)
        return crossed

    async def launch(self, frozen: FrozenVersion) -> None:
        """Run the configured launcher for ``frozen``'s run and record the outcome."""
        assert frozen.run_id is not None
        run_id = str(frozen.run_id)
        # This task's own context: every event of the launch carries the run id.
        structlog.contextvars.bind_contextvars(
            run_id=run_id, tenant=frozen.tenant, languages=label(frozen.languages)
        )
        run_dir = self._runs_root() / run_id
        ctx = launchers.RunContext(
            run_id=run_id,
            version=frozen,
            dataset_dir=self.store.uri(frozen.prefix),
            run_dir=run_dir,
            log_key=f"runs/{run_id}/log.txt",
        )
        problem = self._disk_problem()
        if problem is not None:
            await self._finish(frozen.run_id, launchers.LaunchOutcome(False, error=problem))
            return
        base, problem = await self._base_model()
        if problem is not None:
            await self._finish(frozen.run_id, launchers.LaunchOutcome(False, error=problem))
            return
        ctx = dataclasses.replace(ctx, base_model_dir=base.directory)
        if self.training.materialize_dir is not None:
            try:
                ctx = await self._materialize(frozen, ctx)
            except Exception as exc:  # noqa: BLE001 - recorded on the run, never lost
                log.exception("could not materialise the dataset", run_id=run_id)
                outcome = launchers.LaunchOutcome(
                    False, error=f"could not materialise the dataset: {type(exc).__name__}"
                )
                await self._finish(frozen.run_id, outcome)
                return
        await self._start(frozen.run_id, ctx.log_key)
        beat = asyncio.create_task(self._heartbeat(frozen.run_id))
        try:
            outcome = await self.launcher.launch(self.store, ctx)
        except asyncio.CancelledError:
            outcome = launchers.LaunchOutcome(
                False, error="orchestrator stopped while the run was going"
            )
            await asyncio.shield(self._record_stopped(frozen.run_id, ctx, outcome))
            raise
        except Exception as exc:  # noqa: BLE001 - a failed launch is recorded, never lost
            log.exception("training launch failed", run_id=run_id)
            outcome = launchers.LaunchOutcome(False, error=f"launch failed: {type(exc).__name__}")
        finally:
            beat.cancel()
        if not outcome.succeeded:
            await asyncio.to_thread(self.launcher.after_failure, ctx)
        await self._finish(frozen.run_id, outcome)
        if outcome.succeeded:
            await self._register(frozen, ctx, base)

    async def _base_model(self) -> tuple[candidates.BaseModel, str | None]:
        """The model a run starts from; its directory only when the command names it."""
        needs_dir = launchers.uses_placeholder(self.training.launch, "base_model_dir")
        try:
            if needs_dir:
                return await candidates.current_base(self.db, self.store, self.asr), None
            return await candidates.current_base_named(self.db, self.asr), None
        except Ai2TextError as exc:
            unknown = candidates.BaseModel(self.asr.model, None, "")
            return unknown, f"cannot prepare the base model for {{base_model_dir}}: {exc}"

    async def _register(
        self, frozen: FrozenVersion, ctx: launchers.RunContext, base: candidates.BaseModel
    ) -> None:
        """A run that left a model becomes a candidate; promoted when the gate allows."""
        try:
            model = await candidates.register_run(
                self.db,
                self.store,
                ctx.run_dir,
                base=base,
                run_id=frozen.run_id,
                dataset_version_id=frozen.id,
                dataset=frozen.name,
                version=frozen.version,
                tenant=frozen.tenant,
            )
            if model is not None and self.training.auto_promote:
                await candidates.judge(
                    self.db, str(model.id), candidates.rules_of(self.training), actor="gate"
                )
        except Ai2TextError as exc:
            log.warning("the run's model was not registered", error=str(exc))
        except Exception:  # noqa: BLE001 - the run is recorded; registration is logged
            log.exception("the run's model was not registered")

    async def _materialize(
        self, frozen: FrozenVersion, ctx: launchers.RunContext
    ) -> launchers.RunContext:
        """Copy audio and manifests to local disk for trainers that need files."""
        assert self.training.materialize_dir is not None
        name = local_dir_name(frozen.tenant, frozen.name, frozen.version)
        dest = self.training.materialize_dir / "datasets" / name
        async with self.db.connection() as conn:
            keys = await audio_keys(conn, frozen.id)
        await asyncio.to_thread(materialize, self.store, frozen.prefix, keys, dest)
        return dataclasses.replace(ctx, dataset_dir=str(dest), local_dir=dest)

    async def _record_stopped(
        self, run_id: uuid.UUID, ctx: launchers.RunContext, outcome: launchers.LaunchOutcome
    ) -> None:
        await asyncio.to_thread(self.launcher.after_failure, ctx)
        await self._finish(run_id, outcome)

    def _runs_root(self) -> Any:
        return (self.training.materialize_dir or self.data_dir) / "runs"

    def _disk_problem(self) -> str | None:
        where = self.training.materialize_dir or self.data_dir
        where.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(where).free
        if free < self.training.min_free_bytes:
            return (
                f"not enough free disk in {where}: {free} bytes free,"
                f" {self.training.min_free_bytes} needed"
            )
        return None

    async def _start(self, run_id: uuid.UUID, log_key: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE training_runs SET state = 'running', owner = %s, started_at = now(),"
                " heartbeat_at = now(), log_key = %s WHERE id = %s",
                (self.owner, log_key if self.launcher.writes_log else None, run_id),
            )

    async def _heartbeat(self, run_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self.training.heartbeat_s)
            try:
                async with self.db.connection() as conn:
                    await conn.execute(
                        "UPDATE training_runs SET heartbeat_at = now() WHERE id = %s", (run_id,)
                    )
            except DatabaseUnavailable as exc:
                self.metrics.db_errors.labels("orchestrator").inc()
                log.warning("run heartbeat failed", error=str(exc))

    async def _finish(self, run_id: uuid.UUID, outcome: launchers.LaunchOutcome) -> None:
        state = "succeeded" if outcome.succeeded else "failed"
        self.metrics.training_runs.labels(state).inc()
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE training_runs SET state = %s, finished_at = now(), exit_code = %s,"
                " http_status = %s, remote_id = %s, error = %s WHERE id = %s",
                (
                    state,
                    outcome.exit_code,
                    outcome.http_status,
                    outcome.remote_id,
                    outcome.error,
                    run_id,
                ),
            )
        log.info(
            "training run finished",
            run_id=str(run_id),
            state=state,
            error=outcome.error,
            exit_code=outcome.exit_code,
            remote_id=outcome.remote_id,
        )

    async def reap_orphans(self) -> int:
        """Runs whose orchestrator stopped heartbeating end ``failed``; none stays running."""
        stale_after = self.training.heartbeat_s * 3
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE training_runs SET state = 'failed', finished_at = now(),"
                " error = 'orchestrator restarted or died while the run was going'"
                " WHERE state IN ('pending', 'running')"
                " AND heartbeat_at < now() - make_interval(secs => %s)",
                (stale_after,),
            )
            await conn.execute(
                "UPDATE dataset_versions SET state = 'abandoned' WHERE state = 'freezing'"
                " AND created_at < now() - interval '1 hour'"
            )
        if cur.rowcount:
            # Their own orchestrator never counted them: it stopped before they ended.
            self.metrics.training_runs.labels("failed").inc(cur.rowcount)
            log.warning("runs left by a stopped orchestrator marked failed", count=cur.rowcount)
        return cur.rowcount
