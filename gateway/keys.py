"""Signing and verification keys: files, the development key pair, JWKS sets, minting.

Key material comes from, in this order of precedence:

* ``auth.private_key_file`` / ``auth.public_key_file`` (PEM), as configured;
* with none of ``public_key_file``, ``jwks_file``, ``jwks_url`` or ``private_key_file``
  configured and ``auth.dev_keys`` on, an RSA 2048 pair created once under
  ``<data_dir>/keys`` (``jwt-private.pem`` mode 0600, ``jwt-public.pem``);
* a JWKS document, read from ``auth.jwks_file`` or fetched from ``auth.jwks_url``
  (:class:`RemoteKeySet`, which bounds how often an unknown ``kid`` can refetch it).

The key id a minted token carries is the RFC 7638 thumbprint of its public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from pipeline.config import AuthSettings
from pipeline.errors import ConfigError, TransientError

log = structlog.get_logger(__name__)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

DEV_PRIVATE_NAME = "jwt-private.pem"
DEV_PUBLIC_NAME = "jwt-public.pem"

_JWK_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class KeySetUnavailable(TransientError):
    """The JWKS endpoint could not be read and no earlier key set is at hand."""


# -- the development key pair ---------------------------------------------------------


def ensure_dev_keys(data_dir: Path) -> tuple[Path, Path]:
    """Create the development RSA 2048 pair under ``<data_dir>/keys`` unless it exists.

    The private key is written to a temporary file created with mode 0600 and linked
    into place, so it is never visible half-written or with looser permissions, and of
    two processes racing here exactly one key wins. Returns (private, public) paths.
    """
    keys_dir = data_dir / "keys"
    private_path = keys_dir / DEV_PRIVATE_NAME
    public_path = keys_dir / DEV_PUBLIC_NAME
    try:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not private_path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if _publish_once(private_path, pem, mode=0o600):
                log.info("created development JWT key pair", path=str(private_path))
        if not public_path.exists():
            public = load_private_key(private_path).public_key()
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _publish_once(public_path, pem, mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot create development JWT keys in {keys_dir}: {exc}") from exc
    return private_path, public_path


def _publish_once(path: Path, data: bytes, *, mode: int) -> bool:
    """Write ``data`` to ``path`` atomically unless the file exists; True if we wrote it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def resolve_key_files(auth: AuthSettings, data_dir: Path) -> tuple[Path | None, Path | None]:
    """The (private, public) PEM files in use; the dev pair (created) when nothing is set."""
    configured = (auth.private_key_file, auth.public_key_file, auth.jwks_file, auth.jwks_url)
    if auth.dev_keys and all(item is None for item in configured):
        return ensure_dev_keys(data_dir)
    return auth.private_key_file, auth.public_key_file


# -- loading keys ----------------------------------------------------------------------


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted PEM private key (RSA, EC, Ed25519 or Ed448)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise ConfigError(f"{path}: unsupported private key type {type(key).__name__}")
    return key


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key (RSA, EC, Ed25519 or Ed448)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, PublicKey):
        raise ConfigError(f"{path}: unsupported public key type {type(key).__name__}")
    return key


def load_jwks_file(path: Path) -> list[jwt.PyJWK]:
    """The signing keys of a local JWKS document."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read JWKS file {path}: {exc.strerror}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ConfigError(f"JWKS file {path} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"JWKS file {path} must hold a JSON object with 'keys'")
    try:
        return signing_keys(jwt.PyJWKSet.from_dict(document))
    except jwt.PyJWTError as exc:
        raise ConfigError(f"JWKS file {path} holds no usable keys: {exc}") from exc


def signing_keys(jwk_set: jwt.PyJWKSet) -> list[jwt.PyJWK]:
    """The keys of a set that may verify signatures (``use`` absent or ``sig``)."""
    return [key for key in jwk_set.keys if key.public_key_use in (None, "sig")]


def find_key(keys: Sequence[jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    """The key with this ``kid``; without a kid, the only key of a one-key set."""
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    for key in keys:
        if key.key_id == kid:
            return key
    return None


def jwk_thumbprint(key: PublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public key, base64url without padding."""
    members: dict[str, str]
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        members = {"e": _b64_uint(numbers.e), "kty": "RSA", "n": _b64_uint(numbers.n)}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = _JWK_CURVES.get(key.curve.name)
        if curve is None:
            raise ConfigError(f"unsupported elliptic curve {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        point = key.public_numbers()
        members = {
            "crv": curve,
            "kty": "EC",
            "x": _b64(point.x.to_bytes(size, "big")),
            "y": _b64(point.y.to_bytes(size, "big")),
        }
    else:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        members = {"crv": crv, "kty": "OKP", "x": _b64(raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


# -- a JWKS endpoint ------------------------------------------------------------------


class RemoteKeySet:
    """Keys fetched from a JWKS URL, cached for ``cache_s`` seconds.

    ``jwt.PyJWKClient`` does the HTTP work (http/https only, no redirects, timeout). When
    to go to the network is decided here, so that it stays bounded whatever tokens
    arrive: an unknown ``kid`` refetches the set only when the last fetch attempt is at
    least ``min_refetch_interval_s`` old, and a failed fetch is not retried sooner than
    that either. A failed fetch keeps serving the last good set, if there is one.
    All lookups are serialised, so there is never more than one fetch in flight.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_s: float,
        timeout_s: float,
        min_refetch_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._client = jwt.PyJWKClient(
                url, cache_jwk_set=True, lifespan=cache_s, timeout=timeout_s
            )
        except jwt.PyJWKClientError as exc:
            raise ConfigError(f"auth.jwks_url {url!r} cannot be used: {exc}") from exc
        self.url = url
        self._cache_s = cache_s
        self._min_interval_s = min_refetch_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self.fetch_attempts = 0

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid`` (see :func:`find_key`), refetching the set if allowed.

        Raises :class:`KeySetUnavailable` when no key set could ever be fetched.
        """
        with self._lock:
            now = self._clock()
            stale = self._keys is None or now - self._fetched_at >= self._cache_s
            if stale and self._may_attempt(now):
                self._fetch()
            if self._keys is None:
                raise KeySetUnavailable(f"JWKS {self.url} could not be fetched")
            key = find_key(self._keys, kid)
            if key is None and kid is not None and self._may_attempt(self._clock()):
                self._fetch()
                key = find_key(self._keys, kid)
            return key

    def _may_attempt(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_interval_s

    def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_attempts += 1
        try:
            keys = signing_keys(self._client.get_jwk_set(refresh=True))
        except jwt.PyJWTError as exc:  # PyJWKClientError, PyJWKSetError, InvalidKeyError
            log.warning(
                "JWKS fetch failed",
                url=self.url,
                error=str(exc),
                serving_previous_keys=self._keys is not None,
            )
            return
        self._keys = keys
        self._fetched_at = self._clock()


# -- minting ---------------------------------------------------------------------------


def mint_token(
    auth: AuthSettings,
    data_dir: Path,
    *,
    subject: str,
    scopes: Sequence[str],
    tenant: str | None,
    ttl_s: float = 3600,
    kid: str | None = None,
) -> str:
    """A token signed with the configured (or development) private key.

    RS256 for an RSA key, ES256 for an EC P-256 key, EdDSA for an Ed25519/Ed448 key. The
    ``kid`` header defaults to the RFC 7638 thumbprint of the public key.
    """
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    private_path, _ = resolve_key_files(auth, data_dir)
    if private_path is None:
        raise ConfigError(
            "no private key to sign tokens with: set auth.private_key_file, or turn on "
            "auth.dev_keys with no public_key_file, jwks_file or jwks_url configured"
        )
    key = load_private_key(private_path)
    algorithm = _signing_algorithm(key, private_path)
    if algorithm not in auth.algorithms:
        raise ConfigError(
            f"{private_path} signs {algorithm}, which auth.algorithms does not accept "
            f"({', '.join(auth.algorithms)})"
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": auth.issuer,
        "aud": auth.audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + max(1, round(ttl_s)),
        "scope": " ".join(scopes),
    }
    if tenant is not None:
        claims["tenant"] = tenant
    headers = {"kid": kid if kid is not None else jwk_thumbprint(key.public_key())}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _signing_algorithm(key: PrivateKey, path: Path) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(f"{path}: RSA keys shorter than 2048 bits are refused")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"{path}: only P-256 EC keys are supported (ES256)")
        return "ES256"
    return "EdDSA"
