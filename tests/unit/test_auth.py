"""Bearer JWT verification, token minting and the development key pair."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pydantic import ValidationError

from gateway.auth import AuthError, Principal, TokenVerifier, parse_bearer
from gateway.keys import ensure_dev_keys, jwk_thumbprint, mint_token, resolve_key_files
from pipeline.config import AuthSettings, Settings
from pipeline.errors import ConfigError
from tests.components import verifier_of

ISSUER = "https://auth.example.com"
AUDIENCE = "ai2text"
HS_SECRET = "s" * 40
DROP = object()  # a claim value meaning "leave this claim out"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("AI2TEXT_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def make_settings(tmp_path: Path, **auth: Any) -> Settings:
    base: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "dev_keys": False}
    return Settings(data_dir=tmp_path / "data", auth=AuthSettings(**(base | auth)))


def verifier_for(tmp_path: Path, key: Any, **auth: Any) -> TokenVerifier:
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(key))
    return verifier_of(make_settings(tmp_path, public_key_file=path, **auth))


@pytest.fixture
def verifier(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> TokenVerifier:
    return verifier_for(tmp_path, rsa_key)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "audio:read transcripts:read",
        "tenant": "acme",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


def sign(
    key: Any, payload: dict[str, Any], alg: str = "RS256", headers: dict[str, Any] | None = None
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def reject_reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    return caught.value.reason


# -- accepted tokens -------------------------------------------------------------------


def test_valid_rs256_token_gives_principal_with_scopes_and_tenant(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    principal = verifier.verify(sign(rsa_key, claims()))

    assert principal == Principal(
        subject="alice", scopes=frozenset({"audio:read", "transcripts:read"}), tenant="acme"
    )


def test_valid_es256_token_is_accepted(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = verifier_for(tmp_path, ec_key)

    principal = verifier.verify(sign(ec_key, claims(sub="bob", tenant=DROP), alg="ES256"))

    assert principal.subject == "bob"
    assert principal.tenant is None


def test_eddsa_token_is_accepted_when_configured(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    verifier = verifier_for(tmp_path, key, algorithms=("EdDSA",))

    assert verifier.verify(sign(key, claims(), alg="EdDSA")).subject == "alice"


def test_unknown_scopes_are_ignored_and_scp_list_is_read(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, claims(scope="audio:read launch:missiles", scp=["audio:write", "x"]))

    assert verifier.verify(token).scopes == {"audio:read", "audio:write"}


def test_scope_claim_of_wrong_type_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert (
        reject_reason(verifier, sign(rsa_key, claims(scope=["admin"]))) == "malformed scope claim"
    )


def test_leeway_accepts_token_expired_ten_seconds_ago(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = verifier_for(tmp_path, rsa_key, leeway_s=30)
    now = int(time.time())

    token = sign(rsa_key, claims(iat=now - 600, nbf=now - 600, exp=now - 10))

    assert verifier.verify(token).subject == "alice"


# -- the Authorization header ----------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b", "token-only"],
)
def test_parse_bearer_rejects_missing_or_malformed_header(header: str | None) -> None:
    with pytest.raises(AuthError):
        parse_bearer(header)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_parse_bearer_accepts_scheme_in_any_case(scheme: str) -> None:
    assert parse_bearer(f"{scheme} abc.def.ghi") == "abc.def.ghi"


# -- rejected tokens -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "x" * 20000])
def test_garbage_token_is_rejected(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_alg_none_token_is_rejected(verifier: TokenVerifier) -> None:
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims())}."

    assert reject_reason(verifier, token) == "algorithm not allowed"


def hs256_with_public_pem(key: rsa.RSAPrivateKey) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims(scope='admin'))}"
    mac = hmac.new(public_pem(key), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_hs256_signed_with_rsa_public_key_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert reject_reason(verifier, hs256_with_public_pem(rsa_key)) == "algorithm not allowed"


def test_hs256_signed_with_rsa_public_key_is_rejected_even_when_hs256_is_allowed(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = verifier_for(
        tmp_path, rsa_key, algorithms=("RS256", "HS256"), hs256_secret=HS_SECRET
    )

    assert reject_reason(verifier, hs256_with_public_pem(rsa_key)) == "bad signature"


def test_token_claiming_es256_is_not_checked_with_an_rsa_key(
    verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec_key, claims(), alg="ES256")

    assert reject_reason(verifier, token) == "key does not fit algorithm"


def test_token_claiming_rs256_is_not_checked_with_an_ec_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = verifier_for(tmp_path, ec_key)

    assert reject_reason(verifier, sign(rsa_key, claims())) == "key does not fit algorithm"


def test_expired_token_is_rejected(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    token = sign(rsa_key, claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600))

    assert reject_reason(verifier, token) == "token expired"


def test_token_not_yet_valid_beyond_leeway_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = sign(rsa_key, claims(nbf=now + 600, exp=now + 900))

    assert reject_reason(verifier, token) == "token not yet valid"


def test_wrong_audience_is_rejected(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    assert reject_reason(verifier, sign(rsa_key, claims(aud="other-service"))) == "wrong audience"


def sign_raw(key: rsa.RSAPrivateKey, payload: Any, header: bytes | None = None) -> str:
    """RS256 over exactly these JSON bytes: pyjwt's encoder checks and converts claims."""
    head = b64url(header) if header is not None else b64json({"alg": "RS256", "typ": "JWT"})
    signing_input = f"{head}.{b64url(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@pytest.mark.parametrize(
    "audience", [[AUDIENCE], [AUDIENCE, "other-service"], {"aud": AUDIENCE}, 7]
)
def test_audience_that_is_not_exactly_our_string_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, audience: Any
) -> None:
    """The README promises an exact audience: a list holding ours is not it."""
    assert reject_reason(verifier, sign_raw(rsa_key, claims(aud=audience))) == "wrong audience"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_time_claim_given_as_a_numeric_string_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, claim: str
) -> None:
    value = claims()[claim] + (9_000_000_000 if claim == "exp" else 0)
    token = sign_raw(rsa_key, claims(**{claim: str(value)}))

    assert reject_reason(verifier, token) == f"malformed {claim} claim"


def test_time_claims_as_json_numbers_with_fractions_are_accepted(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = time.time()
    token = sign_raw(rsa_key, claims(iat=now, nbf=now, exp=now + 300.5))

    assert verifier.verify(token).subject == "alice"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def parts(header: bytes, payload: bytes | None = None, signature: str = "x") -> str:
    """A token of these raw header and payload bytes (default: valid claims)."""
    body = b64json(claims()) if payload is None else b64url(payload)
    return f"{b64url(header)}.{body}.{signature}"


RS256 = b'{"alg":"RS256","typ":"JWT"}'
MALFORMED_TOKENS: dict[str, Callable[[rsa.RSAPrivateKey], str]] = {
    # Deeper than the JSON parser's recursion limit, yet within the size bounds.
    "header nested 1,200 levels": lambda key: parts(b"[" * 1200),
    "header object nested 1,000 levels": lambda key: parts(b'{"a":' * 1000),
    "header nested 5,000 levels": lambda key: parts(nested(5000)),
    "payload nested 1,200 levels": lambda key: parts(RS256, b'{"a":' + b"[" * 1200),
    "header that is a list": lambda key: parts(b"[]"),
    "header that is a string": lambda key: parts(b'"RS256"'),
    "header that is a number": lambda key: parts(b"1e999"),
    "header not utf-8": lambda key: parts(b"\xff\xfe"),
    "header not base64": lambda key: "!!!." + parts(RS256).partition(".")[2],
    "payload not base64": lambda key: sign_raw(key, claims()).split(".")[0] + ".!!!.x",
    "signature not base64": lambda key: sign_raw(key, claims()).rsplit(".", 1)[0] + ".!!!",
    "exp infinite": lambda key: sign_raw(key, claims(exp=float("inf"))),
    "exp NaN": lambda key: sign_raw(key, claims(exp=float("nan"))),
    "exp a list": lambda key: sign_raw(key, claims(exp=[1])),
    "exp true": lambda key: sign_raw(key, claims(exp=True)),
    "iat beyond any date": lambda key: sign_raw(key, claims(iat=10**400)),
    "payload a list": lambda key: sign_raw(key, [claims()]),
    "huge token": lambda key: sign_raw(key, claims(pad="x" * 9000)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TOKENS))
def test_every_malformed_token_is_an_auth_error(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, case: str
) -> None:
    """Never RecursionError, OverflowError or TypeError: those would be a 500."""
    with pytest.raises(AuthError):
        verifier.verify(MALFORMED_TOKENS[case](rsa_key))


@pytest.mark.parametrize("claim", ["sub", "tenant"])
def test_subject_or_tenant_with_a_nul_character_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, claim: str
) -> None:
    """They are stored as PostgreSQL text, which cannot hold NUL."""
    token = sign(rsa_key, claims(**{claim: "acme\x00evil"}))

    assert reject_reason(verifier, token) == f"malformed {'subject' if claim == 'sub' else claim}"


def test_token_over_the_size_bound_is_refused_before_decoding(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert reject_reason(verifier, sign_raw(rsa_key, claims(pad="x" * 9000))) == "token too large"
    assert reject_reason(verifier, parts(nested(5000))) == "token too large"
    big_header = b'{"alg":"RS256","x":"' + b"y" * 2000 + b'"}'
    assert reject_reason(verifier, sign_raw(rsa_key, claims(), big_header)) == "header too large"


def test_wrong_issuer_is_rejected(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(rsa_key, claims(iss="https://login.example.org"))

    assert reject_reason(verifier, token) == "wrong issuer"


@pytest.mark.parametrize("issuer", [ISSUER + ".evil", ISSUER + "/", "auth.example.com", ""])
def test_issuer_that_only_shares_a_prefix_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, issuer: str
) -> None:
    assert reject_reason(verifier, sign(rsa_key, claims(iss=issuer))) == "wrong issuer"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss"])
def test_token_missing_a_required_claim_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, claim: str
) -> None:
    token = sign(rsa_key, claims(**{claim: DROP}))

    assert reject_reason(verifier, token) == "missing required claim"


def test_tampered_payload_is_rejected(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(rsa_key, claims()).split(".")
    forged = f"{header}.{b64json(claims(scope='admin'))}.{signature}"

    assert reject_reason(verifier, forged) == "bad signature"


def test_unknown_crit_header_is_rejected(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, claims(), headers={"crit": ["x-ext"], "x-ext": True})

    assert reject_reason(verifier, token) == "critical header not supported"


def test_crit_header_is_rejected_even_for_an_extension_pyjwt_knows(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    header = {"alg": "RS256", "typ": "JWT", "crit": ["b64"], "b64": True}
    signing_input = f"{b64json(header)}.{b64json(claims())}".encode("ascii")
    signature = rsa_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input.decode()}.{b64url(signature)}"

    assert reject_reason(verifier, token) == "critical header not supported"


def test_token_signed_by_a_different_key_is_rejected(
    verifier: TokenVerifier, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    assert reject_reason(verifier, sign(other_rsa_key, claims())) == "bad signature"


# -- HS256 -----------------------------------------------------------------------------


def test_hs256_is_accepted_only_when_configured(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(HS_SECRET.encode(), claims(), alg="HS256")
    default = verifier_for(tmp_path, rsa_key)
    with_hs256 = verifier_of(make_settings(tmp_path, algorithms=("HS256",), hs256_secret=HS_SECRET))

    assert reject_reason(default, token) == "algorithm not allowed"
    assert with_hs256.verify(token).subject == "alice"


def test_hs256_token_with_another_secret_is_rejected(tmp_path: Path) -> None:
    verifier = verifier_of(make_settings(tmp_path, algorithms=("HS256",), hs256_secret=HS_SECRET))
    token = sign(b"t" * 40, claims(), alg="HS256")

    assert reject_reason(verifier, token) == "bad signature"


def test_hs256_needs_a_secret_of_at_least_32_bytes() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(algorithms=("HS256",), hs256_secret="too-short")


# -- JWKS file ---------------------------------------------------------------------------


def test_jwks_file_key_is_chosen_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return data | {"kid": kid, "use": "sig"}

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(rsa_key, "one"), jwk(other_rsa_key, "two")]}))
    verifier = verifier_of(make_settings(tmp_path, jwks_file=path))

    assert (
        verifier.verify(sign(other_rsa_key, claims(sub="two"), headers={"kid": "two"})).subject
        == "two"
    )
    assert (
        reject_reason(verifier, sign(rsa_key, claims(), headers={"kid": "two"})) == "bad signature"
    )
    assert (
        reject_reason(verifier, sign(rsa_key, claims(), headers={"kid": "three"}))
        == "unknown key id"
    )
    assert reject_reason(verifier, sign(rsa_key, claims())) == "no key id"


def test_verifier_without_any_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        verifier_of(make_settings(tmp_path))


# -- minting and the development keys -----------------------------------------------------


def test_minted_token_verifies_with_dev_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, dev_keys=True)

    token = mint_token(
        settings.auth,
        settings.data_dir,
        subject="bob",
        scopes=["audio:write", "bogus"],
        tenant="t1",
        ttl_s=60,
    )
    principal = verifier_of(settings).verify(token)

    assert principal == Principal(subject="bob", scopes=frozenset({"audio:write"}), tenant="t1")
    private, public = resolve_key_files(settings.auth, settings.data_dir)
    assert private == tmp_path / "data" / "keys" / "jwt-private.pem"
    assert public is not None
    public_key = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert jwt.get_unverified_header(token)["kid"] == jwk_thumbprint(public_key)


def test_dev_private_key_is_private_and_never_rewritten(tmp_path: Path) -> None:
    private, public = ensure_dev_keys(tmp_path)
    before = [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in (private, public)]

    again = ensure_dev_keys(tmp_path)

    assert again == (private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in again] == before
    assert {p.name for p in (tmp_path / "keys").iterdir()} == {"jwt-private.pem", "jwt-public.pem"}


def test_missing_public_dev_key_is_derived_from_the_private_one(tmp_path: Path) -> None:
    private, public = ensure_dev_keys(tmp_path)
    original = public.read_bytes()
    public.unlink()

    ensure_dev_keys(tmp_path)

    assert public.read_bytes() == original


def test_mint_token_without_private_key_is_a_config_error(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "public.pem"
    path.write_bytes(public_pem(rsa_key))
    settings = make_settings(tmp_path, public_key_file=path, dev_keys=True)

    with pytest.raises(ConfigError, match="private key"):
        mint_token(settings.auth, settings.data_dir, subject="bob", scopes=[], tenant=None)


def test_mint_token_signs_es256_with_a_configured_ec_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = make_settings(tmp_path, private_key_file=path)

    token = mint_token(
        settings.auth, settings.data_dir, subject="carol", scopes=["admin"], tenant=None, kid="k1"
    )

    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT", "kid": "k1"}
    assert verifier_of(settings).verify(token).is_admin


def test_jwk_thumbprint_matches_rfc_7638_example() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
        "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()

    assert jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# -- Principal ---------------------------------------------------------------------------


def test_principal_allows_only_its_scopes() -> None:
    reader = Principal(subject="r", scopes=frozenset({"audio:read"}), tenant="acme")

    assert reader.allows("audio:read")
    assert not reader.allows("audio:write")
    assert not reader.allows("admin")
    assert not reader.is_admin


def test_admin_allows_every_scope_and_sees_all_tenants() -> None:
    admin = Principal(subject="a", scopes=frozenset({"admin"}), tenant="acme")

    assert all(admin.allows(scope) for scope in ("audio:write", "training:read", "anything"))
    assert admin.tenant_filter() is None


def test_tenant_filter_is_the_token_tenant_or_default() -> None:
    with_tenant = Principal(subject="u", scopes=frozenset(), tenant="acme")
    without = Principal(subject="u", scopes=frozenset({"audio:read"}), tenant=None)

    assert with_tenant.tenant_filter() == "acme"
    assert without.tenant_filter() == "default"
