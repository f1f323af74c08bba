"""Tenants of one ``ai2text up`` share nothing: datasets, manifests, runs and workers.

Two tenants upload real speech over HTTP with their own tokens; the real model
transcribes it; the orchestrator sees each tenant cross the (small) training
threshold on its own and freezes a version of that tenant's audio for its own
run. One tenant's token must then find nothing of the other's: no version, no
manifest, no run, no transcript text, no audio id, and no server path or worker
host name of the operator's. An admin token sees both.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.gateway_harness import (
    Gateway,
    Signer,
    bearer,
    new_rsa_key,
    public_pem,
    start_gateway,
    unique_speech,
)
from tests.e2e.harness import cli_json, wait_until

pytestmark = pytest.mark.slow

# jfk.flac (11 s) and hotwords.mp3 (4 s) each cross it alone.
THRESHOLD_HOURS = 3.5 / 3600
TRAINER = "import json, sys; open('trainer.json', 'w').write(json.dumps(sys.argv))"
READER_SCOPES = ("audio:read", "audio:write", "transcripts:read", "datasets:read", "training:read")
FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl", "dataset.json")
PROBLEM = "application/problem+json"


@dataclass
class Tenant:
    name: str
    token: str
    audio_id: str
    words: str  # a word of its transcript that the other tenant's audio does not say


@dataclass
class World:
    gw: Gateway
    acme: Tenant
    globex: Tenant
    admin: str


@pytest.fixture(scope="module")
def world(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("tenants")
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    gw = start_gateway(
        "up",
        root,
        module_database_url,
        Signer(key),
        {
            "AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem),
            "AI2TEXT_TRAINING__ENABLED": "true",
            "AI2TEXT_TRAINING__THRESHOLD_HOURS": repr(THRESHOLD_HOURS),
            "AI2TEXT_TRAINING__CHECK_INTERVAL_S": "1",
            "AI2TEXT_TRAINING__MIN_FREE_BYTES": "0",
            "AI2TEXT_TRAINING__COMMAND": json.dumps(
                [sys.executable, "-c", TRAINER, "{dataset_dir}", "{train_manifest}"]
            ),
        },
        ready_event="worker ready",
    )
    try:
        with gw.client() as http:
            acme = _upload(gw, http, "acme", "jfk.flac", "country")
            globex = _upload(gw, http, "globex", "hotwords.mp3", "")
            runs = wait_until(
                lambda: _finished_runs(gw, 2), timeout=240, what="both tenants' runs", every=0.5
            )
        assert [(r["tenant"], r["version"], r["state"]) for r in runs] == [
            ("acme", 1, "succeeded"),
            ("globex", 1, "succeeded"),
        ]
        # A second version of acme's, frozen by the operator's CLI.
        frozen = cli_json(gw.env, "dataset", "freeze", "--tenant", "acme")
        assert (frozen["tenant"], frozen["version"]) == ("acme", 2)
        yield World(gw, acme, globex, gw.signer.token("admin"))
        assert gw.service.stop() == 0
    finally:
        gw.service.kill()


def _upload(gw: Gateway, http: httpx.Client, tenant: str, name: str, words: str) -> Tenant:
    token = gw.signer.token(*READER_SCOPES, tenant=tenant)
    response = http.post(
        "/v1/audio", headers=bearer(token), files={"file": (name, unique_speech(name))}
    )
    assert response.status_code == 201, response.text
    return Tenant(tenant, token, str(response.json()["id"]), words)


def _finished_runs(gw: Gateway, count: int) -> list[dict[str, Any]] | None:
    rows = gw.sql(
        "SELECT v.tenant, v.version, r.state FROM training_runs r"
        " JOIN dataset_versions v ON v.id = r.version_id ORDER BY v.tenant, v.version"
    )
    done = len(rows) >= count and all(r["state"] in ("succeeded", "failed") for r in rows)
    return rows if done else None


@pytest.fixture
def http(world: World) -> Iterator[httpx.Client]:
    with world.gw.client() as client:
        yield client


def get(http: httpx.Client, token: str, path: str, **params: Any) -> httpx.Response:
    return http.get(path, headers=bearer(token), params=params)


def versions_seen(http: httpx.Client, token: str, **params: Any) -> list[tuple[str, int]]:
    response = get(http, token, "/v1/datasets", **params)
    assert response.status_code == 200, response.text
    return sorted((v["tenant"], v["version"]) for v in response.json()["items"])


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["detail"] == "no such dataset version"


# -- datasets ---------------------------------------------------------------------------


def test_a_tenant_lists_only_its_own_dataset_versions(world: World, http: httpx.Client) -> None:
    assert versions_seen(http, world.globex.token) == [("globex", 1)]
    assert versions_seen(http, world.acme.token) == [("acme", 1), ("acme", 2)]
    # Asking for another tenant's list gets nothing, not that tenant's rows.
    assert versions_seen(http, world.globex.token, tenant="acme") == []


def test_another_tenants_version_and_files_are_404(world: World, http: httpx.Client) -> None:
    b = world.globex.token
    # acme has a v2; for globex there is no such version.
    assert_not_found(get(http, b, "/v1/datasets/2"))
    for file in FILES:
        assert_not_found(get(http, b, f"/v1/datasets/2/files/{file}"))
        assert_not_found(get(http, b, f"/v1/datasets/1/files/{file}", tenant="acme"))
    assert_not_found(get(http, b, "/v1/datasets/1", tenant="acme"))
    # A version that exists nowhere answers the same.
    assert get(http, b, "/v1/datasets/9").json() == get(http, b, "/v1/datasets/2").json()


def test_a_tenants_manifests_hold_only_its_audio_and_no_server_path(
    world: World, http: httpx.Client
) -> None:
    for me, other in ((world.globex, world.acme), (world.acme, world.globex)):
        one = get(http, me.token, "/v1/datasets/1")
        assert one.status_code == 200, one.text
        version = one.json()
        assert version["tenant"] == me.name and version["stats"]["audio"] == 1
        texts = []
        for file, link in version["manifests"].items():
            response = http.get(link, headers=bearer(me.token))
            assert response.status_code == 200, (file, response.text)
            texts.append(response.text)
        body = "".join(texts)
        assert me.audio_id in body
        assert other.audio_id not in body
        if other.words:
            assert other.words not in body.lower()
        assert str(world.gw.data_dir) not in body and "file://" not in body
        entries = [json.loads(line) for text in texts[:4] for line in text.splitlines()]
        assert entries, "no manifest lines"
        # No absolute path anywhere: not the audio's, not the (bundled) ASR model's.
        documents = [version, *entries, json.loads(texts[4])]
        paths = [v for v in strings(documents) if v.startswith("/") and "/" in v[1:]]
        assert all(p.startswith("/v1/datasets/1/files/") for p in paths), paths  # API links
        for entry in entries:
            path = entry.get("audio_filepath") or entry["file_name"]
            assert path.startswith("audio/sha256/") and not Path(path).is_absolute(), path
            assert entry["audio_id"] == me.audio_id


def test_a_tenant_sees_only_its_own_training_runs(world: World, http: httpx.Client) -> None:
    for me in (world.acme, world.globex):
        response = get(http, me.token, "/v1/training-runs")
        assert response.status_code == 200, response.text
        assert [(r["tenant"], r["version"]) for r in response.json()["items"]] == [(me.name, 1)]
    assert get(http, world.globex.token, "/v1/training-runs", tenant="acme").json() == {"items": []}


def test_the_admin_sees_every_tenants_versions_files_and_runs(
    world: World, http: httpx.Client
) -> None:
    admin = world.admin
    assert versions_seen(http, admin) == [("acme", 1), ("acme", 2), ("globex", 1)]
    assert versions_seen(http, admin, tenant="globex") == [("globex", 1)]
    for tenant in (world.acme, world.globex):
        one = get(http, admin, "/v1/datasets/1", tenant=tenant.name)
        assert one.status_code == 200, one.text
        link = one.json()["manifests"]["metadata.jsonl"]
        assert f"tenant={tenant.name}" in link
        metadata = http.get(link, headers=bearer(admin))
        assert metadata.status_code == 200, metadata.text
        assert tenant.audio_id in metadata.text
    runs = get(http, admin, "/v1/training-runs").json()["items"]
    assert sorted((r["tenant"], r["version"]) for r in runs) == [("acme", 1), ("globex", 1)]


# -- worker ids -------------------------------------------------------------------------


def test_worker_ids_are_shown_to_the_admin_only(world: World, http: httpx.Client) -> None:
    audio_b = world.globex.audio_id
    mine = get(http, world.globex.token, "/v1/jobs").json()["items"]
    assert [j["audio_id"] for j in mine] == [audio_b]
    assert all(j["worker_id"] is None for j in mine)

    every = get(http, world.admin, "/v1/jobs").json()["items"]
    workers = {j["audio_id"]: j["worker_id"] for j in every}
    assert set(workers) == {world.acme.audio_id, audio_b}
    # The admin sees which worker (host name and pid) ran each job.
    assert all(isinstance(w, str) and w.count(":") >= 2 for w in workers.values()), workers

    # A job whose worker died says which worker in its error (as the reaper writes it).
    worker = workers[audio_b]
    error = f"worker {worker} stopped responding (lease expired) on attempt 3 of 3"
    world.gw.sql(
        "WITH j AS (UPDATE jobs SET last_error = %s WHERE audio_id = %s RETURNING audio_id)"
        " UPDATE audio SET error = %s WHERE id IN (SELECT audio_id FROM j) RETURNING id",
        error,
        audio_b,
        error,
    )
    tenant_views = [
        get(http, world.globex.token, "/v1/jobs").json()["items"][0]["last_error"],
        get(http, world.globex.token, f"/v1/audio/{audio_b}").json()["last_error"],
        get(http, world.globex.token, f"/v1/audio/{audio_b}").json()["error"],
        get(http, world.globex.token, "/v1/audio").json()["items"][0]["error"],
    ]
    hidden = "a worker stopped responding (lease expired) on attempt 3 of 3"
    assert tenant_views == [hidden] * 4
    admin_view = get(http, world.admin, f"/v1/audio/{audio_b}").json()
    assert (admin_view["last_error"], admin_view["error"]) == (error, error)
