"""Worker presence: a row per worker in ``workers``, refreshed on every heartbeat.

Lease heartbeats (``pipeline.db.jobs.heartbeat``) keep one job's lease alive;
presence tells operators which workers exist at all, what device and model each
runs, what it is doing now and, on CUDA, how much GPU memory it sees.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from pipeline.db.database import Database
from pipeline.metrics import Metrics
from workers.gpu import GpuMemory, GpuMemoryProbe

# Rows of workers not seen for this long are deleted (restarts make new worker ids).
DEPARTED_WORKER_RETENTION_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    worker_id: str
    device: str
    compute_type: str
    model: str
    batch_size: int
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


class Presence:
    def __init__(
        self,
        db: Database,
        identity: WorkerIdentity,
        metrics: Metrics,
        gpu: GpuMemoryProbe | None = None,
        model_id: uuid.UUID | None = None,
        model_problem: str | None = None,
    ) -> None:
        self.db = db
        self.identity = identity
        self.metrics = metrics
        self.gpu = gpu
        # What the worker runs now (it follows the promoted model between jobs).
        self.model = identity.model
        self.model_id = model_id
        self.model_problem = model_problem

    async def started(self) -> None:
        i = self.identity
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO workers (worker_id, hostname, pid, device, compute_type, model,"
                " batch_size, model_id, model_problem) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (worker_id) DO UPDATE SET hostname = EXCLUDED.hostname,"
                " pid = EXCLUDED.pid, device = EXCLUDED.device,"
                " compute_type = EXCLUDED.compute_type, model = EXCLUDED.model,"
                " batch_size = EXCLUDED.batch_size, started_at = now(), last_seen_at = now(),"
                " stopped_at = NULL, current_job_id = NULL, model_id = EXCLUDED.model_id,"
                " model_problem = EXCLUDED.model_problem",
                (
                    i.worker_id,
                    i.hostname,
                    i.pid,
                    i.device,
                    i.compute_type,
                    self.model,
                    i.batch_size,
                    self.model_id,
                    self.model_problem,
                ),
            )
        self._record_beat(None)

    async def beat(self, current_job_id: int | None) -> None:
        memory = await asyncio.to_thread(self.gpu.read) if self.gpu is not None else None
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE workers SET last_seen_at = now(), current_job_id = %s,"
                " gpu_memory_used_bytes = %s, gpu_memory_total_bytes = %s, stopped_at = NULL"
                " WHERE worker_id = %s",
                (
                    current_job_id,
                    memory.used_bytes if memory else None,
                    memory.total_bytes if memory else None,
                    self.identity.worker_id,
                ),
            )
        self._record_beat(memory)

    async def model_changed(
        self, model: str, model_id: uuid.UUID | None, problem: str | None
    ) -> None:
        """The worker switched models, or could not (``problem`` says why)."""
        self.model, self.model_id, self.model_problem = model, model_id, problem
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE workers SET model = %s, model_id = %s, model_problem = %s,"
                " last_seen_at = now() WHERE worker_id = %s",
                (model, model_id, problem, self.identity.worker_id),
            )

    async def job_finished(self, *, succeeded: bool) -> None:
        column = "jobs_done" if succeeded else "jobs_failed"
        async with self.db.connection() as conn:
            await conn.execute(
                f"UPDATE workers SET {column} = {column} + 1, current_job_id = NULL,"  # noqa: S608 - column is one of two literals
                " last_seen_at = now() WHERE worker_id = %s",
                (self.identity.worker_id,),
            )

    async def stopped(self) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE workers SET stopped_at = now(), current_job_id = NULL WHERE worker_id = %s",
                (self.identity.worker_id,),
            )

    def _record_beat(self, memory: GpuMemory | None) -> None:
        worker = self.identity.worker_id
        self.metrics.worker_heartbeats.labels(worker).inc()
        self.metrics.worker_last_heartbeat.labels(worker).set(time.time())
        if memory is not None:
            device = self.identity.device
            self.metrics.gpu_memory_bytes.labels(device, "used").set(memory.used_bytes)
            self.metrics.gpu_memory_bytes.labels(device, "total").set(memory.total_bytes)


async def forget_departed_workers(
    db: Database, *, older_than_s: float = DEPARTED_WORKER_RETENTION_S
) -> int:
    """Delete the rows of workers last seen more than ``older_than_s`` ago."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM workers WHERE last_seen_at < now() - make_interval(secs => %s)",
            (older_than_s,),
        )
        return cur.rowcount
