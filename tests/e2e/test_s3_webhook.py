"""``POST /v1/events/s3`` of a real ``ai2text gateway`` process: what it refuses, and that
a refusal is a 4xx that stores nothing (a 5xx makes MinIO resend the event forever).

The gateway watches one bucket; nothing here needs the bucket itself, since the
receiver only records events.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.e2e.gateway_harness import Gateway, Signer, new_rsa_key, public_pem, start_gateway

pytestmark = pytest.mark.slow

WATCHED = "watched-bucket"
PROBLEM = "application/problem+json"
# The gateway role never reaches the bucket: its endpoint is an address nothing listens on.
SOURCE = {
    "bucket": WATCHED,
    "prefix": "calls/",
    "endpoint": "127.0.0.1:9",
    "access_key": "unused",
    "secret_key": "unused",
    "secure": False,
}


@pytest.fixture(scope="module")
def gateway(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("webhook")
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    token = secrets.token_urlsafe(24)
    running = start_gateway(
        "gateway",
        root,
        module_database_url,
        Signer(key),
        {
            "AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem),
            "AI2TEXT_S3_SOURCES": json.dumps([SOURCE]),
            "AI2TEXT_WEBHOOK__TOKEN": token,
        },
    )
    yield running
    assert running.service.stop() == 0


def post(gateway: Gateway, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {gateway.env['AI2TEXT_WEBHOOK__TOKEN']}",
        "Content-Type": "application/json",
    }
    return httpx.post(f"{gateway.url}/v1/events/s3", content=content, headers=headers, timeout=30)


def record(key: str, *, bucket: str = WATCHED, **obj: Any) -> dict[str, Any]:
    """An AWS-shaped record (the key is sent as is: tests pick keys needing no escaping)."""
    return {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, **obj}},
    }


def events_for(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    with psycopg.connect(gateway.database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM s3_events WHERE key = %s", (key,)).fetchall()


def stored_events(gateway: Gateway) -> int:
    with psycopg.connect(gateway.database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT count(*) AS n FROM s3_events").fetchone()
    assert row is not None
    return int(row["n"])


def assert_refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_a_size_beyond_any_object_is_400_and_stores_nothing(gateway: Gateway) -> None:
    key = "calls/huge.wav"
    body = assert_refused(post(gateway, {"Records": [record(key, size=10**30)]}), 400)
    assert "s3.object.size" in body["detail"]
    # One past the largest object MinIO holds is refused too; the bound itself is not.
    assert_refused(post(gateway, {"Records": [record(key, size=50 * 1024**4 + 1)]}), 400)
    assert events_for(gateway, key) == []

    fine = post(gateway, {"Records": [record(key, size=50 * 1024**4)]})
    assert fine.status_code == 200, fine.text
    assert [e["size_bytes"] for e in events_for(gateway, key)] == [50 * 1024**4]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.update(eventName="ObjectCreated:\x00Put"), "eventName"),
        (lambda r: r.update(eventName="x" * 300), "eventName"),
        (lambda r: r["s3"]["bucket"].update(name=WATCHED + "\x00"), "s3.bucket.name"),
        (lambda r: r["s3"]["object"].update(eTag="ab\x00cd"), "s3.object.eTag"),
        (lambda r: r["s3"]["object"].update(eTag="e" * 2000), "s3.object.eTag"),
        (lambda r: r["s3"]["object"].update(versionId="\ud800"), "s3.object.versionId"),
        (lambda r: r["s3"]["object"].update(sequencer="0A\n"), "s3.object.sequencer"),
        (lambda r: r["s3"]["object"].update(key="calls/" + "k" * 1100), "s3.object.key"),
        (lambda r: r["s3"]["object"].update(size=-5), "s3.object.size"),
    ],
)
def test_every_field_of_a_malformed_event_is_a_400_that_stores_nothing(
    gateway: Gateway, mutate: Any, field: str
) -> None:
    key = f"calls/malformed-{secrets.token_hex(4)}.wav"
    bad = record(key, size=10, eTag="abc", sequencer="0A")
    mutate(bad)
    before = stored_events(gateway)
    # json.dumps escapes a lone surrogate as \ud800, as a hostile sender would send it.
    body = assert_refused(post(gateway, {"Records": [record(key), bad]}), 400)
    assert field in body["detail"]
    # Not even the good record before the bad one is stored.
    assert stored_events(gateway) == before


def test_events_for_a_bucket_no_source_watches_are_refused_and_not_stored(
    gateway: Gateway,
) -> None:
    key = "calls/elsewhere.wav"
    for body in (
        {"Records": [record(key, bucket="someone-elses", size=10)]},
        # One foreign record refuses the whole body: nothing of it is stored.
        {"Records": [record(key, size=10), record(key, bucket="someone-elses", size=10)]},
        {"EventName": "s3:ObjectCreated:Put", "Key": f"someone-elses/{key}"},
    ):
        problem = assert_refused(post(gateway, body), 422)
        assert problem["type"].endswith("unwatched-bucket")
        assert "someone-elses" in problem["detail"]
    assert events_for(gateway, key) == []

    # The watched bucket's event is recorded, and the receiver answered throughout.
    accepted = post(gateway, {"Records": [record(key, size=10)]})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"recorded": 1}
    assert [(e["bucket"], e["origin"]) for e in events_for(gateway, key)] == [(WATCHED, "webhook")]
    gateway.service.check_alive()


def test_the_log_names_the_refused_bucket(gateway: Gateway) -> None:
    assert (
        post(gateway, {"Records": [record("calls/x.wav", bucket="typo-bucket")]}).status_code == 422
    )
    gateway.service.wait_for_event(
        "S3 events for unwatched buckets refused",
        timeout=30,
        where=lambda e: e.get("buckets") == ["typo-bucket"],
    )
