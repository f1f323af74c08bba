"""``/v1/webhooks`` over real HTTP with real RS256 tokens: tenants see and manage their
own endpoints and deliveries only, secrets are shown once, unsafe URLs are refused."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pipeline.config import Settings
from pipeline.db import deliveries
from pipeline.db.database import Database
from tests.e2e.gateway_harness import (
    Signer,
    bearer,
    new_rsa_key,
)
from tests.integration.served_gateway import gateway, gateway_settings

Conn = psycopg.Connection[dict[str, Any]]
PUBLIC_URL = "https://93.184.215.14/hooks/ai2text"  # a literal public address: no DNS


def settings_for(tmp_path: Path, database_url: str, signer: Signer) -> Settings:
    return gateway_settings(tmp_path, database_url, signer)


def transcribed(conn: Conn, name: str, tenant: str) -> uuid.UUID:
    digest = hashlib.sha256(name.encode()).hexdigest()
    row = conn.execute(
        "INSERT INTO audio"
        " (tenant, source, original_name, source_uri, state, sha256, storage_key)"
        " VALUES (%s, 'upload', %s, %s, 'transcribed', %s, %s) RETURNING id",
        (tenant, name, f"upload://{name}", digest, f"audio/{digest}"),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def test_tenants_manage_only_their_own_webhooks(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    acme = bearer(signer.token("webhooks:manage", tenant="acme"))
    globex = bearer(signer.token("webhooks:manage", tenant="globex"))
    admin = bearer(signer.token("admin"))
    reader = bearer(signer.token("audio:read", tenant="acme"))

    async def scenario() -> None:
        async with (
            gateway(settings_for(tmp_path, database_url, signer)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            assert (await http.get("/v1/webhooks", headers=reader)).status_code == 403
            assert (await http.get("/v1/webhooks")).status_code == 401

            created = await http.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=acme)
            assert created.status_code == 201, created.text
            hook = created.json()
            assert hook["tenant"] == "acme" and hook["origin"] == "api" and hook["enabled"]
            assert len(hook["secret"]) >= 32  # generated, shown this once
            assert hook["event_types"] == ["audio.transcribed", "audio.failed", "audio.rejected"]
            chosen = await http.post(
                "/v1/webhooks",
                json={
                    "url": PUBLIC_URL + "/2",
                    "secret": "x" * 20,
                    "events": ["audio.failed"],
                },
                headers=globex,
            )
            assert chosen.status_code == 201 and chosen.json()["secret"] == "x" * 20

            again = await http.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=acme)
            assert again.status_code == 409
            assert again.headers["content-type"] == "application/problem+json"
            for refused in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "ftp://x/y"):
                answer = await http.post("/v1/webhooks", json={"url": refused}, headers=acme)
                assert answer.status_code == 422, (refused, answer.text)
            private = await http.post(
                "/v1/webhooks", json={"url": "http://10.0.0.5/hook"}, headers=acme
            )
            assert "non-public address" in private.json()["detail"]
            other = await http.post(
                "/v1/webhooks", json={"url": PUBLIC_URL, "tenant": "acme"}, headers=globex
            )
            assert other.status_code == 403

            listed = (await http.get("/v1/webhooks", headers=acme)).json()["items"]
            assert [w["id"] for w in listed] == [hook["id"]]
            assert "secret" not in listed[0]
            everyone = (await http.get("/v1/webhooks", headers=admin)).json()["items"]
            assert {w["tenant"] for w in everyone} == {"acme", "globex"}
            assert all("secret" not in w for w in everyone)

            # acme's audio: a delivery to acme's endpoint only (globex wants failures).
            transcribed(db, "acme.wav", "acme")
            mine = (await http.get("/v1/webhooks/deliveries", headers=acme)).json()["items"]
            assert [(d["target"], d["state"]) for d in mine] == [
                (f"webhook:{hook['id']}", "pending")
            ]
            assert mine[0]["original_name"] == "acme.wav"
            assert (await http.get("/v1/webhooks/deliveries", headers=globex)).json() == {
                "items": []
            }
            event_id = mine[0]["event_id"]
            db.execute("UPDATE deliveries SET state = 'dead', last_error = 'answered 500'")
            dead = await http.get("/v1/webhooks/deliveries?state=dead", headers=acme)
            assert [d["last_error"] for d in dead.json()["items"]] == ["answered 500"]

            retry = f"/v1/webhooks/deliveries/{event_id}/retry"
            assert (await http.post(retry, headers=globex)).status_code == 404
            retried = await http.post(retry, headers=acme)
            assert retried.status_code == 200
            assert [(d["state"], d["attempts"]) for d in retried.json()["items"]] == [
                ("pending", 0)
            ]
            assert (await http.post(retry, headers=acme)).status_code == 409  # nothing dead

            assert (
                await http.delete(f"/v1/webhooks/{hook['id']}", headers=globex)
            ).status_code == 404
            assert (
                await http.delete(f"/v1/webhooks/{hook['id']}", headers=acme)
            ).status_code == 204
            assert (await http.get("/v1/webhooks", headers=acme)).json() == {"items": []}
            # Its pending delivery went with it.
            assert (await http.get("/v1/webhooks/deliveries", headers=acme)).json() == {"items": []}

    asyncio.run(scenario())


def test_configured_webhooks_cannot_be_deleted_through_the_api(
    tmp_path: Path, database_url: str
) -> None:
    signer = Signer(new_rsa_key())
    admin = bearer(signer.token("admin"))
    settings = settings_for(tmp_path, database_url, signer)
    configured = Settings(
        deliveries={"webhooks": [{"url": PUBLIC_URL, "secret": "c" * 16, "tenant": "acme"}]}
    )

    async def scenario() -> None:
        async with gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            db = Database(settings.database, embedded=None)
            await db.open()
            try:
                async with db.connection() as conn:
                    await deliveries.sync_config_webhooks(conn, configured.deliveries.webhooks)
            finally:
                await db.close()
            listed = (await http.get("/v1/webhooks", headers=admin)).json()["items"]
            assert [(w["origin"], w["url"]) for w in listed] == [("config", PUBLIC_URL)]
            answer = await http.delete(f"/v1/webhooks/{listed[0]['id']}", headers=admin)
            assert answer.status_code == 409
            assert "settings" in answer.json()["detail"]

    asyncio.run(scenario())


def test_an_endpoint_is_changed_in_place_and_a_rotated_secret_is_shown_once(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    acme = bearer(signer.token("webhooks:manage", tenant="acme"))
    globex = bearer(signer.token("webhooks:manage", tenant="globex"))
    settings = settings_for(tmp_path, database_url, signer)
    configured = Settings(
        deliveries={"webhooks": [{"url": PUBLIC_URL + "/cfg", "secret": "c" * 16}]}
    )

    def secret_of(hook_id: str) -> str:
        row = db.execute("SELECT secret FROM webhooks WHERE id = %s", (hook_id,)).fetchone()
        assert row is not None
        return str(row["secret"])

    async def scenario() -> None:
        async with gateway(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            hook = (await http.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=acme)).json()
            taken = await http.post("/v1/webhooks", json={"url": PUBLIC_URL + "/b"}, headers=acme)
            assert taken.status_code == 201
            path = f"/v1/webhooks/{hook['id']}"

            moved = await http.patch(
                path,
                json={"url": PUBLIC_URL + "/new", "events": ["audio.failed"], "enabled": False},
                headers=acme,
            )
            assert moved.status_code == 200, moved.text
            body = moved.json()
            assert (body["url"], body["event_types"], body["enabled"]) == (
                PUBLIC_URL + "/new",
                ["audio.failed"],
                False,
            )
            assert body["secret"] is None  # not rotated: not shown
            assert secret_of(hook["id"]) == hook["secret"]
            listed = (await http.get("/v1/webhooks", headers=acme)).json()["items"]
            assert {(w["url"], w["enabled"]) for w in listed} == {
                (PUBLIC_URL + "/new", False),
                (PUBLIC_URL + "/b", True),
            }

            rotated = await http.patch(path, json={"rotate_secret": True}, headers=acme)
            assert rotated.status_code == 200
            new_secret = rotated.json()["secret"]
            assert len(new_secret) >= 32 and new_secret != hook["secret"]
            assert secret_of(hook["id"]) == new_secret
            assert rotated.json()["url"] == PUBLIC_URL + "/new"  # the rest as it was
            chosen = await http.patch(path, json={"secret": "s" * 24}, headers=acme)
            assert chosen.json()["secret"] == "s" * 24 and secret_of(hook["id"]) == "s" * 24
            assert "secret" not in (await http.get("/v1/webhooks", headers=acme)).json()["items"][0]

            # Refused, with a reason, and nothing changed.
            cases: list[tuple[dict[str, Any], int, str]] = [
                ({"url": "http://127.0.0.1:9/hook"}, 422, "refused"),
                ({"url": PUBLIC_URL + "/b"}, 409, "already has"),
                ({"secret": "s" * 20, "rotate_secret": True}, 400, "not both"),
                ({}, 400, "nothing to change"),
                ({"events": []}, 400, "events"),
                ({"events": ["audio.exploded"]}, 400, "events"),
                ({"secret": "short"}, 400, "secret"),
                ({"colour": "red"}, 400, "colour"),
            ]
            for change, status, reason in cases:
                answer = await http.patch(path, json=change, headers=acme)
                assert answer.status_code == status, (change, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert reason in answer.text, (change, answer.text)
            row = db.execute(
                "SELECT url, enabled, secret FROM webhooks WHERE id = %s", (hook["id"],)
            ).fetchone()
            assert row == {"url": PUBLIC_URL + "/new", "enabled": False, "secret": "s" * 24}

            # Another tenant's endpoint does not exist for it; a configured one is not ours.
            assert (await http.patch(path, json={"enabled": True}, headers=globex)).status_code == (
                404
            )
            missing = f"/v1/webhooks/{uuid.uuid4()}"
            assert (
                await http.patch(missing, json={"enabled": True}, headers=acme)
            ).status_code == (404)
            gate = Database(settings.database, embedded=None)
            await gate.open()
            try:
                async with gate.connection() as conn:
                    await deliveries.sync_config_webhooks(conn, configured.deliveries.webhooks)
            finally:
                await gate.close()
            admin = bearer(signer.token("admin"))
            cfg = next(
                w
                for w in (await http.get("/v1/webhooks", headers=admin)).json()["items"]
                if w["origin"] == "config"
            )
            refused = await http.patch(
                f"/v1/webhooks/{cfg['id']}", json={"enabled": False}, headers=admin
            )
            assert refused.status_code == 409 and "settings" in refused.json()["detail"]

    asyncio.run(scenario())


def test_ai2text_webhooks_set_changes_an_endpoint_and_says_why_it_will_not(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    import json
    import os
    import subprocess
    import sys

    from pipeline.db.migrate import migrate
    from tests.e2e.harness import REPO

    with psycopg.connect(database_url) as conn:
        migrate(conn)
    ids = [
        db.execute(
            "INSERT INTO webhooks (tenant, url, secret, origin) VALUES ('acme', %s, %s, %s)"
            " RETURNING id",
            (PUBLIC_URL + f"/{n}", "k" * 20, origin),
        ).fetchone()["id"]  # type: ignore[index]
        for n, origin in enumerate(("api", "config"))
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    env |= {"AI2TEXT_DATABASE__URL": database_url, "AI2TEXT_DATA_DIR": str(tmp_path / "data")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ai2text", "webhooks", "set", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    api_hook, config_hook = (str(i) for i in ids)
    done = cli(api_hook[:8], "--disable", "--events", "audio.failed", "--json")
    assert done.returncode == 0, done.stderr
    changed = json.loads(done.stdout)
    assert (changed["enabled"], changed["event_types"], changed["secret"]) == (
        False,
        ["audio.failed"],
        None,
    )
    rotated = cli(api_hook, "--rotate-secret", "--enable")
    assert rotated.returncode == 0, rotated.stderr
    assert "enabled" in rotated.stdout
    row = db.execute("SELECT secret, enabled FROM webhooks WHERE id = %s", (api_hook,)).fetchone()
    assert row is not None and row["enabled"] and row["secret"] != "k" * 20
    assert f"shown this once): {row['secret']}\n" in rotated.stdout

    for args, reason in [
        ((config_hook,), "nothing to change"),
        ((config_hook, "--disable"), "comes from the settings"),
        ((str(uuid.uuid4()), "--disable"), "no webhook"),
        ((api_hook, "--url", "ftp://example.com/x"), "URL refused"),
        ((api_hook, "--events", "audio.exploded"), "unknown event types"),
    ]:
        refused = cli(*args)
        assert refused.returncode == 1, (args, refused.stdout)
        assert reason in refused.stderr, (args, refused.stderr)
