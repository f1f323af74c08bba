"""The registry over real HTTP with real RS256 tokens: admins list, promote and roll
back; a tenant's token may not. ``/v1/models`` and the OpenAI endpoint's ``model``
offer a trained candidate to its own tenant (and admins) only, and a request naming
it queues a job that carries the model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.registry import candidates, records
from pipeline.storage import FilesystemStore
from tests.e2e.gateway_harness import (
    PROBLEM,
    Signer,
    bearer,
    new_rsa_key,
)
from tests.integration.served_gateway import gateway, workerless_settings

Conn = psycopg.Connection[dict[str, Any]]
DATA = Path(__file__).resolve().parents[1] / "data"


def metrics(test: tuple[float, float]) -> str:
    wer = {
        "current": {"dev": 0.3, "test": test[0], "canary": 0.1},
        "candidate": {"dev": 0.2, "test": test[1], "canary": 0.1},
    }
    return json.dumps({"trainer": "whisper", "wer": wer})


async def register(
    settings: Settings,
    tmp_path: Path,
    name: str,
    test: tuple[float, float],
    tenant: str,
    base: candidates.BaseModel | None = None,
) -> records.ModelRecord:
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        run_dir = tmp_path / name
        (run_dir / "model").mkdir(parents=True)
        for file in ("model.bin", "config.json", "tokenizer.json"):
            (run_dir / "model" / file).write_text(name)
        (run_dir / "metrics.json").write_text(metrics(test))
        model = await candidates.register_run(
            database,
            FilesystemStore(settings.data_dir / "objects"),
            run_dir,
            base=base or candidates.BaseModel("tiny.en", None, ""),
            tenant=tenant,
        )
        assert model is not None
        return model
    finally:
        await database.close()


def test_only_admins_see_and_change_the_registry(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    admin = bearer(signer.token("admin", sub="ops"))
    tenant = bearer(signer.token("audio:read", "audio:write", "transcripts:read", tenant="acme"))
    settings = workerless_settings(tmp_path, database_url, signer)

    async def scenario() -> None:
        async with (
            gateway(settings) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            good = await register(settings, tmp_path, "good", (0.3, 0.2), "acme")
            bad = await register(settings, tmp_path, "bad", (0.3, 0.4), "acme")
            assert (await http.get("/v1/models/registry")).status_code == 401
            for method, path in (
                ("GET", "/v1/models/registry"),
                ("POST", f"/v1/models/registry/{good.id}/promote"),
                ("POST", "/v1/models/registry/rollback"),
            ):
                refused = await http.request(method, path, headers=tenant)
                assert refused.status_code == 403, (path, refused.text)
            assert db.execute(
                "SELECT count(*) AS n FROM model_events WHERE action <> 'registered'"
            ).fetchone() == {"n": 0}

            listed = (await http.get("/v1/models/registry", headers=admin)).json()["items"]
            assert {m["name"]: m["state"] for m in listed} == {
                good.name: "candidate",
                bad.name: "candidate",
            }
            entry = next(m for m in listed if m["name"] == good.name)
            assert entry["metrics"]["wer"]["candidate"]["test"] == 0.2
            assert entry["tenant"] == "acme" and entry["size_bytes"] > 0

            worse = await http.post(f"/v1/models/registry/{bad.name}/promote", headers=admin)
            assert worse.status_code == 409
            assert worse.headers["content-type"] == PROBLEM
            assert "test WER 0.4000 against 0.3000" in worse.json()["detail"]
            missing = await http.post("/v1/models/registry/nope/promote", headers=admin)
            assert missing.status_code == 404

            better = await http.post(f"/v1/models/registry/{good.id}/promote", headers=admin)
            assert better.status_code == 200, better.text
            assert better.json()["model"]["state"] == "promoted"
            assert better.json()["model"]["promoted_by"] == "api:ops"
            forced = await http.post(
                f"/v1/models/registry/{bad.id}/promote", json={"force": True}, headers=admin
            )
            assert forced.status_code == 200, forced.text
            assert forced.json()["reason"].startswith("forced by api:ops")

            back = await http.post("/v1/models/registry/rollback", headers=admin)
            assert back.status_code == 200, back.text
            assert back.json()["retired"]["name"] == bad.name
            assert back.json()["promoted"]["name"] == good.name
            await http.post("/v1/models/registry/rollback", headers=admin)
            none_left = await http.post("/v1/models/registry/rollback", headers=admin)
            assert none_left.status_code == 409
            assert "no model is promoted" in none_left.json()["detail"]

    asyncio.run(scenario())


def test_a_candidate_is_offered_to_its_own_tenant_and_its_requests_carry_it(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    writes = ("audio:read", "audio:write", "transcripts:read")
    acme = bearer(signer.token(*writes, tenant="acme"))
    globex = bearer(signer.token(*writes, tenant="globex"))
    admin = bearer(signer.token("admin"))
    settings = workerless_settings(tmp_path, database_url, signer)
    audio = (DATA / "jfk.flac").read_bytes()

    async def scenario() -> None:
        async with (
            gateway(settings) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            trained = await register(settings, tmp_path, "acme-model", (0.3, 0.2), "acme")

            async def names(headers: dict[str, str]) -> set[str]:
                answer = await http.get("/v1/models", headers=headers)
                assert answer.status_code == 200, answer.text
                return {m["id"] for m in answer.json()["data"]}

            assert await names(acme) == {"tiny.en", "whisper-1", trained.name}
            assert await names(admin) == {"tiny.en", "whisper-1", trained.name}
            assert await names(globex) == {"tiny.en", "whisper-1"}

            other = await http.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": trained.name},
                headers=globex,
            )
            assert other.status_code == 404
            assert other.json()["error"]["code"] == "model_not_found"
            assert db.execute("SELECT count(*) AS n FROM audio").fetchone() == {"n": 0}

            own = await http.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": trained.name},
                headers=acme,
            )
            assert own.status_code == 504, own.text  # queued; no worker runs in this test
            plain = await http.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": "whisper-1"},
                headers=acme,
            )
            assert plain.status_code == 504, plain.text

            # The candidate has the languages of the model it descends from (tiny.en,
            # through a fine-tune of a fine-tune): German and translation are refused
            # before anything is stored, naming the model asked for.
            child = await register(
                settings,
                tmp_path,
                "acme-child",
                (0.2, 0.1),
                "acme",
                base=candidates.BaseModel(trained.name, trained.id, ""),
            )
            for name in (trained.name, child.name):
                german = await http.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("de.flac", (DATA / "speech_de.flac").read_bytes())},
                    data={"model": name, "language": "de"},
                    headers=acme,
                )
                assert german.status_code == 422, german.text
                message = german.json()["error"]["message"]
                assert message.startswith(
                    f"model {name} (trained from tiny.en) transcribes English only;"
                    " language 'de' was requested"
                ), message
                translated = await http.post(
                    "/v1/audio/translations",
                    files={"file": ("de.flac", (DATA / "speech_de.flac").read_bytes())},
                    data={"model": name},
                    headers=acme,
                )
                assert translated.status_code == 400, translated.text
                error = translated.json()["error"]
                assert error["code"] == "model_cannot_translate", error
                assert error["message"].startswith(f"model {name} knows only 'en'"), error

    asyncio.run(scenario())
    # Two jobs: the same audio with another model is another transcription of it.
    rows = db.execute(
        "SELECT j.options->>'model' AS model FROM jobs j JOIN audio a ON a.id = j.audio_id"
        " WHERE a.tenant = 'acme' ORDER BY j.id"
    ).fetchall()
    first = db.execute("SELECT name FROM models WHERE base_model_id IS NULL").fetchone()
    assert first is not None
    assert [r["model"] for r in rows] == [first["name"], None]
    # Where a candidate came from is read for the check, not kept in the job's options.
    assert db.execute(
        "SELECT count(*) AS n FROM jobs WHERE options ? 'trained_from'"
    ).fetchone() == {"n": 0}
