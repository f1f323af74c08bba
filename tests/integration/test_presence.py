"""Worker presence rows on a real PostgreSQL: heartbeats, GPU memory, clean-up."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.metrics import Metrics
from workers.gpu import GpuMemory, GpuMemoryProbe
from workers.presence import Presence, WorkerIdentity, forget_departed_workers


class FixedGpu(GpuMemoryProbe):
    """Stands in for NVML (no GPU here): a device with 3 of 80 GiB in use."""

    def __init__(self) -> None:
        super().__init__(0)

    def read(self) -> GpuMemory | None:
        return GpuMemory(used_bytes=3 * 2**30, total_bytes=80 * 2**30)


def identity(worker_id: str, device: str = "cuda:0") -> WorkerIdentity:
    return WorkerIdentity(
        worker_id=worker_id, device=device, compute_type="float16", model="m", batch_size=16
    )


def run(settings: Settings, body: Any) -> Any:
    async def scenario() -> Any:
        database = Database(settings.database, embedded=None)
        await database.open()
        try:
            return await body(database)
        finally:
            await database.close()

    return asyncio.run(scenario())


def test_heartbeats_record_gpu_memory_current_job_and_counts(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings()
    metrics = Metrics()

    async def body(database: Database) -> None:  # the database is migrated once opened
        job = db.execute(
            "WITH a AS (INSERT INTO audio (source, original_name, source_uri, state,"
            " storage_key) VALUES ('folder', 'x.wav', 'file:///x.wav', 'queued', 'k')"
            " RETURNING id) INSERT INTO jobs (audio_id, max_attempts) SELECT id, 3 FROM a"
            " RETURNING id"
        ).fetchone()
        assert job is not None
        job_id = job["id"]
        presence = Presence(database, identity("gpu-host:1:0"), metrics, gpu=FixedGpu())
        await presence.started()
        await presence.beat(job_id)
        row = db.execute("SELECT * FROM workers WHERE worker_id = 'gpu-host:1:0'").fetchone()
        assert row is not None
        assert row["current_job_id"] == job_id
        assert row["gpu_memory_used_bytes"] == 3 * 2**30
        assert row["gpu_memory_total_bytes"] == 80 * 2**30
        assert row["last_seen_at"] > row["started_at"]
        await presence.job_finished(succeeded=True)
        await presence.job_finished(succeeded=False)
        await presence.stopped()

    run(settings, body)
    row = db.execute("SELECT * FROM workers WHERE worker_id = 'gpu-host:1:0'").fetchone()
    assert row is not None
    assert (row["jobs_done"], row["jobs_failed"]) == (1, 1)
    assert row["current_job_id"] is None and row["stopped_at"] is not None
    text = metrics.render().decode()
    assert 'ai2text_gpu_memory_bytes{device="cuda:0",kind="used"} 3.221225472e+09' in text
    assert 'ai2text_worker_heartbeats_total{worker="gpu-host:1:0"} 2.0' in text


def test_a_restarted_worker_reuses_its_row(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings()

    async def body(database: Database) -> None:
        first = Presence(database, identity("host:7:0"), Metrics())
        await first.started()
        await first.stopped()
        again = Presence(database, identity("host:7:0", device="cuda:1"), Metrics())
        await again.started()

    run(settings, body)
    rows = db.execute("SELECT * FROM workers WHERE worker_id = 'host:7:0'").fetchall()
    assert len(rows) == 1
    assert rows[0]["stopped_at"] is None and rows[0]["device"] == "cuda:1"


def test_workers_not_seen_for_a_week_are_forgotten(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings()

    async def body(database: Database) -> int:
        for worker_id, seen in (("old:1:0", "8 days"), ("recent:1:0", "6 days"), ("now:1:0", "0")):
            db.execute(
                "INSERT INTO workers (worker_id, hostname, pid, device, compute_type, model,"
                " batch_size, last_seen_at) VALUES (%s, 'h', 1, 'cpu', 'int8', 'm', 1,"
                " now() - %s::interval)",
                (worker_id, seen),
            )
        return await forget_departed_workers(database)

    forgotten = run(settings, body)

    assert forgotten == 1
    left = {r["worker_id"] for r in db.execute("SELECT worker_id FROM workers").fetchall()}
    assert left == {"recent:1:0", "now:1:0"}


def test_without_an_nvidia_driver_gpu_memory_is_none_not_an_error() -> None:
    probe = GpuMemoryProbe(0)
    assert probe.read() is None
    assert probe.read() is None  # gave up once, quietly


@pytest.mark.parametrize(
    ("visible", "cuda_index", "expected"),
    [
        (None, 1, ("index", 1)),
        ("2,3", 1, ("index", 3)),
        ("GPU-aaaa, GPU-bbbb", 1, ("uuid", "GPU-bbbb")),
    ],
)
def test_cuda_index_maps_to_the_physical_gpu_nvml_sees(
    monkeypatch: pytest.MonkeyPatch, visible: str | None, cuda_index: int, expected: Any
) -> None:
    from workers.gpu import _device_handle

    class FakeNvml:
        @staticmethod
        def nvmlDeviceGetHandleByIndex(i: int) -> tuple[str, int]:  # noqa: N802 - NVML's name
            return ("index", i)

        @staticmethod
        def nvmlDeviceGetHandleByUUID(u: str) -> tuple[str, str]:  # noqa: N802 - NVML's name
            return ("uuid", u)

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert _device_handle(FakeNvml, cuda_index) == expected
