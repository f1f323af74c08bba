"""Gauges read from PostgreSQL: queue depth by job state, the oldest waiting job, dataset size.

Processes running the gateway or the orchestrator (``ai2text up`` included) sample
them on ``metrics.queue_sample_interval_s``; each exports the same, database-wide
values. Workers, watchers and S3 processes do not, so scaling workers out does not
multiply these queries. A database error while sampling is
counted (``ai2text_db_errors_total{component="metrics"}``), logged once per outage,
and leaves the previous values in place; it never stops the role.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from pipeline.catalog import jobs_by_state
from pipeline.config import DatasetSettings
from pipeline.datasets.eligibility import eligible_hours
from pipeline.datasets.queries import list_versions
from pipeline.db.database import AsyncConn, Database
from pipeline.db.states import JobState
from pipeline.errors import DatabaseError, DatabaseUnavailable
from pipeline.metrics import Metrics

log = structlog.get_logger(__name__)

# Every state a job can be in: each gets a sample, 0 included, so a dashboard never
# shows a gap for an empty state.
JOB_STATES = tuple(JobState)


async def _oldest_queued_s(conn: AsyncConn) -> float:
    """Seconds since the longest-waiting claimable job became claimable (0 when none)."""
    cur = await conn.execute(
        "SELECT coalesce(extract(epoch FROM now() - min(run_after)), 0) AS age"
        " FROM jobs WHERE state = 'queued' AND run_after <= now()"
    )
    row = await cur.fetchone()
    assert row is not None
    return max(0.0, float(row["age"]))  # type: ignore[arg-type]


async def sample_once(db: Database, metrics: Metrics, dataset: DatasetSettings) -> None:
    """Read every sampled value in one connection, then set the gauges together."""
    name = dataset.name
    async with db.connection() as conn:
        jobs = await jobs_by_state(conn, tenant=None)
        oldest_s = await _oldest_queued_s(conn)
        eligible_h = await eligible_hours(conn, dataset)
        versions = await list_versions(conn, name)
    for state in JOB_STATES:
        metrics.queue_jobs.labels(state).set(jobs.get(state, 0))
    metrics.queue_oldest_queued_seconds.set(oldest_s)
    metrics.dataset_eligible_seconds.labels(name).set(eligible_h * 3600.0)
    frozen = next((v for v in versions if v["state"] == "frozen"), None)  # newest first
    frozen_h = float(frozen["audio_hours"] or 0.0) if frozen is not None else 0.0
    metrics.dataset_frozen_seconds.labels(name).set(frozen_h * 3600.0)


async def run_sampler(
    db: Database,
    metrics: Metrics,
    dataset: DatasetSettings,
    stop: asyncio.Event,
    *,
    interval_s: float,
) -> None:
    """Sample now and every ``interval_s`` (``metrics.queue_sample_interval_s``) until ``stop``."""
    failing = False
    while not stop.is_set():
        try:
            await sample_once(db, metrics, dataset)
        except (DatabaseUnavailable, DatabaseError) as exc:
            metrics.db_errors.labels("metrics").inc()
            if not failing:
                log.warning("cannot sample queue metrics; will retry", error=str(exc))
            failing = True
        else:
            if failing:
                log.info("sampling queue metrics again")
            failing = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
