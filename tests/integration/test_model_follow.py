"""A real worker follows the promoted model between jobs, on real models and speech.

The worker runs ``tiny.en`` (configured); the registry's candidate is the bundled
``base`` directory, uploaded to a filesystem object store as a training run would
leave it. Promoting it switches the running worker to it between two jobs, without
a restart, and each transcript records the model that made it. A model whose
stored files were damaged, or that does not load, leaves the worker on its model,
with the reason on its row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ai2text.components import follower_of, ingestor_of, sources_of, worker_settings_of
from pipeline import catalog
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.ingest.core import Arrival
from pipeline.metrics import Metrics
from pipeline.models import resolve_model
from pipeline.registry import candidates, records
from pipeline.storage import FilesystemStore
from tests.waiting import eventually
from workers.worker import AsrWorker

Conn = psycopg.Connection[dict[str, Any]]
DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow

METRICS = {
    "trainer": "whisper",
    "wer": {
        "current": {"dev": 0.3, "test": 0.3, "canary": 0.1},
        "candidate": {"dev": 0.2, "test": 0.2, "canary": 0.1},
    },
}


@dataclass
class Running:
    settings: Settings
    database: Database
    store: FilesystemStore
    tmp_path: Path

    async def candidate(self, name: str, files: dict[str, Path | bytes]) -> records.ModelRecord:
        """Register a run's ``model/`` made of ``files`` (links to real files, or bytes)."""
        run_dir = self.tmp_path / name
        (run_dir / "model").mkdir(parents=True)
        for file, content in files.items():
            target = run_dir / "model" / file
            if isinstance(content, Path):
                target.symlink_to(content)
            else:
                target.write_bytes(content)
        (run_dir / "metrics.json").write_text(json.dumps(METRICS))
        base = candidates.BaseModel("tiny.en", None, "")
        model = await candidates.register_run(self.database, self.store, run_dir, base=base)
        assert model is not None
        return model

    async def promote(self, model: records.ModelRecord) -> None:
        async with self.database.connection() as conn:
            await records.promote(conn, str(model.id), actor="test", reason="test")

    async def transcribe(self, name: str, **options: Any) -> dict[str, Any]:
        """Ingest test file ``name``; its transcript row once the worker stored it."""
        path = DATA / name
        ingestor = ingestor_of(self.settings, self.database, self.store, Metrics())
        arrival = Arrival("upload", name, f"upload://test/{name}", None)
        with open(path, "rb") as f:
            result = await ingestor.ingest(arrival, f, path.stat().st_size, options=options)

        async def stored() -> dict[str, Any] | None:
            async with self.database.connection() as conn:
                cur = await conn.execute(
                    "SELECT a.state, a.error, t.model, t.model_id, t.text, t.language"
                    " FROM audio a LEFT JOIN transcripts t ON t.audio_id = a.id"
                    " WHERE a.id = %s AND a.state IN ('transcribed', 'failed')",
                    (result.audio_id,),
                )
                return await cur.fetchone()

        return await eventually(stored, timeout=180, what=f"the outcome of {name}")

    async def worker_row(self) -> dict[str, Any]:
        async with self.database.connection() as conn:
            (row,) = await catalog.list_workers(conn, stale_after_s=60)
        return row


@asynccontextmanager
async def worker_running(settings: Settings, tmp_path: Path) -> AsyncIterator[Running]:
    """One real worker process' worth: its follower, one worker, the shared hub."""
    database = Database(settings.database, embedded=None)
    await database.open()
    stop = asyncio.Event()
    try:
        store = FilesystemStore(settings.data_dir / "objects")
        async with NotificationHub(database) as hub:
            follower = follower_of(settings, database, store, Metrics())
            active = await follower.prepare()
            worker = AsrWorker(
                worker_settings_of(settings),
                database,
                store,
                active.transcriber,
                sources=sources_of(settings),
                metrics=Metrics(),
                worker_id="test:1:0",
                notifications=hub,
                follower=follower,
            )
            task = asyncio.create_task(worker.run(stop))
            try:
                yield Running(settings, database, store, tmp_path)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
    finally:
        await database.close()


def settings_for(make_settings: Any, tmp_path: Path, **asr: Any) -> Settings:
    settings: Settings = make_settings(
        asr={
            **asr,
            "model": "tiny.en",
            "model_cache_dir": tmp_path / "cache",
            "device": "cpu",
            "cpu_threads": 2,
            "concurrency": 1,
        },
        queue={"poll_interval_s": 30},  # a switch must come from the NOTIFY, not the poll
    )
    return settings


def normalised(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_a_running_worker_switches_to_the_promoted_model_between_two_jobs(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = settings_for(make_settings, tmp_path)
    base_dir = Path(resolve_model("base"))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], records.ModelRecord]:
        async with worker_running(settings, tmp_path) as running:
            new = await running.candidate(
                "new", {p.name: p for p in base_dir.iterdir() if not p.name.startswith(".")}
            )
            before = await running.transcribe("jfk.flac")
            assert (await running.worker_row())["model"] == "tiny.en"
            await running.promote(new)

            async def switched() -> dict[str, Any] | None:
                row = await running.worker_row()
                return row if row["model"] == new.name else None

            row = await eventually(switched, timeout=120, what="the worker on the new model")
            assert row["model_id"] == new.id and row["model_problem"] is None
            after = await running.transcribe("hotwords.mp3")
            return before, after, new

    before, after, new = asyncio.run(scenario())
    assert before["model"] == "tiny.en" and before["model_id"] is None
    assert "ask not what your country can do for you" in normalised(before["text"])
    assert after["model"] == new.name and after["model_id"] == new.id
    assert after["text"].strip()
    # The worker fetched a checked copy into its cache; the upload is in the store.
    cached = tmp_path / "cache" / "registry" / str(new.id) / "model.bin"
    assert cached.stat().st_size == (base_dir / "model.bin").stat().st_size


def test_a_damaged_or_unloadable_model_leaves_the_worker_on_its_model_saying_why(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = settings_for(make_settings, tmp_path)
    tiny = Path(resolve_model("tiny.en"))

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        problems = []
        async with worker_running(settings, tmp_path) as running:
            damaged = await running.candidate(
                "damaged",
                {p.name: p for p in tiny.iterdir() if p.is_file() and not p.name.startswith(".")},
            )
            # The upload is changed afterwards: same size, other bytes.
            stored = settings.data_dir / "objects" / damaged.prefix / "config.json"
            text = stored.read_bytes()
            stored.write_bytes(text.replace(b"{", b"[", 1))
            unloadable = await running.candidate(
                "unloadable",
                {"model.bin": b"not a model", "config.json": b"{}", "tokenizer.json": b"{}"},
            )
            for model in (damaged, unloadable):
                await running.promote(model)

                async def reported(name: str = model.name) -> str | None:
                    problem = (await running.worker_row())["model_problem"]
                    return problem if problem and name in problem else None

                problems.append(
                    await eventually(reported, timeout=120, what=f"why {model.name} is not run")
                )
                row = await running.worker_row()
                assert row["model"] == "tiny.en" and row["model_id"] is None
            # A worker process starting now runs the configured model, and says why.
            starting = follower_of(settings, running.database, running.store, Metrics())
            assert (await starting.prepare()).name == "tiny.en"
            assert starting.problem is not None and unloadable.name in starting.problem
            return problems, await running.transcribe("jfk.flac")

    (damaged, unloadable), transcript = asyncio.run(scenario())
    assert "config.json does not match its recorded sha256" in damaged
    assert "cannot load Whisper model" in unloadable
    assert transcript["model"] == "tiny.en" and transcript["model_id"] is None
    assert "ask not what your country can do for you" in normalised(transcript["text"])


def test_a_job_may_ask_for_another_installed_model_loaded_for_it(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = settings_for(make_settings, tmp_path, extra_models=("base",))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with worker_running(settings, tmp_path) as running:
            asked = await running.transcribe("speech_de.flac", model="base")
            default = await running.transcribe("jfk.flac")
            unknown = await running.transcribe("hotwords.mp3", model="no-such-model")
            return asked, default, unknown

    asked, default, unknown = asyncio.run(scenario())
    # tiny.en is English only: only base could have heard German.
    assert asked["model"] == "base" and asked["model_id"] is None
    assert asked["language"] == "de" and asked["text"].strip()
    assert default["model"] == "tiny.en" and default["language"] == "en"
    assert unknown["state"] == "failed" and unknown["model"] is None
    assert "model 'no-such-model' is not installed here" in unknown["error"]
