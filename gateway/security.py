"""Who is calling and what they may do, decided from the request head before any body.

:class:`AuthGate` is ASGI middleware in front of the routes. A route that needs a
bearer token is one with a :func:`require` dependency; for it the gate checks the
token (or, on a request without an ``Authorization`` header, the console's session
cookie, with the CSRF checks of :mod:`gateway.csrf` on a state change), the
subject's rate limit and the route's scopes from the headers alone, and
refuses (401, 429, 403) without reading a byte of the body. A refusal of a request
that announced a body also closes the connection, so the server never reads that
body to keep the connection alive. Refusals for a missing or bad token are counted
per client address: past ``gateway.auth_failures_per_minute`` they become 429.

The gate also refuses a NUL character in the path or the query string (400):
PostgreSQL text cannot hold one, so it could only end in a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import parse_qsl

import structlog
from fastapi import Request
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import AuthError, Principal, parse_bearer
from gateway.context import AppContext
from gateway.csrf import SESSION_COOKIE, changes_state, check_state_change
from gateway.errors import ApiError, forbid_nul, unauthorized
from gateway.middleware import PRINCIPAL_KEY, announces_body
from gateway.ratelimit import RateLimiter
from gateway.sessions import SessionStore
from pipeline.errors import DatabaseError, TransientError

log = structlog.get_logger(__name__)


class Require:
    """A dependency giving the caller that :class:`AuthGate` admitted for ``scope``."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:
        principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal) or not principal.allows(self.scope):
            raise unauthorized()  # only in an app built without the gate: fail closed
        return principal


def require(scope: str) -> Require:
    """The dependency of a route that needs a bearer token holding ``scope``."""
    return Require(scope)


class AuthGate:
    """Authenticate and authorise from the headers; ``routes`` in the app's order.

    ``sessions`` (the console's) also admits a request by its session cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: AppContext,
        routes: Sequence[BaseRoute],
        sessions: SessionStore | None = None,
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.sessions = sessions
        self.failures = RateLimiter(ctx.settings.gateway.auth_failures_per_minute)
        self.routes = [(route, required_scopes(route)) for route in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, needed = self._route_for(scope)
        try:
            _check_text(scope)
            principal = await self._admit(scope, needed) if needed else None
        except ApiError as refusal:
            if route is not None:
                scope["route"] = route  # for the request metrics' route label
            await _refuse(scope, receive, send, refusal)
            return
        if principal is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        with structlog.contextvars.bound_contextvars(subject=principal.subject):
            await self.app(scope, receive, send)

    def _route_for(self, scope: Scope) -> tuple[BaseRoute | None, frozenset[str]]:
        for route, needed in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route, needed
        return None, frozenset()

    async def _admit(self, scope: Scope, needed: frozenset[str]) -> Principal:
        headers = Headers(scope=scope)
        try:
            session_id = self._session_id(headers)
            if session_id is not None:
                principal = await self._from_session(scope, headers, session_id)
            else:
                principal = await self._verify(parse_bearer(headers.get("authorization")))
        except AuthError as exc:
            address = _client_address(scope)
            wait_s = self.failures.acquire(address)
            if wait_s > 0:
                raise ApiError(
                    429,
                    "too many failed authentications from this address",
                    headers={"Retry-After": self.failures.retry_after_header(wait_s)},
                ) from None
            log.info("authentication failed", reason=exc.reason, path=scope["path"])
            raise unauthorized() from None
        wait_s = self.ctx.limiter.acquire(principal.subject)
        if wait_s > 0:
            raise ApiError(
                429,
                "rate limit exceeded for this subject",
                headers={"Retry-After": self.ctx.limiter.retry_after_header(wait_s)},
            )
        for scope_name in sorted(needed):
            if not principal.allows(scope_name):
                raise ApiError(403, f"this token lacks the {scope_name} scope")
        return principal

    def _session_id(self, headers: Headers) -> str | None:
        """The session cookie of a request that sends no ``Authorization`` header."""
        if self.sessions is None or "authorization" in headers:
            return None
        return cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)

    async def _from_session(self, scope: Scope, headers: Headers, session_id: str) -> Principal:
        assert self.sessions is not None
        try:
            session = await self.sessions.find(session_id)
        except (DatabaseError, TransientError):
            raise ApiError(503, "sessions cannot be checked now; retry later") from None
        if session is None:
            raise AuthError("unknown or expired session")
        if changes_state(scope):
            check_state_change(scope, headers, session.csrf_token)
        return session.principal

    async def _verify(self, token: str) -> Principal:
        verifier = self.ctx.verifier
        if verifier.fetches_keys:
            # A JWKS fetch may happen on an unknown key id: keep it off the event loop.
            return await asyncio.to_thread(verifier.verify, token)
        return verifier.verify(token)  # local keys: a signature check only


def required_scopes(route: BaseRoute) -> frozenset[str]:
    """The scopes of every :class:`Require` among a route's dependencies, however nested."""
    dependant = getattr(route, "dependant", None)
    pending = [dependant] if dependant is not None else []
    found: set[str] = set()
    while pending:
        current = pending.pop()
        if isinstance(current.call, Require):
            found.add(current.call.scope)
        pending.extend(current.dependencies)
    return frozenset(found)


def _check_text(scope: Scope) -> None:
    forbid_nul(scope["path"], "the path")
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        forbid_nul(name, "query parameter names")
        forbid_nul(value, f"query parameter {name!r}")


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: ApiError) -> None:
    response = refusal.response(scope.get("path", ""))
    if announces_body(scope):
        # Keeping the connection would mean reading the body we just refused.
        response.headers["connection"] = "close"
    await response(scope, receive, send)
