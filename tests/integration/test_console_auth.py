"""Console sign-in on a real gateway (loopback HTTP, real RS256 tokens, real PostgreSQL).

A one-time link's code works once and expires; the cookie is HttpOnly, SameSite=Strict,
Path=/ and Secure on https; every state change made with the cookie needs the
session's CSRF token and this server's Origin; bearer requests are unchanged;
signing out revokes the session; a tenant's session sees its tenant only; the event
stream works with the cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from ai2text.components import ingestor_of
from gateway.app import create_app, serve
from gateway.auth import Principal
from gateway.console_auth import signin_link
from gateway.csrf import SESSION_COOKIE
from gateway.sessions import SessionStore
from pipeline.db.database import Database
from pipeline.http_serve import bind_socket, url_of
from pipeline.metrics import Metrics
from pipeline.storage import open_store
from tests.e2e.gateway_harness import (
    Signer,
    bearer,
    new_rsa_key,
    unique_silence,
)
from tests.integration.served_gateway import gateway_settings

PUBLIC_URL = "https://93.184.215.14/hooks/console"  # a literal public address: no DNS
READER = ("audio:read", "transcripts:read")


@dataclass
class Running:
    """A gateway served from a thread of its own, on loopback."""

    url: str
    database_url: str
    signer: Signer
    loop: asyncio.AbstractEventLoop
    app: Any

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the gateway's loop (e.g. to make a sign-in code as `up` does)."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def link(self) -> str:
        app = self.app
        return str(
            self.call(signin_link(app.state.console.sessions, app.state.ctx.settings.console, ""))
        )

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.url}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("console")
    signer = Signer(new_rsa_key())
    settings = gateway_settings(
        root,
        module_database_url,
        signer,
        watch={"inbox": root / "inbox", "min_free_bytes": 0},
        # Loopback is a trusted proxy here, so a test can say it came over https.
        gateway={"trusted_proxies": ["127.0.0.1"]},
    )
    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        db = Database(settings.database, embedded=None)
        await db.open()
        try:
            store = open_store(settings.storage, settings.data_dir)
            app = create_app(settings, db, store, ingestor_of(settings, db, store, Metrics()))
            sock = bind_socket("127.0.0.1", 0, what="test gateway")
            control.update(
                loop=asyncio.get_running_loop(), stop=asyncio.Event(), app=app, url=url_of(sock)
            )
            started.set()
            await serve(app, sock, control["stop"])
        finally:
            await db.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(60), "the gateway did not start"
    try:
        yield Running(control["url"], module_database_url, signer, control["loop"], control["app"])
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the gateway did not stop"


def set_cookie_of(response: httpx.Response) -> dict[str, str | bool]:
    """The session cookie's attributes as the server set them (flags as True)."""
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "=")
    )
    name_value, *attributes = (part.strip() for part in header.split(";"))
    found: dict[str, str | bool] = {"value": name_value.split("=", 1)[1]}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        found[key.lower()] = value or True
    return found


@contextlib.contextmanager
def signed_in(gateway: Running, token: str) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    """A client holding a session opened with ``token``, and the session's identity."""
    with gateway.client() as client:
        answer = client.post("/console/session", json={"token": token}, headers=gateway.origin)
        assert answer.status_code == 200, answer.text
        assert SESSION_COOKIE in client.cookies
        yield client, answer.json()


def add_audio(gateway: Running, name: str, tenant: str) -> str:
    digest = hashlib.sha256(f"{name}-{uuid.uuid4()}".encode()).hexdigest()
    rows = gateway.sql(
        "INSERT INTO audio (tenant, source, original_name, source_uri, state, sha256,"
        " storage_key) VALUES (%s, 'upload', %s, %s, 'queued', %s, %s) RETURNING id",
        tenant,
        name,
        f"upload://{name}",
        digest,
        f"audio/{digest}",
    )
    return str(rows[0]["id"])


def test_a_signin_code_opens_a_session_once_and_is_stored_only_as_a_digest(
    gateway: Running,
) -> None:
    link = gateway.link()
    code = link.split("code=", 1)[1]
    assert gateway.sql("SELECT 1 FROM console_signin_codes WHERE code_sha256 = %s", _sha(code))

    with gateway.client() as browser:
        landing = browser.get(link)
        assert landing.status_code == 200, landing.text
        assert 'http-equiv="refresh"' in landing.text and "/console/" in landing.text
        cookie = set_cookie_of(landing)
        assert cookie["httponly"] is True
        assert str(cookie["samesite"]).lower() == "strict"
        assert cookie["path"] == "/"
        assert "secure" not in cookie  # plain http on loopback
        me = browser.get("/console/me")
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["subject"] == "console-admin" and body["admin"] is True
        assert body["tenant"] is None and body["scopes"] == ["admin"]
        assert len(body["csrf_token"]) >= 32

        # The session row holds the cookie's digest, never the cookie itself.
        session_id = str(cookie["value"])
        rows = gateway.sql("SELECT * FROM console_sessions WHERE id_sha256 = %s", _sha(session_id))
        assert len(rows) == 1
        assert all(session_id not in str(value) for value in rows[0].values())

    with gateway.client() as other:
        again = other.get(link)
        assert again.status_code == 401
        assert "used already or has expired" in again.text
        assert SESSION_COOKIE not in other.cookies
        assert other.get("/console/me").status_code == 401
    assert not gateway.sql("SELECT 1 FROM console_signin_codes WHERE code_sha256 = %s", _sha(code))


def test_an_expired_or_unknown_code_opens_nothing(gateway: Running) -> None:
    operator = Principal(subject="console-admin", scopes=frozenset({"admin"}), tenant=None)
    sessions: SessionStore = gateway.app.state.console.sessions
    expired = gateway.call(sessions.create_code(operator, ttl_s=-1))
    with gateway.client() as browser:
        for code in (expired, "A" * 43, "not a code", ""):
            answer = browser.get("/console/signin", params={"code": code})
            assert answer.status_code == 401, (code, answer.text)
            assert "set-cookie" not in answer.headers
        assert browser.get("/console/me").status_code == 401


def test_the_cookie_is_secure_when_the_request_came_over_https(gateway: Running) -> None:
    with gateway.client() as browser:
        landing = browser.get(gateway.link(), headers={"X-Forwarded-Proto": "https"})
        assert landing.status_code == 200
        assert set_cookie_of(landing)["secure"] is True


def test_a_pasted_token_opens_a_session_with_its_claims_until_it_expires(
    gateway: Running,
) -> None:
    token = gateway.signer.token(*READER, tenant="acme", sub="ana")
    with signed_in(gateway, token) as (client, me):
        assert me["subject"] == "ana" and me["tenant"] == "acme" and me["admin"] is False
        assert me["scopes"] == sorted(READER)
        # claims() gives tokens 900 s: the session ends with the token, not 12 h later.
        expires = datetime.fromisoformat(me["expires_at"])
        assert (expires - datetime.now(UTC)).total_seconds() <= 905
        assert client.get("/v1/audio").status_code == 200
        assert client.get("/v1/workers").status_code == 403  # not an admin's scope
        assert client.get("/console/me").json()["csrf_token"] == me["csrf_token"]

    with gateway.client() as form:
        posted = form.post(
            "/console/session",
            data={"token": token},
            headers=gateway.origin,
            follow_redirects=False,
        )
        assert posted.status_code == 303 and posted.headers["location"] == "/console/"
        assert form.get("/console/me").json()["subject"] == "ana"


def test_a_bad_token_or_a_foreign_origin_opens_no_session(gateway: Running) -> None:
    token = gateway.signer.token(*READER, tenant="acme")
    forged = Signer(new_rsa_key()).token("admin")
    with gateway.client() as browser:
        refused = browser.post("/console/session", json={"token": forged}, headers=gateway.origin)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        page = browser.post("/console/session", data={"token": forged}, headers=gateway.origin)
        assert page.status_code == 401 and "not accepted" in page.text
        malformed = browser.post("/console/session", content=b"{", headers=gateway.origin)
        assert malformed.status_code == 400
        for origin in ({"Origin": "https://evil.example"}, {}):
            # A page elsewhere must not sign this browser in as someone (login CSRF).
            answer = browser.post("/console/session", json={"token": token}, headers=origin)
            assert answer.status_code == 403, answer.text
            assert answer.json()["type"].endswith("/cross-origin")
        assert SESSION_COOKIE not in browser.cookies


def test_state_changes_with_the_cookie_need_the_csrf_token_and_this_origin(
    gateway: Running,
) -> None:
    token = gateway.signer.token("webhooks:manage", "audio:write", *READER, tenant="csrf")
    with signed_in(gateway, token) as (client, me):
        check_csrf_refusals(gateway, client, me["csrf_token"])


def check_csrf_refusals(gateway: Running, client: httpx.Client, csrf: str) -> None:
    good = {**gateway.origin, "X-CSRF-Token": csrf}
    refusals = [
        ({**gateway.origin}, "csrf-token"),
        ({**gateway.origin, "X-CSRF-Token": "x" + csrf[1:]}, "csrf-token"),
        ({"Origin": "https://evil.example", "X-CSRF-Token": csrf}, "cross-origin"),
        ({"X-CSRF-Token": csrf}, "cross-origin"),  # no Origin, no Referer
        ({"Origin": "null", "X-CSRF-Token": csrf}, "cross-origin"),
    ]
    for headers, kind in refusals:
        answer = client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert answer.json()["type"].endswith("/" + kind)
    assert not gateway.sql("SELECT 1 FROM webhooks WHERE tenant = 'csrf'")

    # From the console's own page: a Referer of this server does as well as Origin.
    referer = {"Referer": gateway.url + "/console/", "X-CSRF-Token": csrf}
    created = client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=referer)
    assert created.status_code == 201, created.text
    assert created.json()["tenant"] == "csrf"
    # An upload (multipart, past the anonymous body limit) with the cookie.
    uploaded = client.post(
        "/v1/audio", files={"file": ("note.wav", unique_silence(1.0))}, headers=good
    )
    assert uploaded.status_code == 201, uploaded.text
    # Reads need no CSRF token.
    assert client.get(f"/v1/audio/{uploaded.json()['id']}").status_code == 200


def test_bearer_requests_need_no_csrf_token_and_win_over_a_cookie(gateway: Running) -> None:
    admin = bearer(gateway.signer.token("admin"))
    with gateway.client() as plain:
        created = plain.post(
            "/v1/webhooks", json={"url": PUBLIC_URL + "/b", "tenant": "bearer"}, headers=admin
        )
        assert created.status_code == 201, created.text
    with signed_in(gateway, gateway.signer.token(*READER, tenant="acme")) as (reader, _):
        # The reader's cookie is there, but the bearer token is who is asking.
        assert reader.get("/v1/workers", headers=admin).status_code == 200
        assert reader.get("/v1/workers").status_code == 403
        wrong = bearer(Signer(new_rsa_key()).token("admin"))
        assert reader.get("/v1/audio", headers=wrong).status_code == 401


def test_signing_out_deletes_the_session(gateway: Running) -> None:
    with signed_in(gateway, gateway.signer.token(*READER, tenant="acme")) as (client, me):
        session_id = client.cookies[SESSION_COOKIE]
        assert client.delete("/console/session", headers=gateway.origin).status_code == 403
        assert client.get("/v1/audio").status_code == 200  # a refused sign-out changed nothing
        out = client.delete(
            "/console/session", headers={**gateway.origin, "X-CSRF-Token": me["csrf_token"]}
        )
        assert out.status_code == 204
        assert SESSION_COOKIE not in client.cookies  # cleared in the browser
    assert not gateway.sql("SELECT 1 FROM console_sessions WHERE id_sha256 = %s", _sha(session_id))
    with gateway.client(cookies={SESSION_COOKIE: session_id}) as replay:
        # The old cookie, sent again, is worth nothing.
        assert replay.get("/v1/audio").status_code == 401
        assert replay.get("/console/me").status_code == 401


def test_a_tenant_session_sees_its_tenant_only_and_the_operator_sees_all(
    gateway: Running,
) -> None:
    own = add_audio(gateway, "own.wav", "tenant-a")
    foreign = add_audio(gateway, "foreign.wav", "tenant-b")
    with signed_in(gateway, gateway.signer.token(*READER, tenant="tenant-a")) as (client, _):
        listed = {row["id"] for row in client.get("/v1/audio").json()["items"]}
        assert own in listed and foreign not in listed
        assert client.get(f"/v1/audio/{own}").status_code == 200
        assert client.get(f"/v1/audio/{foreign}").status_code == 404
    with gateway.client() as operator:
        assert operator.get(gateway.link()).status_code == 200
        listed = {row["id"] for row in operator.get("/v1/audio").json()["items"]}
        assert {own, foreign} <= listed


def test_the_event_stream_works_with_the_cookie(gateway: Running) -> None:
    with (
        signed_in(gateway, gateway.signer.token(*READER, tenant="stream")) as (client, _),
        client.stream("GET", "/v1/events", timeout=30) as events,
    ):
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        first_line(lines, lambda line: line.startswith(": connected"))
        add_audio(gateway, "elsewhere.wav", "other-tenant")
        mine = add_audio(gateway, "mine.wav", "stream")
        data = first_line(lines, lambda line: line.startswith("data: "))
        assert mine in data and "elsewhere.wav" not in data


def first_line(lines: Iterator[str], wanted: Callable[[str], bool], timeout: float = 30) -> str:
    """The first line ``wanted``; keep-alives come every 15 s, so the deadline is checked."""
    deadline = time.monotonic() + timeout
    for line in lines:
        if wanted(line):
            return line
        assert time.monotonic() < deadline, "no such line in time"
    raise AssertionError("the stream ended")


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_pages_and_answers_carry_the_security_headers(gateway: Running) -> None:
    with gateway.client() as http:
        page = http.get("/console/signin")
        assert page.status_code == 200 and "<form" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "form-action 'self'" in policy and "frame-ancestors 'none'" in policy
        answer = http.get("/readyz")
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        for response in (page, answer):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "strict-transport-security" not in response.headers  # plain http
        over_https = http.get("/readyz", headers={"X-Forwarded-Proto": "https"})
        assert over_https.headers["strict-transport-security"].startswith("max-age=")


def test_signing_in_again_replaces_the_browsers_session(gateway: Running) -> None:
    token = gateway.signer.token(*READER, tenant="acme")
    with signed_in(gateway, token) as (client, _):
        first = client.cookies[SESSION_COOKIE]
        again = client.post("/console/session", json={"token": token}, headers=gateway.origin)
        assert again.status_code == 200
        second = client.cookies[SESSION_COOKIE]
        assert second != first
        assert not gateway.sql("SELECT 1 FROM console_sessions WHERE id_sha256 = %s", _sha(first))
        assert client.get("/console/me").status_code == 200
