"""``GET /v1/audio/{id}/content``, ``GET /v1/disk`` and the console's pages over real HTTP.

A real gateway on loopback with real RS256 tokens and real PostgreSQL, serving
bytes from the filesystem object store: what a browser's audio player asks for
(ranges, content type) is answered exactly, another tenant's audio does not exist,
and the console's pages and assets carry a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pipeline.storage import FilesystemStore, content_key
from tests.e2e.gateway_harness import Signer, bearer, new_rsa_key
from tests.integration.served_gateway import gateway, gateway_settings

Conn = psycopg.Connection[dict[str, Any]]
SIZE = 300_000  # several store chunks


def served(
    tmp_path: Path, database_url: str, signer: Signer, scenario: Callable[[str], Awaitable[None]]
) -> None:
    settings = gateway_settings(
        tmp_path,
        database_url,
        signer,
        watch={"inbox": tmp_path / "inbox", "min_free_bytes": 0},
    )

    async def run() -> None:
        async with gateway(settings) as url:
            await scenario(url)

    asyncio.run(run())


def stored_audio(tmp_path: Path, db: Conn, tenant: str, name: str, data: bytes) -> str:
    """An accepted audio row whose bytes are in the data directory's object store."""
    sha = hashlib.sha256(data).hexdigest()
    key = content_key(sha, Path(name).suffix)
    FilesystemStore(tmp_path / "data" / "objects").put_bytes(key, data)
    row = db.execute(
        "INSERT INTO audio (tenant, source, original_name, source_uri, state, sha256,"
        " storage_key, size_bytes) VALUES (%s, 'upload', %s, %s, 'transcribed', %s, %s, %s)"
        " RETURNING id",
        (tenant, name, f"upload://{uuid.uuid4()}", sha, key, len(data)),
    ).fetchone()
    assert row is not None
    return str(row["id"])


def test_the_audio_is_served_whole_and_by_range_as_players_ask(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    data = os.urandom(SIZE)
    reader = bearer(signer.token("audio:read", tenant="acme"))

    async def scenario(url: str) -> None:
        audio_id = stored_audio(tmp_path, db, "acme", "talk é.flac", data)
        url_path = f"/v1/audio/{audio_id}/content"
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=reader) as http:
            whole = await http.get(url_path)
            assert whole.status_code == 200
            assert whole.content == data
            assert whole.headers["content-type"] == "audio/flac"
            assert whole.headers["accept-ranges"] == "bytes"
            assert whole.headers["content-length"] == str(SIZE)
            assert "talk%20%C3%A9.flac" in whole.headers["content-disposition"]
            etag = whole.headers["etag"]

            for header, start, end in (
                ("bytes=0-0", 0, 0),
                ("bytes=100-199999", 100, 199_999),
                ("bytes=250000-", 250_000, SIZE - 1),
                ("bytes=-1000", SIZE - 1000, SIZE - 1),
                ("bytes=299000-999999999", 299_000, SIZE - 1),  # clipped to the end
            ):
                part = await http.get(url_path, headers={"Range": header})
                assert part.status_code == 206, header
                assert part.content == data[start : end + 1], header
                assert part.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
                assert part.headers["content-length"] == str(end - start + 1)

            past = await http.get(url_path, headers={"Range": f"bytes={SIZE}-"})
            assert past.status_code == 416
            assert past.headers["content-range"] == f"bytes */{SIZE}"
            assert past.headers["content-type"] == "application/problem+json"

            # Ranges this server does not honour mean the whole audio (RFC 9110).
            for ignored in ("bytes=0-10,20-30", "items=0-5", "bytes=9-3"):
                answer = await http.get(url_path, headers={"Range": ignored})
                assert answer.status_code == 200 and answer.content == data, ignored

            same = await http.get(url_path, headers={"Range": "bytes=0-9", "If-Range": etag})
            assert same.status_code == 206 and same.content == data[:10]
            changed = await http.get(
                url_path, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'}
            )
            assert changed.status_code == 200 and changed.content == data

    served(tmp_path, database_url, signer, scenario)


def test_another_tenants_audio_does_not_exist_and_a_token_is_needed(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    signer = Signer(new_rsa_key())
    data = os.urandom(4096)

    async def scenario(url: str) -> None:
        audio_id = stored_audio(tmp_path, db, "acme", "a.wav", data)
        not_stored = db.execute(
            "INSERT INTO audio (tenant, source, original_name, source_uri, state, error)"
            " VALUES ('acme', 'upload', 'bad.wav', 'upload://bad', 'rejected', 'not audio')"
            " RETURNING id"
        ).fetchone()
        assert not_stored is not None
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            path = f"/v1/audio/{audio_id}/content"
            assert (await http.get(path)).status_code == 401
            globex = bearer(signer.token("audio:read", tenant="globex"))
            other = await http.get(path, headers=globex)
            assert other.status_code == 404
            assert other.headers["content-type"] == "application/problem+json"
            assert other.content != data
            assert (
                await http.get("/v1/audio/not-an-id/content", headers=globex)
            ).status_code == 404
            admin = await http.get(path, headers=bearer(signer.token("admin")))
            assert admin.status_code == 200 and admin.content == data
            assert admin.headers["content-type"] == "audio/wav"
            acme = bearer(signer.token("audio:read", tenant="acme"))
            rejected = await http.get(f"/v1/audio/{not_stored['id']}/content", headers=acme)
            assert rejected.status_code == 409
            assert "rejected" in rejected.json()["detail"]

    served(tmp_path, database_url, signer, scenario)


def test_disk_floors_are_for_admins_and_say_where_each_stands(
    tmp_path: Path, database_url: str
) -> None:
    signer = Signer(new_rsa_key())

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            tenant = bearer(signer.token("audio:read", tenant="acme"))
            assert (await http.get("/v1/disk", headers=tenant)).status_code == 403
            answer = await http.get("/v1/disk", headers=bearer(signer.token("admin")))
            assert answer.status_code == 200
            items = {item["name"]: item for item in answer.json()["items"]}
            assert set(items) == {"data", "staging"}  # training is off
            data = items["data"]
            assert data["floor_bytes"] == 0 and data["below_floor"] is False
            assert 0 < data["free_bytes"] <= data["total_bytes"]

    served(tmp_path, database_url, signer, scenario)


def test_console_pages_and_assets_send_a_strict_policy_and_load_only_local_files(
    tmp_path: Path, database_url: str
) -> None:
    signer = Signer(new_rsa_key())

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get("/console")).headers["location"] == "/console/"
            for path in (
                "/console/",
                f"/console/audio/{uuid.uuid4()}",
                "/console/search",
                "/console/ops",
            ):
                page = await http.get(path)
                assert page.status_code == 200, path
                assert page.headers["content-type"].startswith("text/html")
                policy = page.headers["content-security-policy"]
                assert "script-src 'self'" in policy and "unsafe-inline" not in policy
                assert "<script>" not in page.text and "style=" not in page.text
                assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
                assert assets, path
                for asset in assets:
                    if asset.startswith(("data:", "#")):
                        continue
                    assert asset.startswith("/console/static/"), asset
                    served_asset = await http.get(asset)
                    assert served_asset.status_code == 200, asset
                    assert served_asset.headers["content-security-policy"] == policy
            script = await http.get("/console/static/js/api.js")
            assert script.headers["content-type"].startswith(
                ("text/javascript", "application/javascript")
            )
            assert (await http.get("/console/static/../app.py")).status_code == 404

    served(tmp_path, database_url, signer, scenario)
