"""Content sent again is not answered with a transcript by a model the workers no longer run.

A real gateway in-process on loopback, real PostgreSQL, real RS256 tokens; uploads go
through ``POST /v1/audio`` and the OpenAI endpoint (``whisper-1``, which follows the
workers' model). No model runs: each job is claimed and saved as a worker does
(``jobs.claim``, ``workers.results.save_transcription``), recorded as made by the
model named, so each test says which model "wrote" what. Promotions and rollbacks go
through the registry's own functions.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pipeline.config import Settings
from pipeline.db import audio as audio_store
from pipeline.db import jobs
from pipeline.db.audio import NewContent, RemoteObject, StoredContent
from pipeline.db.database import Database
from pipeline.ingest.core import Arrival
from pipeline.media import AudioInfo, HeadInfo
from pipeline.registry import records
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of
from tests.e2e.gateway_harness import Signer, bearer, new_rsa_key
from tests.integration.served_gateway import gateway, workerless_settings
from workers.fetch import Fetched, adopt
from workers.results import save_transcription
from workers.transcription import Segment, TranscribeOptions, Transcription

Conn = psycopg.Connection[dict[str, Any]]
DATA = Path(__file__).resolve().parents[1] / "data"
SPEECH = DATA / "speech_fr.flac"
SCOPES = ("audio:read", "audio:write", "transcripts:read", "transcripts:write")


@dataclass(frozen=True)
class Ran:
    """What a worker reports about the model that made a transcript (none is loaded)."""

    model_name: str
    device: str = "cpu"
    compute_type: str = "int8"
    batch_size: int = 1
    device_label: str = "cpu"

    def load(self) -> None:
        """Nothing to load: the text is given."""

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        raise AssertionError("no model runs in these tests")


@dataclass
class Service:
    settings: Settings
    http: httpx.AsyncClient
    headers: dict[str, str]
    database: Database
    store: FilesystemStore

    async def upload(self) -> dict[str, Any]:
        """``POST /v1/audio`` with the test speech: its id, outcome and duplicate_of."""
        answer = await self.http.post(
            "/v1/audio", files={"file": ("speech.flac", SPEECH.read_bytes())}, headers=self.headers
        )
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    async def openai(self, model: str = "whisper-1") -> httpx.Response:
        """The OpenAI endpoint with the test speech (no wait: 504 while it is queued)."""
        return await self.http.post(
            "/v1/audio/transcriptions",
            files={"file": ("speech.flac", SPEECH.read_bytes())},
            data={"model": model, "response_format": "json"},
            headers=self.headers,
        )

    async def detail(self, audio_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/v1/audio/{audio_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def work_one(
        self, text: str, *, model: str = "tiny.en", model_id: uuid.UUID | None = None
    ) -> str:
        """Claim the next job and store ``text`` as ``model``'s transcript; its audio id."""
        async with self.database.connection() as conn:
            job = await jobs.claim(conn, worker_id="test:1:0", lease_s=60)
        assert job is not None and job.storage_key is not None
        result = Transcription(
            language="fr",
            language_probability=0.99,
            audio_duration_s=4.0,
            processing_s=1.0,
            segments=[Segment(0.0, 4.0, text, avg_logprob=-0.2, no_speech_prob=0.01)],
        )
        await save_transcription(
            self.database,
            self.store,
            job,
            result,
            storage_key=job.storage_key,
            transcriber=Ran(model),
            worker_id="test:1:0",
            model_id=model_id,
        )
        return str(job.audio_id)

    async def promote_new_model(self, name: str) -> records.ModelRecord:
        new = records.NewModel(
            id=uuid.uuid4(),
            name=name,
            base_model="tiny.en",
            base_model_id=None,
            dataset_version_id=None,
            run_id=None,
            metrics={},
            prefix=f"models/{name}/",
            files=[records.ModelFile("model.bin", 1, "0" * 64)],
        )
        async with self.database.connection() as conn:
            await records.register(conn, new)
            return await records.promote(conn, name, actor="test", reason="test")

    async def roll_back(self) -> None:
        async with self.database.connection() as conn:
            await records.rollback(conn, actor="test")


@asynccontextmanager
async def service(tmp_path: Path, database_url: str) -> AsyncIterator[Service]:
    signer = Signer(new_rsa_key())
    settings = workerless_settings(tmp_path, database_url, signer)
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        async with (
            gateway(settings) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            headers = bearer(signer.token(*SCOPES, tenant="acme"))
            store = FilesystemStore(settings.data_dir / "objects")
            yield Service(settings, http, headers, database, store)
    finally:
        await database.close()


def jobs_of(db: Conn, audio_id: str) -> list[str]:
    rows = db.execute("SELECT state FROM jobs WHERE audio_id = %s", (audio_id,)).fetchall()
    return [r["state"] for r in rows]


def test_after_a_promotion_content_sent_again_is_transcribed_again_by_the_new_model(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with service(tmp_path, database_url) as svc:
            first = await svc.upload()
            assert first["outcome"] == "accepted"
            await svc.work_one("written by tiny.en")
            again = await svc.upload()
            assert again["outcome"] == "duplicate" and again["duplicate_of"] == first["id"]
            reused = await svc.openai()
            assert reused.status_code == 200 and reused.json()["text"] == "written by tiny.en"

            model = await svc.promote_new_model("tuned-1")
            after = await svc.upload()
            assert after["outcome"] == "accepted", after  # not the old model's transcript
            assert jobs_of(db, after["id"]) == ["queued"]
            shown = await svc.detail(after["id"])
            assert shown["variant_of"] == first["id"] and shown["duplicate_of"] is None
            assert shown["state"] == "queued"
            # Queued, it will run on the promoted model: the next copy waits for it.
            waiting = await svc.openai()
            assert waiting.status_code == 504, waiting.text

            made = await svc.work_one("written by tuned-1", model="tuned-1", model_id=model.id)
            assert made == after["id"]
            fresh = await svc.openai()
            assert fresh.status_code == 200 and fresh.json()["text"] == "written by tuned-1"
            copy = await svc.upload()
            assert copy["outcome"] == "duplicate" and copy["duplicate_of"] == after["id"]
            # The earlier transcript stays as it was.
            kept = await svc.http.get(f"/v1/audio/{first['id']}/transcript", headers=svc.headers)
            assert kept.json()["text"] == "written by tiny.en"
            assert kept.json()["model"] == "tiny.en"

            # Rolled back, the configured model runs again: its transcript is current again.
            await svc.roll_back()
            back = await svc.upload()
            assert back["outcome"] == "duplicate" and back["duplicate_of"] == first["id"]

    asyncio.run(scenario())
    counted = db.execute("SELECT count(*) AS n FROM jobs").fetchone()
    assert counted == {"n": 2}


def test_a_persons_correction_of_an_earlier_models_transcript_is_reused(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with service(tmp_path, database_url) as svc:
            first = await svc.upload()
            await svc.work_one("writen by tiny en")
            corrected = await svc.http.put(
                f"/v1/audio/{first['id']}/transcript",
                json={"segments": [{"idx": 0, "text": "Corrected by a person."}]},
                headers=svc.headers,
            )
            assert corrected.status_code == 200, corrected.text
            await svc.promote_new_model("tuned-1")
            again = await svc.upload()
            assert again["outcome"] == "duplicate" and again["duplicate_of"] == first["id"]
            reused = await svc.openai()
            assert reused.status_code == 200 and reused.json()["text"] == "Corrected by a person."

    asyncio.run(scenario())
    counted = db.execute("SELECT count(*) AS n FROM jobs").fetchone()
    assert counted == {"n": 1}


def test_content_queued_before_a_promotion_is_shared_as_it_will_run_on_the_new_model(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with service(tmp_path, database_url) as svc:
            first = await svc.upload()
            model = await svc.promote_new_model("tuned-1")
            again = await svc.upload()
            assert again["outcome"] == "duplicate" and again["duplicate_of"] == first["id"]
            await svc.work_one("written by tuned-1", model="tuned-1", model_id=model.id)
            reused = await svc.openai()
            assert reused.status_code == 200 and reused.json()["text"] == "written by tuned-1"

    asyncio.run(scenario())


def test_a_request_naming_a_model_reuses_that_models_transcript_after_a_promotion(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    async def scenario() -> None:
        async with service(tmp_path, database_url) as svc:
            await svc.promote_new_model("tuned-1")
            # While tuned-1 is promoted, tiny.en is still offered by name.
            queued = await svc.openai("tiny.en")
            assert queued.status_code == 504, queued.text
            await svc.work_one("written by tiny.en")
            named = await svc.openai("tiny.en")
            assert named.status_code == 200 and named.json()["text"] == "written by tiny.en"

    asyncio.run(scenario())
    rows = db.execute("SELECT j.options->>'model' AS model FROM jobs j").fetchall()
    assert rows == [{"model": "tiny.en"}]


def test_a_flood_sends_content_held_under_an_earlier_model_to_the_one_file_path(
    tmp_path: Path, database_url: str
) -> None:
    """The batched path takes only new content; the one-file path decides about the rest."""

    async def scenario() -> set[int]:
        async with service(tmp_path, database_url) as svc:
            first = await svc.upload()
            await svc.work_one("written by tiny.en")
            await svc.promote_new_model("tuned-1")
            async with svc.database.connection() as conn:
                cur = await conn.execute(
                    "SELECT sha256, storage_key FROM audio WHERE id = %s", (first["id"],)
                )
                held = await cur.fetchone()
                assert held is not None
                info = AudioInfo("flac", "flac", 16000, 1, 4.0)
                items = [
                    NewContent(
                        Arrival("folder", name, f"/inbox/{name}", "v1", tenant="acme"),
                        StoredContent(sha, str(held["storage_key"]), info),
                        size=10,
                    )
                    for name, sha in (("held.flac", str(held["sha256"])), ("new.flac", "a" * 64))
                ]
                return await audio_store.needing_care(conn, items)

    assert asyncio.run(scenario()) == {0}


def test_an_object_fetched_from_a_bucket_after_a_promotion_is_transcribed_again(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    """The worker's own dedupe (content known only once fetched) decides the same way."""

    async def fetched_again(svc: Service, key: str, held: dict[str, Any]) -> uuid.UUID | None:
        """A bucket object with the held bytes: recorded, claimed, fetched, adopted."""
        ingestor = ingestor_of(svc.settings, svc.database, svc.store)
        arrival = Arrival("s3", key, f"s3://in/{key}", "etag-1", tenant="acme")
        head = HeadInfo("flac", "flac", 16000, 1, None)
        await ingestor.record_remote(arrival, RemoteObject("in", key, "etag-1", 10), head)
        async with svc.database.connection() as conn:
            job = await jobs.claim(conn, worker_id="test:1:0", lease_s=60)
        assert job is not None and job.source_key == key
        info = AudioInfo("flac", "flac", 16000, 1, 4.0)
        found = Fetched(tmp_path / key, str(held["sha256"]), str(held["storage_key"]), info)
        return await adopt(svc.database, job, found)

    async def scenario() -> tuple[str, str, str]:
        async with service(tmp_path, database_url) as svc:
            first = await svc.upload()
            await svc.work_one("written by tiny.en")
            held = db.execute(
                "SELECT sha256, storage_key FROM audio WHERE id = %s", (first["id"],)
            ).fetchone()
            assert held is not None
            assert str(await fetched_again(svc, "a.flac", held)) == first["id"]
            await svc.promote_new_model("tuned-1")
            assert await fetched_again(svc, "b.flac", held) is None  # the worker transcribes it
            return first["id"], "s3://in/a.flac", "s3://in/b.flac"

    first, copy_uri, variant_uri = asyncio.run(scenario())
    rows = {
        r["source_uri"]: r
        for r in db.execute(
            "SELECT a.source_uri, a.state, a.duplicate_of, a.variant_of, j.state AS job"
            " FROM audio a JOIN jobs j ON j.audio_id = a.id WHERE a.source = 's3'"
        ).fetchall()
    }
    assert str(rows[copy_uri]["duplicate_of"]) == first and rows[copy_uri]["state"] == "duplicate"
    assert rows[copy_uri]["job"] == "done"
    variant = rows[variant_uri]
    assert str(variant["variant_of"]) == first and variant["duplicate_of"] is None
    assert variant["state"] == "processing" and variant["job"] == "running"
