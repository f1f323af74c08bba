"""The ops endpoint and the queue sampler, over real HTTP on loopback and real PostgreSQL.

The database is made unreachable for real: the test database stops accepting
connections and its sessions are terminated, then it is opened again.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ai2text.runtime import run_roles
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.errors import ConfigError
from pipeline.http_serve import bind_socket
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.ops_http import OpsServer, Readiness
from pipeline.sampler import JOB_STATES, run_sampler, sample_once
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of
from tests.waiting import eventually
from tests.wav import tone_pcm, wav_bytes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def tiny_wav(variant: int) -> bytes:
    """0.2 s of a sine tone; ``variant`` makes the bytes (and so the sha256) distinct."""
    return wav_bytes(tone_pcm(0.2, variant=variant + 1))


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@dataclass
class Ops:
    db: Database
    metrics: Metrics
    readiness: Readiness
    http: httpx.AsyncClient

    async def scrape(self) -> Samples:
        response = await self.http.get("/metrics")
        assert response.status_code == 200, response.text
        return parse(response.text)


@asynccontextmanager
async def ops_server(settings: Settings) -> AsyncIterator[Ops]:
    database = Database(settings.database, embedded=None)
    await database.open()
    metrics = Metrics()
    readiness = Readiness()
    server = OpsServer(
        bind_socket("127.0.0.1", 0), db=database, metrics=metrics, readiness=readiness
    )
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield Ops(database, metrics, readiness, http)
    finally:
        await server.stop()
        await database.close()


@contextmanager
def database_closed(pg_server: Any, database_url: str) -> Iterator[None]:
    """The test database refuses new sessions and its open ones are ended, until the block ends."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def ingest_wavs(settings: Settings, database: Database, metrics: Metrics, n: int) -> None:
    ingestor = ingestor_of(
        settings, database, FilesystemStore(settings.data_dir / "objects"), metrics=metrics
    )
    for i in range(n):
        data = tiny_wav(i + 1)
        result = await ingestor.ingest(
            Arrival("folder", f"t{i}.wav", f"file:///inbox/t{i}.wav", "v1"),
            io.BytesIO(data),
            len(data),
        )
        assert result.outcome == "accepted", result


def test_healthz_and_readyz_answer_and_readyz_waits_for_the_roles_to_start(
    make_settings: Any,
) -> None:
    async def scenario() -> None:
        async with ops_server(make_settings()) as ops:
            health = await ops.http.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})

            starting = await ops.http.get("/readyz")
            assert starting.status_code == 503
            assert starting.json() == {"status": "unavailable", "reason": "starting"}

            ops.readiness.started.set()
            ready = await ops.http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

            ops.readiness.stopping.set()
            stopping = await ops.http.get("/readyz")
            assert stopping.status_code == 503
            assert stopping.json()["reason"] == "stopping"

            assert (await ops.http.get("/nothing-here")).status_code == 404

    asyncio.run(scenario())


def test_readyz_is_503_while_the_database_is_unreachable_and_200_once_it_is_back(
    make_settings: Any, pg_server: Any, database_url: str
) -> None:
    async def readyz(ops: Ops) -> httpx.Response:
        return await ops.http.get("/readyz")

    async def scenario() -> None:
        async with ops_server(make_settings()) as ops:
            ops.readiness.started.set()
            assert (await readyz(ops)).status_code == 200
            with database_closed(pg_server, database_url):
                started = time.monotonic()
                down = await readyz(ops)
                assert down.status_code == 503, down.text
                assert down.json()["status"] == "unavailable"
                assert "database" in down.json()["reason"], down.json()
                # "A short timeout": the probe answers well before a prober gives up.
                assert time.monotonic() - started < 5
                again = await readyz(ops)
                assert again.status_code == 503, again.text
            up = await eventually(
                lambda: _ok(readyz(ops)), timeout=30, what="/readyz 200 after the database is back"
            )
            assert up.json() == {"status": "ready"}

    asyncio.run(scenario())


async def _ok(response: Any) -> httpx.Response | None:
    r: httpx.Response = await response
    return r if r.status_code == 200 else None


def test_metrics_has_every_job_state_and_the_ingest_counters_in_prometheus_text(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    settings = make_settings()

    async def scenario() -> None:
        async with ops_server(settings) as ops:
            await ingest_wavs(settings, ops.db, ops.metrics, 3)
            db.execute(
                "UPDATE jobs SET state = 'dead' WHERE id = (SELECT min(id) FROM jobs)"
            )  # one job in another state, so "queued" must not simply count every job
            db.execute("UPDATE jobs SET run_after = now() - interval '90 seconds'")
            await sample_once(ops.db, ops.metrics, settings.dataset)

            response = await ops.http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE_LATEST
            samples = parse(response.text)
            jobs = {s: value(samples, "ai2text_queue_jobs", state=s) for s in JOB_STATES}
            assert jobs == {"queued": 2, "running": 0, "done": 0, "failed": 0, "dead": 1}
            oldest = value(samples, "ai2text_queue_oldest_queued_seconds")
            assert oldest is not None and 90 <= oldest < 90 + 60
            assert value(samples, "ai2text_files_ingested_total", source="folder") == 3
            assert value(samples, "ai2text_dataset_eligible_audio_seconds", dataset="default") == 0
            assert value(samples, "ai2text_dataset_frozen_audio_seconds", dataset="default") == 0

    asyncio.run(scenario())


def test_sampled_job_states_are_exactly_the_states_the_schema_allows(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    async def migrate() -> None:
        database = Database(make_settings().database, embedded=None)
        await database.open()
        await database.close()

    asyncio.run(migrate())
    row = db.execute(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = 'jobs'::regclass AND contype = 'c' AND conname = 'jobs_state_check'"
    ).fetchone()
    assert row is not None
    allowed = set(re.findall(r"'(\w+)'", str(row["def"])))
    assert allowed == set(JOB_STATES), row["def"]


def test_sampler_counts_database_errors_and_keeps_running_through_an_outage(
    make_settings: Any, pg_server: Any, database_url: str
) -> None:
    settings = make_settings(metrics={"queue_sample_interval_s": 0.1})

    async def scenario() -> None:
        async with ops_server(settings) as ops:
            await ingest_wavs(settings, ops.db, ops.metrics, 1)
            stop = asyncio.Event()
            task = asyncio.create_task(
                run_sampler(
                    ops.db,
                    ops.metrics,
                    settings.dataset,
                    stop,
                    interval_s=settings.metrics.queue_sample_interval_s,
                )
            )

            async def sampled(state: str, n: float) -> bool:
                return value(await ops.scrape(), "ai2text_queue_jobs", state=state) == n

            async def db_errors() -> float:
                found = value(await ops.scrape(), "ai2text_db_errors_total", component="metrics")
                assert not task.done(), "the sampler stopped"
                return found or 0.0

            try:
                await eventually(lambda: sampled("queued", 1), timeout=10, what="queued = 1")
                with database_closed(pg_server, database_url):
                    await eventually(db_errors, timeout=30, what="a counted database error")
                async with ops.db.connection() as conn:  # the pool reconnects...
                    await conn.execute("UPDATE jobs SET state = 'done'")
                # ...and the sampler, still running, sees the change.
                await eventually(lambda: sampled("done", 1), timeout=30, what="done = 1")
                assert value(await ops.scrape(), "ai2text_queue_jobs", state="queued") == 0
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_busy_metrics_port_is_a_config_error_before_anything_starts(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = make_settings(metrics={"port": port}, gateway={"enabled": False})
        with pytest.raises(ConfigError) as refused:
            asyncio.run(run_roles(settings, {"watch"}))
    message = str(refused.value)
    assert f"metrics server cannot listen on 127.0.0.1:{port}" in message
    assert "AI2TEXT_METRICS__PORT" in message
    # Refused before the database was touched: not even the migrations ran.
    assert db.execute("SELECT to_regclass('jobs') AS t").fetchone() == {"t": None}


@pytest.mark.slow
def test_dataset_gauges_follow_eligible_and_frozen_audio(
    make_settings: Any, db: psycopg.Connection[dict[str, Any]]
) -> None:
    from tests.integration.test_datasets import add_transcribed, freeze, opened

    settings = make_settings()

    async def scenario() -> None:
        async with opened(settings) as database:
            metrics = Metrics()
            ids = await add_transcribed(settings, database, db, "jfk.flac")
            row = db.execute("SELECT duration_s FROM audio WHERE id = %s", (ids["jfk.flac"],))
            duration_s = float(row.fetchone()["duration_s"])  # type: ignore[index]
            await sample_once(database, metrics, settings.dataset)
            assert gauge(metrics, "eligible") == pytest.approx(duration_s)
            assert gauge(metrics, "frozen") == 0

            version = await freeze(settings, database)
            await sample_once(database, metrics, settings.dataset)
            assert version.audio_hours * 3600 == pytest.approx(duration_s)
            assert gauge(metrics, "frozen") == pytest.approx(duration_s)
            assert gauge(metrics, "eligible") == pytest.approx(duration_s)

    def gauge(metrics: Metrics, which: str) -> float | None:
        return metrics.registry.get_sample_value(
            f"ai2text_dataset_{which}_audio_seconds", {"dataset": "default"}
        )

    asyncio.run(scenario())
