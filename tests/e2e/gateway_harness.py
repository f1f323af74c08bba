"""Helpers for driving the HTTP gateway end to end: keys, tokens, unique audio, SRT."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.harness import Service, wait_until
from tests.wav import speech_pcm, wav_bytes

READ = ("audio:read", "transcripts:read")
WRITE = (*READ, "audio:write")
PROBLEM = "application/problem+json"

DATA = Path(__file__).resolve().parents[1] / "data"
ISSUER = "https://auth.example.com"
AUDIENCE = "ai2text"
DROP = object()  # a claim value meaning "leave this claim out"
_counter = itertools.count(1)


# -- keys and tokens -----------------------------------------------------------------


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def jwks_document(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [data | {"kid": kid, "use": "sig", "alg": "RS256"}]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(
    *,
    sub: str | None = None,
    scopes: tuple[str, ...] = ("audio:read",),
    tenant: str | None | object = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Claims a correctly configured issuer would put in a token; ``DROP`` removes one."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub or f"user-{uuid.uuid4().hex[:12]}",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "scope": " ".join(scopes),
    }
    if tenant is not None:
        body["tenant"] = tenant
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


@dataclass
class Signer:
    """Signs RS256 tokens with one private key (and optionally a ``kid`` header)."""

    key: rsa.RSAPrivateKey
    kid: str | None = None

    def sign(self, payload: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        all_headers = dict(headers or {})
        if self.kid is not None:
            all_headers.setdefault("kid", self.kid)
        return jwt.encode(payload, self.key, algorithm="RS256", headers=all_headers or None)

    def token(
        self,
        *scopes: str,
        tenant: str | None = None,
        sub: str | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        return self.sign(claims(sub=sub, scopes=scopes, tenant=tenant, **overrides), headers)


def unsigned_token(payload: dict[str, Any]) -> str:
    """``alg: none``: header and payload, empty signature."""
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(payload)}."


def hs256_token(payload: dict[str, Any], secret: bytes) -> str:
    """HS256 computed by hand, e.g. with a public key's PEM as the HMAC secret."""
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT'})}.{b64url_json(payload)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tamper(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with ``changes`` applied."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{header}.{b64url_json(body)}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- audio -----------------------------------------------------------------------------


@functools.cache
def _decoded(name: str) -> bytes:
    """16-bit little-endian 16 kHz mono PCM of a file in tests/data."""
    return speech_pcm(DATA / name)


def unique_speech(name: str = "jfk.flac") -> bytes:
    """The speech of ``name`` as a WAV whose bytes no other call returns.

    A different number of trailing silent samples changes the sha256, so the pipeline
    does not take it for a duplicate, and changes nothing a listener would hear.
    """
    pad = 16 * next(_counter)  # a millisecond more per call
    return wav_bytes(_decoded(name) + b"\x00\x00" * pad)


def unique_silence(seconds: float = 0.5) -> bytes:
    """A short, quiet, unique WAV: cheap to transcribe."""
    frames = int(16000 * seconds)
    pcm = bytearray(frames * 2)
    mark = uuid.uuid4().bytes
    pcm[: len(mark)] = mark  # a few near-silent samples that make the bytes unique
    return wav_bytes(bytes(pcm))


def sized_wav(total_bytes: int) -> bytes:
    """A valid WAV of roughly ``total_bytes`` (low noise, unique)."""
    frames = max(1, (total_bytes - 44) // 2)
    seed = uuid.uuid4().bytes
    pcm = (seed * (frames * 2 // len(seed) + 1))[: frames * 2]
    return wav_bytes(pcm)


# -- subtitles -----------------------------------------------------------------------

_SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
_VTT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def _seconds(parts: tuple[str, ...]) -> float:
    h, m, s, ms = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + ms / 1000


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def parse_srt(text: str) -> list[Cue]:
    """Strict SRT: blocks numbered 1, 2, …, a timing line each, then text."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    assert blocks, f"no SRT blocks in {text!r}"
    cues = []
    for n, block in enumerate(blocks, start=1):
        lines = block.splitlines()
        assert lines[0] == str(n), f"block {n} is numbered {lines[0]!r}"
        timing = _SRT_TIME.match(lines[1])
        assert timing, f"bad SRT timing line {lines[1]!r}"
        start, end = _seconds(timing.groups()[:4]), _seconds(timing.groups()[4:])
        assert end >= start, lines[1]
        assert len(lines) >= 3 and lines[2].strip(), f"block {n} has no text"
        cues.append(Cue(start, end, " ".join(lines[2:])))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    assert text.startswith("WEBVTT"), text[:40]
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()][1:]
    assert blocks, f"no cues in {text!r}"
    cues = []
    for block in blocks:
        lines = block.splitlines()
        timing = _VTT_TIME.match(lines[0])
        assert timing, f"bad VTT timing line {lines[0]!r}"
        start, end = _seconds(timing.groups()[:4]), _seconds(timing.groups()[4:])
        assert end >= start, lines[0]
        cues.append(Cue(start, end, " ".join(lines[1:])))
    return cues


# -- a running service ------------------------------------------------------------------


@dataclass
class Gateway:
    """A running ``ai2text`` process with its gateway, database and data directory."""

    service: Service
    url: str
    env: dict[str, str]
    data_dir: Path
    database_url: str
    signer: Signer

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=180, **kwargs)

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def stored_objects(self) -> set[Path]:
        root = self.data_dir / "objects" / "audio"
        return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def start_keyed_gateway(
    role: str,
    root: Path,
    database_url: str,
    extra_env: dict[str, str],
    *,
    ready_event: str | None = None,
) -> Gateway:
    """``start_gateway`` with a new RSA key: its public half in a PEM file the service
    reads, its private half in the gateway's ``signer``."""
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    env = {"AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem), **extra_env}
    return start_gateway(role, root, database_url, Signer(key), env, ready_event=ready_event)


def start_gateway(
    role: str,
    root: Path,
    database_url: str,
    signer: Signer,
    extra_env: dict[str, str],
    *,
    ready_event: str | None = None,
) -> Gateway:
    env = {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_GATEWAY__HOST": "127.0.0.1",
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "0.5",
        "AI2TEXT_AUTH__ISSUER": ISSUER,
        "AI2TEXT_AUTH__AUDIENCE": AUDIENCE,
        **extra_env,
    }
    service = Service(role, env, root / f"{role}.log").start()
    try:
        listening = service.wait_for_event("gateway listening", timeout=120)
        if ready_event is not None:
            service.wait_for_event(ready_event, timeout=180)
        url = str(listening["url"])
        assert url.startswith("http://127.0.0.1:"), url
        wait_until(lambda: _ready(url), timeout=30, what="/readyz to answer 200")
    except BaseException:
        service.kill()
        raise
    return Gateway(service, url, env, root / "data", database_url, signer)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
