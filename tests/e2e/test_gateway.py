"""The HTTP gateway of a real ``ai2text`` process, driven over HTTP like a client would.

Two services run per module, each on its own database:

* ``gw``: ``ai2text up`` (watcher, worker, gateway) verifying RS256 tokens with a PEM
  public key; it really transcribes.
* ``edge``: ``ai2text gateway`` alone (nothing transcribes, so uploads stay queued),
  verifying tokens from a JWKS file, with a 2 MB upload limit and 5 requests a minute.

Every test uses its own subjects, tenants and audio bytes (the pipeline dedupes by
sha256), so none depends on another having run.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_database
from tests.e2e.gateway_harness import (
    DATA,
    DROP,
    ISSUER,
    PROBLEM,
    READ,
    WRITE,
    Gateway,
    Signer,
    bearer,
    claims,
    hs256_token,
    jwks_document,
    new_rsa_key,
    parse_srt,
    parse_vtt,
    public_pem,
    sized_wav,
    start_gateway,
    tamper,
    unique_silence,
    unique_speech,
    unsigned_token,
)
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.slow

INVALID_TOKEN = 'Bearer error="invalid_token"'
EDGE_KID = "edge-key-1"
EDGE_MAX_BYTES = 2_000_000
EDGE_RATE_PER_MINUTE = 5
TRANSCRIBE_TIMEOUT_S = 240


# -- services ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw_database(pg_server: Any) -> Iterator[str]:
    yield from fresh_database(pg_server)


@pytest.fixture(scope="module")
def edge_database(pg_server: Any) -> Iterator[str]:
    yield from fresh_database(pg_server)


@pytest.fixture(scope="module")
def gw(gw_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``ai2text up`` with a PEM public key; tokens are signed here with its private key."""
    root = tmp_path_factory.mktemp("gw")
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    gateway = start_gateway(
        "up",
        root,
        gw_database,
        Signer(key),
        {"AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem)},
        ready_event="worker ready",
    )
    yield gateway
    assert gateway.service.stop() == 0


@pytest.fixture(scope="module")
def edge(edge_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``ai2text gateway`` alone: JWKS file keys, small uploads, a tight rate limit."""
    root = tmp_path_factory.mktemp("edge")
    key = new_rsa_key()
    jwks = root / "jwks.json"
    jwks.write_text(json.dumps(jwks_document(key, EDGE_KID)))
    gateway = start_gateway(
        "gateway",
        root,
        edge_database,
        Signer(key, kid=EDGE_KID),
        {
            "AI2TEXT_AUTH__JWKS_FILE": str(jwks),
            "AI2TEXT_VALIDATION__MAX_BYTES": str(EDGE_MAX_BYTES),
            "AI2TEXT_GATEWAY__RATE_LIMIT_PER_MINUTE": str(EDGE_RATE_PER_MINUTE),
        },
    )
    yield gateway
    assert gateway.service.stop() == 0


@pytest.fixture
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.client() as client:
        yield client


@pytest.fixture
def edge_http(edge: Gateway) -> Iterator[httpx.Client]:
    with edge.client() as client:
        yield client


# -- helpers ---------------------------------------------------------------------------


def tenant_name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def upload(client: httpx.Client, token: str, name: str, data: bytes) -> httpx.Response:
    return client.post(
        "/v1/audio", headers=bearer(token), files={"file": (name, data, "application/octet-stream")}
    )


def upload_ok(client: httpx.Client, token: str, name: str, data: bytes) -> str:
    response = upload(client, token, name, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["outcome"] == "accepted", body
    return str(body["id"])


def wait_transcribed(client: httpx.Client, token: str, audio_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = client.get(f"/v1/audio/{audio_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        row: dict[str, Any] = response.json()
        return row if row["state"] in ("transcribed", "failed", "rejected") else None

    row = wait_until(
        done, timeout=TRANSCRIBE_TIMEOUT_S, what=f"{audio_id} to be transcribed", every=0.5
    )
    assert row["state"] == "transcribed", row
    return row


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"]
    assert "Traceback" not in response.text
    return body


def transcribed_speech(
    client: httpx.Client, gw: Gateway, tenant: str, name: str = "speech.wav"
) -> tuple[str, str]:
    """A token of ``tenant`` and the id of jfk's speech transcribed for it."""
    token = gw.signer.token(*WRITE, tenant=tenant)
    audio_id = upload_ok(client, token, name, unique_speech("jfk.flac"))
    wait_transcribed(client, token, audio_id)
    return token, audio_id


# -- 1. authentication ------------------------------------------------------------------


def test_correctly_signed_rs256_token_reads_audio(gw: Gateway, http: httpx.Client) -> None:
    token = gw.signer.token("audio:read", tenant=tenant_name("reader"))
    response = http.get("/v1/audio", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}
    # Scheme names are case-insensitive.
    response = http.get("/v1/audio", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200, response.text


def _bad_credentials(gw: Gateway, case: str) -> dict[str, str]:
    """Request headers for ``case``; every token is valid but for the one named flaw."""
    signer = gw.signer
    now = int(time.time())
    admin_claims = claims(scopes=("admin",))
    stranger = Signer(new_rsa_key(), kid="unknown-kid")
    tokens: dict[str, Callable[[], str]] = {
        "alg none": lambda: unsigned_token(admin_claims),
        "hs256 with the public key pem as secret": lambda: hs256_token(
            admin_claims, Path(gw.env["AI2TEXT_AUTH__PUBLIC_KEY_FILE"]).read_bytes()
        ),
        "expired": lambda: signer.token(*READ, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "not yet valid": lambda: signer.token(*READ, nbf=now + 3600, exp=now + 7200),
        "wrong audience": lambda: signer.token(*READ, aud="another-service"),
        "wrong issuer": lambda: signer.token(*READ, iss="https://evil.example.com"),
        "issuer extending the configured one": lambda: signer.token(
            *READ, iss=ISSUER + ".evil.example"
        ),
        "issuer that is a prefix of the configured one": lambda: signer.token(
            *READ, iss=ISSUER[:-1]
        ),
        "missing exp": lambda: signer.token(*READ, exp=DROP),
        "tampered payload": lambda: tamper(
            signer.token(*READ, tenant="acme"), scope="admin", tenant="someone-else"
        ),
        "unknown kid and unknown key": lambda: stranger.token(*READ),
        "unknown crit header": lambda: signer.token(
            *READ, headers={"crit": ["urn:example:ext"], "urn:example:ext": True}
        ),
        "garbage": lambda: "not-a-jwt",
    }
    if case == "no token":
        return {}
    if case == "basic scheme":
        return {"Authorization": "Basic dXNlcjpwYXNz"}
    return bearer(tokens[case]())


BAD_TOKEN_CASES = [
    "no token",
    "alg none",
    "hs256 with the public key pem as secret",
    "expired",
    "not yet valid",
    "wrong audience",
    "wrong issuer",
    "issuer extending the configured one",
    "issuer that is a prefix of the configured one",
    "missing exp",
    "tampered payload",
    "unknown kid and unknown key",
    "unknown crit header",
    "garbage",
    "basic scheme",
]


@pytest.fixture
def anonymous_401(http: httpx.Client) -> httpx.Response:
    return http.get("/v1/audio")


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_token_gets_the_same_401_that_reveals_nothing(
    gw: Gateway, http: httpx.Client, anonymous_401: httpx.Response, case: str
) -> None:
    response = http.get("/v1/audio", headers=_bad_credentials(gw, case))

    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert body == assert_problem(anonymous_401, 401)
    assert anonymous_401.headers["www-authenticate"] == INVALID_TOKEN
    assert response.content == anonymous_401.content


def test_unknown_kid_is_refused_when_keys_come_from_a_jwks(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    tenant = tenant_name("kid")
    known = edge.signer.token("audio:read", tenant=tenant)
    assert edge_http.get("/v1/audio", headers=bearer(known)).status_code == 200
    # Signed by the very key the JWKS holds, but naming a key id it does not hold.
    unknown = edge.signer.token("audio:read", tenant=tenant, headers={"kid": "not-in-the-set"})
    response = edge_http.get("/v1/audio", headers=bearer(unknown))
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert body == edge_http.get("/v1/audio").json()


# -- 2. scopes ---------------------------------------------------------------------------


def test_token_without_audio_read_gets_403_listing_audio(gw: Gateway, http: httpx.Client) -> None:
    token = gw.signer.token("transcripts:read", "audio:write", tenant=tenant_name("noread"))
    body = assert_problem(http.get("/v1/audio", headers=bearer(token)), 403)
    assert "audio:read" in body["detail"]


def test_non_admin_gets_403_on_retry_and_metrics_and_admin_gets_prometheus_text(
    gw: Gateway, http: httpx.Client
) -> None:
    everything_but_admin = (*WRITE, "datasets:read", "training:read")
    user = gw.signer.token(*everything_but_admin, tenant=tenant_name("user"))
    assert_problem(http.post("/v1/jobs/1/retry", headers=bearer(user)), 403)
    assert_problem(http.get("/metrics", headers=bearer(user)), 403)
    assert_problem(http.get("/metrics"), 401)

    admin = gw.signer.token("admin")
    # Past the scope check: job 987654321 does not exist, so it is not retryable.
    assert_problem(http.post("/v1/jobs/987654321/retry", headers=bearer(admin)), 409)
    response = http.get("/metrics", headers=bearer(admin))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE ai2text_http_requests_total counter" in text
    assert "# TYPE ai2text_http_request_seconds histogram" in text
    assert re.search(
        r'^ai2text_http_requests_total\{method="POST",route="/v1/jobs/\{job_id\}/retry",'
        r'status="403"\} [1-9]',
        text,
        re.MULTILINE,
    ), text


def test_admin_sees_the_running_worker_and_others_get_403(gw: Gateway, http: httpx.Client) -> None:
    user = gw.signer.token(*READ, tenant=tenant_name("workers"))
    assert_problem(http.get("/v1/workers", headers=bearer(user)), 403)
    admin = gw.signer.token("admin")

    def alive() -> list[dict[str, Any]] | None:
        response = http.get("/v1/workers", headers=bearer(admin))
        assert response.status_code == 200, response.text
        return [w for w in response.json()["items"] if w["alive"]] or None

    # asr.concurrency=auto may run several jobs in the one process: all of them are its.
    workers = wait_until(alive, timeout=60, what="the worker to register")
    for worker in workers:
        assert worker["device"] == "cpu" and worker["compute_type"] == "int8"
        assert worker["batch_size"] == 1
        assert worker["pid"] == gw.service.pid
        assert worker["stopped_at"] is None
        assert worker["gpu_memory_total_bytes"] is None  # no GPU here: nothing is made up


# -- 3. tenancy --------------------------------------------------------------------------


def test_tenants_see_only_their_own_audio_transcripts_and_search_hits(
    gw: Gateway, http: httpx.Client
) -> None:
    token_a, audio_a = transcribed_speech(http, gw, tenant_name("a"), "a-speech.wav")
    token_b = gw.signer.token(*WRITE, tenant=tenant_name("b"))
    audio_b = upload_ok(http, token_b, "b-quiet.wav", unique_silence())

    for path in (f"/v1/audio/{audio_a}", f"/v1/audio/{audio_a}/transcript"):
        assert_problem(http.get(path, headers=bearer(token_b)), 404)
    # Not found is not found, whether the audio is someone else's or never existed.
    missing = http.get(f"/v1/audio/{uuid.uuid4()}", headers=bearer(token_b))
    assert (
        assert_problem(missing, 404)
        == http.get(f"/v1/audio/{audio_a}", headers=bearer(token_b)).json()
    )

    listed_b = http.get("/v1/audio", params={"limit": 200}, headers=bearer(token_b)).json()
    assert [row["id"] for row in listed_b["items"]] == [audio_b]
    for word in ("country", "Americans"):
        found_b = http.get("/v1/search", params={"q": word}, headers=bearer(token_b))
        assert found_b.status_code == 200, found_b.text
        assert found_b.json() == {"items": []}

    found_a = http.get("/v1/search", params={"q": "country"}, headers=bearer(token_a)).json()
    assert {hit["audio_id"] for hit in found_a["items"]} == {audio_a}
    listed_a = http.get("/v1/audio", params={"limit": 200}, headers=bearer(token_a)).json()
    assert [row["id"] for row in listed_a["items"]] == [audio_a]

    admin = gw.signer.token("admin")
    listed_all = http.get("/v1/audio", params={"limit": 200}, headers=bearer(admin)).json()
    assert {audio_a, audio_b} <= {row["id"] for row in listed_all["items"]}
    assert http.get(f"/v1/audio/{audio_a}/transcript", headers=bearer(admin)).status_code == 200
    assert http.get(f"/v1/audio/{audio_b}", headers=bearer(admin)).status_code == 200
    found_all = http.get(
        "/v1/search", params={"q": "country", "limit": 200}, headers=bearer(admin)
    ).json()
    assert audio_a in {hit["audio_id"] for hit in found_all["items"]}

    # Counts are per tenant too; the operator's are everyone's.
    stats_a = http.get("/v1/stats", headers=bearer(token_a)).json()
    stats_b = http.get("/v1/stats", headers=bearer(token_b)).json()
    stats_all = http.get("/v1/stats", headers=bearer(admin)).json()
    assert stats_a["jobs_by_state"] == {"done": 1} and stats_a["transcripts"] == 1
    assert sum(stats_b["jobs_by_state"].values()) == 1
    assert sum(stats_all["jobs_by_state"].values()) >= 2  # both tenants (and any other)


def test_upload_matching_another_tenants_audio_does_not_reveal_it(
    gw: Gateway, http: httpx.Client
) -> None:
    data = unique_silence(0.7)
    token_a = gw.signer.token(*WRITE, tenant=tenant_name("a"))
    audio_a = upload_ok(http, token_a, "mine.wav", data)
    token_b = gw.signer.token(*WRITE, tenant=tenant_name("b"))
    response = upload(http, token_b, "also-mine.wav", data)
    assert response.status_code in (200, 201), response.text
    assert audio_a not in response.text
    shown = http.get(f"/v1/audio/{response.json()['id']}", headers=bearer(token_b)).json()
    assert audio_a not in json.dumps(shown)


def test_tenant_finds_its_own_upload_in_search_when_another_tenant_had_the_same_bytes(
    gw: Gateway, http: httpx.Client
) -> None:
    data = unique_speech("jfk.flac")
    token_a = gw.signer.token(*WRITE, tenant=tenant_name("a"))
    wait_transcribed(http, token_a, upload_ok(http, token_a, "first.wav", data))
    token_b = gw.signer.token(*WRITE, tenant=tenant_name("b"))
    response = upload(http, token_b, "second.wav", data)
    assert response.status_code in (200, 201), response.text
    audio_b = response.json()["id"]
    # Dedupe stays within a tenant: B's copy is B's own audio, transcribed for B.
    wait_transcribed(http, token_b, audio_b)
    transcript = http.get(f"/v1/audio/{audio_b}/transcript", headers=bearer(token_b))
    assert transcript.status_code == 200 and "country" in transcript.json()["text"].lower()
    # The model is named, but the server's file system is not shown to a tenant.
    model = transcript.json()["model"]
    assert model and not model.startswith("/") and model.count("/") <= 1, model
    hits = http.get("/v1/search", params={"q": "country"}, headers=bearer(token_b)).json()
    assert audio_b in {hit["audio_id"] for hit in hits["items"]}


# -- 4. search ----------------------------------------------------------------------------


def test_search_finds_spoken_words_with_highlight_and_timestamp(
    gw: Gateway, http: httpx.Client
) -> None:
    token, audio_id = transcribed_speech(http, gw, tenant_name("search"))
    for word in ("country", "Americans"):
        response = http.get("/v1/search", params={"q": word}, headers=bearer(token))
        assert response.status_code == 200, response.text
        hits = response.json()["items"]
        assert hits, f"no hit for {word!r}"
        assert {hit["audio_id"] for hit in hits} == {audio_id}
        for hit in hits:
            assert re.search(rf"<mark>{word}</mark>", hit["snippet"], re.IGNORECASE), hit
            assert isinstance(hit["start_s"], int | float)
            assert 0 <= hit["start_s"] <= hit["end_s"] <= 11.5, hit
    # A word that was never spoken finds nothing.
    nothing = http.get("/v1/search", params={"q": "photosynthesis"}, headers=bearer(token))
    assert nothing.json() == {"items": []}


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE audio; --",
        "%",
        "\\",
        '" OR 1=1',
        "country' OR '1'='1",
        "%' UNION SELECT id FROM audio --",
        "!!(&|<->:*",
    ],
)
def test_search_with_sql_metacharacters_is_harmless(
    gw: Gateway, http: httpx.Client, query: str
) -> None:
    token = gw.signer.token(*READ, tenant=tenant_name("inject"))
    response = http.get("/v1/search", params={"q": query}, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"items": []}
    admin = gw.signer.token("admin")
    response = http.get("/v1/search", params={"q": query}, headers=bearer(admin))
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["items"], list)
    assert gw.sql("SELECT to_regclass('public.audio') IS NOT NULL AS present") == [
        {"present": True}
    ]
    assert http.get("/v1/audio", headers=bearer(admin)).status_code == 200


# -- 5. the OpenAI client -----------------------------------------------------------


_open_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_openai_clients() -> Iterator[None]:
    """Each test's OpenAI clients are closed when it ends (no socket left to the collector)."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def openai_client(gw: Gateway, token: str) -> Any:
    import openai

    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token, max_retries=0, timeout=300)
    _open_clients.append(client)
    return client


def test_openai_client_transcribes_jfk(gw: Gateway) -> None:
    client = openai_client(gw, gw.signer.token(*WRITE, tenant=tenant_name("openai")))
    with open(DATA / "jfk.flac", "rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert "country" in result.text.lower(), result


def test_openai_client_with_a_bad_token_gets_an_authentication_error(gw: Gateway) -> None:
    import openai

    expired = gw.signer.token(*WRITE, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(gw, expired).audio.transcriptions.create(
            model="whisper-1", file=("jfk.wav", unique_speech("jfk.flac"))
        )
    assert caught.value.status_code == 401
    # OpenAI's error shape, so the client shows our message rather than a bare status.
    assert caught.value.type == "authentication_error"
    assert "valid bearer token" in caught.value.message


def test_openai_client_gets_valid_srt(gw: Gateway) -> None:
    client = openai_client(gw, gw.signer.token(*WRITE, tenant=tenant_name("openai-srt")))
    srt = client.audio.transcriptions.create(
        model="whisper-1", file=("jfk.wav", unique_speech("jfk.flac")), response_format="srt"
    )
    assert isinstance(srt, str)
    cues = parse_srt(srt)
    assert "country" in " ".join(c.text for c in cues).lower()
    assert all(later.start >= earlier.start for earlier, later in zip(cues, cues[1:], strict=False))
    assert cues[-1].end <= 11.5


def test_openai_client_gets_word_timestamps_in_verbose_json(gw: Gateway) -> None:
    client = openai_client(gw, gw.signer.token(*WRITE, tenant=tenant_name("openai-words")))
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("jfk.wav", unique_speech("jfk.flac")),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert "country" in result.text.lower()
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.5)
    words = result.words
    assert words, "no word timestamps"
    spoken = [w.word.strip(" ,.").lower() for w in words]
    assert "country" in spoken and "americans" in spoken, spoken
    for w in words:
        assert 0 <= w.start <= w.end <= 11.5, w
    starts = [w.start for w in words]
    assert starts == sorted(starts)


def test_openai_word_timestamps_for_audio_already_transcribed_without_them(gw: Gateway) -> None:
    client = openai_client(gw, gw.signer.token(*WRITE, tenant=tenant_name("again")))
    data = unique_speech("jfk.flac")
    first = client.audio.transcriptions.create(model="whisper-1", file=("first.wav", data))
    assert "country" in first.text.lower()
    again = client.audio.transcriptions.create(
        model="whisper-1",
        file=("again.wav", data),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert "country" in again.text.lower()
    assert again.words, "asked for word timestamps, got none"


# -- 6. upload size limit ------------------------------------------------------------


def _over_limit_upload(edge: Gateway, edge_http: httpx.Client, *, chunked: bool) -> httpx.Response:
    """Upload ~3 MB (over the 2 MB limit); check that nothing was stored; the response."""
    token = edge.signer.token(*WRITE, tenant=tenant_name("big"))
    name = f"too-big-{uuid.uuid4().hex[:8]}.wav"
    rows_before = edge.sql("SELECT count(*) AS n FROM audio")
    objects_before = edge.stored_objects()
    data = sized_wav(3_000_000)
    if chunked:
        # No Content-Length: the limit can only be enforced while the body streams in.
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        payload = head + data + f"\r\n--{boundary}--\r\n".encode()

        def stream() -> Iterator[bytes]:
            for i in range(0, len(payload), 64 * 1024):
                yield payload[i : i + 64 * 1024]

        response = edge_http.post(
            "/v1/audio",
            headers={**bearer(token), "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=stream(),
        )
    else:
        response = upload(edge_http, token, name, data)

    assert 400 <= response.status_code < 500, response.text
    assert edge.sql("SELECT count(*) AS n FROM audio") == rows_before
    assert edge.sql("SELECT id FROM audio WHERE original_name = %s", name) == []
    assert edge.stored_objects() == objects_before
    # The same token and service still store a file under the limit.
    small = upload_ok(edge_http, token, "small.wav", unique_silence())
    assert edge.sql("SELECT state FROM audio WHERE id = %s", small) == [{"state": "queued"}]
    assert len(edge.stored_objects()) == len(objects_before) + 1
    return response


def test_upload_over_the_size_limit_is_refused_with_413_and_stores_nothing(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    response = _over_limit_upload(edge, edge_http, chunked=False)
    body = assert_problem(response, 413)
    assert re.fullmatch(r"the limit is \d+ bytes", body["detail"]), body


def test_chunked_upload_over_the_size_limit_is_refused_and_stores_nothing(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    _over_limit_upload(edge, edge_http, chunked=True)


def test_chunked_upload_over_the_size_limit_answers_413(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    response = _over_limit_upload(edge, edge_http, chunked=True)
    assert_problem(response, 413)


# -- 7. health and docs ------------------------------------------------------------------


def test_health_bodies_say_nothing_about_the_service(gw: Gateway, http: httpx.Client) -> None:
    healthz = http.get("/healthz")
    assert healthz.status_code == 200
    assert healthz.text == "ok"
    readyz = http.get("/readyz")
    assert readyz.status_code == 200
    assert readyz.content == b'{"status":"ready"}'


def test_docs_serve_the_openapi_ui_and_schema_lists_audio(http: httpx.Client) -> None:
    docs = http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text.lower()
    schema = http.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/audio", "/v1/audio/{audio_id}", "/v1/audio/{audio_id}/transcript"} <= set(paths)
    assert {"get", "post"} <= set(paths["/v1/audio"])
    assert "/v1/audio/transcriptions" in paths


# -- 8. transcript formats and states ---------------------------------------------------


def test_transcript_renders_as_json_txt_srt_and_vtt(gw: Gateway, http: httpx.Client) -> None:
    token, audio_id = transcribed_speech(http, gw, tenant_name("formats"))
    path = f"/v1/audio/{audio_id}/transcript"

    as_json = http.get(path, headers=bearer(token))
    assert as_json.status_code == 200, as_json.text
    transcript = as_json.json()
    assert transcript["audio_id"] == audio_id
    assert "country" in transcript["text"].lower()
    segments = transcript["segments"]
    assert [s["idx"] for s in segments] == list(range(len(segments)))

    srt = http.get(path, params={"format": "srt"}, headers=bearer(token))
    assert srt.status_code == 200
    assert srt.headers["content-type"].startswith("application/x-subrip")
    srt_cues = parse_srt(srt.text)

    vtt = http.get(path, params={"format": "vtt"}, headers=bearer(token))
    assert vtt.status_code == 200
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n")
    vtt_cues = parse_vtt(vtt.text)

    txt = http.get(path, params={"format": "txt"}, headers=bearer(token))
    assert txt.status_code == 200
    assert txt.headers["content-type"].startswith("text/plain")
    assert "-->" not in txt.text and "country" in txt.text.lower()

    # SRT and WebVTT cut the segments into the same readable cues (two lines of at
    # most 42 characters, 7 s at most), in order, within the segments' time.
    assert srt_cues == vtt_cues
    assert len(srt_cues) >= len(segments)
    assert (
        " ".join(c.text for c in srt_cues).split() == " ".join(s["text"] for s in segments).split()
    )
    assert srt_cues[0].start == pytest.approx(segments[0]["start_s"], abs=0.001)
    assert srt_cues[-1].end <= segments[-1]["end_s"] + 0.001
    assert all(0 <= c.end - c.start <= 7.0005 for c in srt_cues)
    assert all(len(line) <= 42 for line in srt.text.splitlines())
    assert txt.text.split() == " ".join(s["text"] for s in segments).split()

    bad = http.get(path, params={"format": "docx"}, headers=bearer(token))
    assert_problem(bad, 400)


def test_text_file_named_wav_is_refused_with_its_reason_and_shown_rejected(
    gw: Gateway, http: httpx.Client
) -> None:
    token = gw.signer.token(*WRITE, tenant=tenant_name("text"))
    name = f"notes-{uuid.uuid4().hex[:8]}.wav"
    response = upload(http, token, name, b"this is a text file, not audio\n" * 20)
    body = assert_problem(response, 422)
    assert body["type"].endswith("/rejected-audio")
    assert "not a readable audio file" in body["detail"].lower()

    listed = http.get("/v1/audio", params={"state": "rejected"}, headers=bearer(token)).json()[
        "items"
    ]
    assert [row["original_name"] for row in listed] == [name]
    audio_id = listed[0]["id"]
    shown = http.get(f"/v1/audio/{audio_id}", headers=bearer(token))
    assert shown.status_code == 200
    assert shown.json()["state"] == "rejected"
    assert shown.json()["error"] == body["detail"]

    missing = http.get(f"/v1/audio/{audio_id}/transcript", headers=bearer(token))
    problem = assert_problem(missing, 409)
    assert problem["type"].endswith("/transcript-not-ready")
    assert "rejected" in problem["detail"]


def test_transcript_of_audio_not_yet_transcribed_is_409_with_its_state(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    # ``edge`` runs no worker: what is uploaded there stays queued.
    token = edge.signer.token(*WRITE, tenant=tenant_name("queued"))
    audio_id = upload_ok(edge_http, token, "waiting.wav", unique_silence())
    response = edge_http.get(f"/v1/audio/{audio_id}/transcript", headers=bearer(token))
    problem = assert_problem(response, 409)
    assert problem["type"].endswith("/transcript-not-ready")
    assert "queued" in problem["detail"]
    shown = edge_http.get(f"/v1/audio/{audio_id}", headers=bearer(token)).json()
    assert shown["state"] == "queued"


# -- 9. rate limiting ------------------------------------------------------------------


def test_subject_over_its_budget_gets_429_with_retry_after_while_others_pass(
    edge: Gateway, edge_http: httpx.Client
) -> None:
    tenant = tenant_name("rate")
    busy = edge.signer.token("audio:read", tenant=tenant)
    statuses = []
    for _ in range(3 * EDGE_RATE_PER_MINUTE):
        response = edge_http.get("/v1/audio", headers=bearer(busy))
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    # A full minute's budget passes; a burst beyond it does not.
    assert statuses[:EDGE_RATE_PER_MINUTE] == [200] * EDGE_RATE_PER_MINUTE, statuses
    assert statuses[-1] == 429, statuses
    assert len(statuses) <= EDGE_RATE_PER_MINUTE + 2, statuses
    assert_problem(response, 429)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60 / EDGE_RATE_PER_MINUTE + 1

    other = edge.signer.token("audio:read", tenant=tenant)
    assert edge_http.get("/v1/audio", headers=bearer(other)).status_code == 200
    assert edge_http.get("/v1/audio", headers=bearer(busy)).status_code == 429


# -- 10. request ids ---------------------------------------------------------------------


def test_responses_carry_a_request_id_and_a_safe_incoming_one_is_echoed(
    http: httpx.Client,
) -> None:
    first = http.get("/healthz").headers["x-request-id"]
    second = http.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second

    safe = f"client-{uuid.uuid4().hex[:8]}.retry_2"
    assert http.get("/healthz", headers={"X-Request-ID": safe}).headers["x-request-id"] == safe
    # Error answers carry it too.
    refused = http.get("/v1/audio", headers={"X-Request-ID": safe})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == safe

    for unsafe in ("has space", "x" * 65, "<script>", "a;b=c"):
        response = http.get("/healthz", headers={"X-Request-ID": unsafe})
        echoed = response.headers.get_list("x-request-id")
        assert len(echoed) == 1 and re.fullmatch(r"[0-9a-f]{32}", echoed[0]), (unsafe, echoed)
