"""TokenVerifier against a JWKS served over real HTTP: lookup, rotation, bounded refetches."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import AuthError, Principal
from pipeline.config import AuthSettings, Settings
from tests.components import verifier_of
from tests.e2e.harness import wait_until

ISSUER = "https://auth.example.com"
AUDIENCE = "ai2text"


class JwksServer:
    """A JWKS document over HTTP on 127.0.0.1 that counts the requests it answers."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        self._lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with state._lock:
                    state.requests += 1
                    body = json.dumps(state.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._running = True

    def publish(self, *keys: dict[str, Any]) -> None:
        with self._lock:
            self.document = {"keys": list(keys)}

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("AI2TEXT_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def server() -> Iterator[JwksServer]:
    jwks = JwksServer()
    try:
        yield jwks
    finally:
        jwks.stop()


@pytest.fixture(scope="module")
def old_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return data | {"kid": kid, "use": "sig", "alg": "RS256"}


def settings_for(tmp_path: Path, url: str, **auth: Any) -> Settings:
    base: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": url}
    return Settings(data_dir=tmp_path / "data", auth=AuthSettings(**(base | auth)))


def token(key: rsa.RSAPrivateKey, kid: str | None, subject: str = "alice") -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 300,
        "scope": "audio:read",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def test_token_with_known_kid_verifies(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"), jwk(new_key, "new"))
    verifier = verifier_of(settings_for(tmp_path, server.url))

    assert verifier.verify(token(new_key, "new", subject="n")).subject == "n"
    assert verifier.verify(token(old_key, "old", subject="o")).subject == "o"
    assert server.requests == 1
    assert verifier.fetches_keys


def test_token_without_kid_uses_the_only_key_of_the_set(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    verifier = verifier_of(settings_for(tmp_path, server.url))

    assert verifier.verify(token(old_key, None)).subject == "alice"


def test_burst_of_random_kids_causes_a_bounded_number_of_fetches(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    verifier = verifier_of(settings_for(tmp_path, server.url))
    tokens = [token(old_key, secrets.token_urlsafe(12)) for _ in range(200)]

    def reason(t: str) -> str:
        try:
            verifier.verify(t)
        except AuthError as exc:
            return exc.reason
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(reason, tokens))

    assert set(reasons) == {"unknown key id"}
    assert server.requests <= 2


def test_rotated_key_is_accepted_after_the_refetch_interval(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    clock = FakeClock()
    verifier = verifier_of(
        settings_for(tmp_path, server.url), min_refetch_interval_s=0.2, clock=clock
    )
    assert verifier.verify(token(old_key, "old")).subject == "alice"

    server.publish(jwk(old_key, "old"), jwk(new_key, "new"))
    clock.advance(0.1)
    with pytest.raises(AuthError, match="unknown key id"):
        verifier.verify(token(new_key, "new"))
    assert server.requests == 1

    clock.advance(0.1)
    assert verifier.verify(token(new_key, "new", subject="rotated")).subject == "rotated"
    assert verifier.verify(token(old_key, "old")).subject == "alice"
    assert server.requests == 2


def test_rotated_key_is_picked_up_in_real_time(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    window_s = 0.2
    verifier = verifier_of(settings_for(tmp_path, server.url), min_refetch_interval_s=window_s)
    verifier.verify(token(old_key, "old"))
    fetched_by = time.monotonic()
    server.publish(jwk(new_key, "new"))
    rotated = token(new_key, "new")

    # Real time: once the refetch window that began with the first fetch has passed,
    # the new kid is fetched. Until then an unknown kid is refused without a fetch.
    def verified() -> Principal | None:
        try:
            return verifier.verify(rotated)
        except AuthError:
            return None

    principal = wait_until(verified, timeout=10, what="the rotated key", every=0.02)

    assert time.monotonic() >= fetched_by + window_s
    assert principal.subject == "alice"
    assert server.requests == 2


def test_expired_cache_is_refreshed_for_known_kids(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    clock = FakeClock()
    verifier = verifier_of(settings_for(tmp_path, server.url, jwks_cache_s=60), clock=clock)
    verifier.verify(token(old_key, "old"))

    clock.advance(59)
    verifier.verify(token(old_key, "old"))
    assert server.requests == 1
    clock.advance(1)
    verifier.verify(token(old_key, "old"))
    assert server.requests == 2


def test_outage_keeps_serving_the_last_good_key_set(
    tmp_path: Path, server: JwksServer, old_key: rsa.RSAPrivateKey
) -> None:
    server.publish(jwk(old_key, "old"))
    clock = FakeClock()
    verifier = verifier_of(settings_for(tmp_path, server.url, jwks_cache_s=60), clock=clock)
    verifier.verify(token(old_key, "old"))

    server.stop()
    clock.advance(120)

    assert verifier.verify(token(old_key, "old")).subject == "alice"
    with pytest.raises(AuthError, match="unknown key id"):
        verifier.verify(token(old_key, "gone"))


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_jwks_server_down_gives_auth_error(tmp_path: Path, old_key: rsa.RSAPrivateKey) -> None:
    url = f"http://127.0.0.1:{unused_port()}/jwks.json"
    verifier = verifier_of(settings_for(tmp_path, url, jwks_timeout_s=1.0))

    started = time.monotonic()
    with pytest.raises(AuthError, match="key set unavailable"):
        verifier.verify(token(old_key, "old"))

    assert time.monotonic() - started < 1.0 + 2.0


def test_hanging_jwks_server_gives_auth_error_within_the_timeout(
    tmp_path: Path, old_key: rsa.RSAPrivateKey
) -> None:
    with socket.socket() as listener:  # accepts connections in the backlog, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        verifier = verifier_of(
            settings_for(tmp_path, f"http://127.0.0.1:{port}/jwks.json", jwks_timeout_s=0.5)
        )

        started = time.monotonic()
        with pytest.raises(AuthError, match="key set unavailable"):
            verifier.verify(token(old_key, "old"))
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(AuthError, match="key set unavailable"):
            verifier.verify(token(old_key, "old"))
        second = time.monotonic() - started

    assert first < 0.5 + 2.0
    assert second < 0.4  # the failed fetch is not retried before the refetch interval
