"""Console sessions in PostgreSQL: one-time sign-in codes and the sessions they open.

A browser cannot keep a bearer token out of reach of scripts, so the console trades
one for a session cookie (HttpOnly). Two ways in, both ending in :meth:`SessionStore.open`:

- a **sign-in code**, made by ``ai2text up`` and printed as a link (as notebook
  servers do): short-lived, and :meth:`SessionStore.redeem` deletes it as it reads
  it, so it works once;
- a **token** the user pastes, verified by the same rules as any bearer token.

Codes and session ids are 256-bit random strings; only their SHA-256 is stored, so
the database holds nothing a reader could sign in with. A session carries the claims
of what opened it (subject, tenant, scopes), expires, and is deleted on sign-out;
every request looks it up, so a deleted session stops working at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.auth import Principal
from pipeline.db.database import AsyncConn, Database

# What token_urlsafe(32) makes; anything else is refused before a query.
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: who it is, the token its state changes must carry, its end."""

    principal: Principal
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Opened:
    """A new session and its id (the cookie's value), known only to this answer."""

    session_id: str
    session: Session


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def well_formed(secret: str | None) -> bool:
    return secret is not None and _SECRET.match(secret) is not None


class SessionStore:
    """Codes and sessions of one database; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_code(self, principal: Principal, *, ttl_s: float) -> str:
        """A one-time sign-in code for ``principal``, valid for ``ttl_s`` seconds."""
        code = new_secret()
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM console_signin_codes WHERE expires_at <= now()")
            await conn.execute(
                "INSERT INTO console_signin_codes (code_sha256, subject, tenant, scopes,"
                " expires_at) VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
                (
                    digest(code),
                    principal.subject,
                    principal.tenant,
                    sorted(principal.scopes),
                    ttl_s,
                ),
            )
        return code

    async def redeem(self, code: str | None) -> Principal | None:
        """The principal of a valid code, which is gone from then on; else ``None``."""
        if not well_formed(code):
            return None
        assert code is not None
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM console_signin_codes WHERE code_sha256 = %s"
                " RETURNING subject, tenant, scopes, expires_at > now() AS valid",
                (digest(code),),
            )
            row = await cur.fetchone()
        if row is None or not row["valid"]:
            return None
        return _principal(row)

    async def open(self, principal: Principal, *, ttl_s: float) -> Opened:
        """A session for ``principal`` ending in ``ttl_s`` seconds, or when its token
        expires if that is sooner (a session never outlives what opened it)."""
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
        if principal.expires_at is not None:
            expires_at = min(expires_at, datetime.fromtimestamp(principal.expires_at, UTC))
        session_id = new_secret()
        csrf = new_secret()
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE expires_at <= now()")
            await conn.execute(
                "INSERT INTO console_sessions (id_sha256, subject, tenant, scopes, csrf_token,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    digest(session_id),
                    principal.subject,
                    principal.tenant,
                    sorted(principal.scopes),
                    csrf,
                    expires_at,
                ),
            )
        return Opened(session_id, Session(principal, csrf, expires_at))

    async def find(self, session_id: str | None) -> Session | None:
        """The live session with this id, else ``None`` (unknown, expired, signed out)."""
        if not well_formed(session_id):
            return None
        assert session_id is not None
        async with self.db.connection() as conn:
            return await _find(conn, digest(session_id))

    async def close(self, session_id: str | None) -> bool:
        """Sign out: delete the session; whether there was one."""
        if not well_formed(session_id):
            return False
        assert session_id is not None
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM console_sessions WHERE id_sha256 = %s", (digest(session_id),)
            )
            return cur.rowcount > 0


async def _find(conn: AsyncConn, id_sha256: bytes) -> Session | None:
    cur = await conn.execute(
        "SELECT subject, tenant, scopes, csrf_token, expires_at FROM console_sessions"
        " WHERE id_sha256 = %s AND expires_at > now()",
        (id_sha256,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    expires_at = row["expires_at"]
    assert isinstance(expires_at, datetime)
    return Session(_principal(row), str(row["csrf_token"]), expires_at)


def _principal(row: dict[str, Any]) -> Principal:
    return Principal(
        subject=str(row["subject"]),
        scopes=frozenset(row["scopes"]),
        tenant=row["tenant"],
    )
