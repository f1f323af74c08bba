"""Bearer JWT verification: who is calling, and what they may do.

:class:`TokenVerifier` checks a token in this order, refusing at the first failure:

1. size (``MAX_TOKEN_CHARS``), then the unverified header, a flat JSON object:
   ``alg`` must be in ``auth.algorithms`` (so ``none`` never passes) and a ``crit``
   header is refused (we implement no extension);
2. the key: HS256 uses only ``auth.hs256_secret``; other algorithms pick a key by
   ``kid`` from the JWKS sources (``auth.jwks_file``, then ``auth.jwks_url``), and
   the PEM public key (configured or development) serves every other token. A token
   without ``kid`` and without a PEM key uses the only key of a one-key set. The key's
   type must fit the algorithm: RSA only for RS256, EC P-256 only for ES256, OKP only
   for EdDSA, whatever the token claims;
3. signature and claims: ``exp``, ``iat``, ``sub``, ``aud`` and ``iss`` required,
   audience and issuer strings equal to the configured ones (an ``aud`` list is
   refused, even one holding ours), ``exp``/``iat``/``nbf`` JSON numbers (never
   numeric strings), ``nbf`` honoured, all with ``auth.leeway_s`` of clock skew.

Every failure, however malformed the token, is an :class:`AuthError` whose ``reason``
is for logs only; the HTTP layer answers all of them with the same 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.keys import (
    KeySetUnavailable,
    PublicKey,
    RemoteKeySet,
    find_key,
    load_jwks_file,
    load_private_key,
    load_public_key,
    resolve_key_files,
)
from pipeline.config import AuthSettings
from pipeline.errors import Ai2TextError, ConfigError

SCOPES = (
    "audio:read",
    "audio:write",
    "transcripts:read",
    "transcripts:write",
    "datasets:read",
    "training:read",
    "webhooks:manage",
    "admin",
)

REQUIRED_CLAIMS = ("exp", "iat", "sub", "aud", "iss")
TIME_CLAIMS = ("exp", "iat", "nbf")
# Real tokens are well under this; the bound comes before any decoding.
MAX_TOKEN_CHARS = 8 * 1024
MAX_HEADER_CHARS = 2 * 1024
DEFAULT_MIN_REFETCH_S = 30.0

# Most specific first: InvalidSignatureError is a DecodeError, everything a PyJWTError.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.MissingRequiredClaimError, "missing required claim"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.DecodeError, "malformed token"),
)


class AuthError(Ai2TextError):
    """The request is not authenticated; ``reason`` is for logs, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """The verified caller."""

    subject: str
    scopes: frozenset[str]
    tenant: str | None
    # The token's ``exp`` (epoch seconds): a console session opened with it ends then too.
    expires_at: float | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether this caller holds ``scope``; ``admin`` holds every scope."""
        return self.is_admin or scope in self.scopes

    def tenant_filter(self) -> str | None:
        """The tenant this caller sees: ``None`` (all) for admins, else its own."""
        if self.is_admin:
            return None
        return self.tenant or "default"


def parse_bearer(header_value: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if header_value is None or not header_value.strip():
        raise AuthError("missing token")
    parts = header_value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("malformed authorization header")
    return parts[1]


class TokenVerifier:
    """Verifies bearer tokens against the keys and rules in ``settings.auth``.

    ``verify`` is synchronous and may fetch the JWKS (bounded by ``auth.jwks_timeout_s``),
    so async callers run it in a thread. An unknown ``kid`` refetches the JWKS at most
    once per ``min_refetch_interval_s`` (default: ``min(30 s, auth.jwks_cache_s / 10)``);
    ``clock`` (monotonic seconds) paces those refetches and may be replaced in tests.
    """

    def __init__(
        self,
        auth: AuthSettings,
        data_dir: Path,
        *,
        min_refetch_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``data_dir`` holds the development key pair (``auth.dev_keys``)."""
        self._algorithms = frozenset(auth.algorithms)
        self._audience = auth.audience
        self._issuer = auth.issuer
        self._leeway_s = auth.leeway_s
        self._hmac_secret: bytes | None = None
        if "HS256" in self._algorithms and auth.hs256_secret is not None:
            self._hmac_secret = auth.hs256_secret.get_secret_value().encode("utf-8")

        private_path, public_path = resolve_key_files(auth, data_dir)
        self._pem_key: PublicKey | None = None
        if public_path is not None:
            self._pem_key = load_public_key(public_path)
        elif private_path is not None and auth.jwks_file is None and auth.jwks_url is None:
            self._pem_key = load_private_key(private_path).public_key()
        self._file_keys = load_jwks_file(auth.jwks_file) if auth.jwks_file else []
        self._remote: RemoteKeySet | None = None
        if auth.jwks_url is not None:
            if min_refetch_interval_s is None:
                min_refetch_interval_s = min(DEFAULT_MIN_REFETCH_S, auth.jwks_cache_s / 10)
            self._remote = RemoteKeySet(
                auth.jwks_url,
                cache_s=auth.jwks_cache_s,
                timeout_s=auth.jwks_timeout_s,
                min_refetch_interval_s=min_refetch_interval_s,
                clock=clock,
            )
        has_public = self._pem_key is not None or self._file_keys or self._remote is not None
        if not has_public and self._hmac_secret is None:
            raise ConfigError(
                "no key to verify tokens with: set auth.public_key_file, auth.jwks_file or "
                "auth.jwks_url, or turn on auth.dev_keys"
            )

    @property
    def fetches_keys(self) -> bool:
        """Whether ``verify`` may go to the network (a JWKS URL is configured)."""
        return self._remote is not None

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`AuthError` for anything else."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token too large")
        header = _unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("algorithm not allowed")
        if "crit" in header:
            raise AuthError("critical header not supported")
        claims = self._decode(token, alg, self._key_for(alg, header))
        return _principal(claims)

    def _key_for(self, alg: str, header: Mapping[str, Any]) -> PublicKey | bytes:
        if alg == "HS256":
            if self._hmac_secret is None:
                raise AuthError("algorithm not allowed")
            return self._hmac_secret
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token")
        jwk = self._find_jwk(kid)
        if jwk is not None:
            if jwk.algorithm_name != alg:
                raise AuthError("key does not fit algorithm")
            return _fitting_key(alg, jwk.key)
        if self._pem_key is not None:
            return _fitting_key(alg, self._pem_key)
        raise AuthError("unknown key id" if kid is not None else "no key id")

    def _find_jwk(self, kid: str | None) -> jwt.PyJWK | None:
        """A JWKS key by ``kid``; without one, the only key when it is the only source."""
        if kid is None and (
            self._pem_key is not None or (bool(self._file_keys) and self._remote is not None)
        ):
            return None
        jwk = find_key(self._file_keys, kid) if self._file_keys else None
        if jwk is not None or self._remote is None:
            return jwk
        try:
            return self._remote.find(kid)
        except KeySetUnavailable as exc:
            if self._pem_key is not None:
                return None
            raise AuthError("key set unavailable") from exc

    def _decode(self, token: str, alg: str, key: PublicKey | bytes) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            reason = next((text for cls, text in _REASONS if isinstance(exc, cls)), None)
            raise AuthError(reason or "invalid token") from exc
        except InvalidSignature as exc:
            raise AuthError("bad signature") from exc
        except (UnsupportedAlgorithm, ValueError, TypeError, ArithmeticError) as exc:
            # pyjwt turns claim values into numbers itself: inf, nan and lists escape
            # its own error types.
            raise AuthError("malformed token") from exc
        except RecursionError as exc:  # JSON nested deeper than the parser goes
            raise AuthError("malformed token") from exc
        self._check_claim_types(claims)
        return claims

    def _check_claim_types(self, claims: Mapping[str, Any]) -> None:
        """Exact matches and JSON numbers, whatever the library accepts or coerces."""
        if claims.get("iss") != self._issuer:
            raise AuthError("wrong issuer")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience != self._audience:
            raise AuthError("wrong audience")
        for name in TIME_CLAIMS:
            if name in claims and not _is_number(claims[name]):
                raise AuthError(f"malformed {name} claim")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read before anything else so that our own rules come first.

    Its size is bounded first; JSON nested deeper than the parser's recursion limit
    is malformed like any other.
    """
    segment = token.partition(".")[0]
    if len(segment) > MAX_HEADER_CHARS:
        raise AuthError("header too large")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError) as exc:
        # ValueError covers UnicodeDecodeError and JSONDecodeError.
        raise AuthError("malformed token") from exc
    if not isinstance(header, dict):
        raise AuthError("malformed token")
    return header


def _is_number(value: object) -> bool:
    """A JSON number (not a bool, not a numeric string), finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _fitting_key(alg: str, key: object) -> PublicKey:
    """``key`` if its type belongs to ``alg``'s family; never across families."""
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if (
        alg == "ES256"
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise AuthError("key does not fit algorithm")


def _principal(claims: Mapping[str, Any]) -> Principal:
    # Both end up in PostgreSQL text (the tenant column, upload source URIs): no NUL.
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or "\x00" in subject:
        raise AuthError("malformed subject")
    tenant = claims.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant or "\x00" in tenant):
        raise AuthError("malformed tenant")
    return Principal(
        subject=subject, scopes=_scopes(claims), tenant=tenant, expires_at=float(claims["exp"])
    )


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """Known scopes from ``scope`` (space-separated) and ``scp`` (string or list)."""
    granted: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            granted.extend(value.split())
        elif name == "scp" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            granted.extend(value)
        else:
            raise AuthError("malformed scope claim")
    return frozenset(scope for scope in granted if scope in SCOPES)
