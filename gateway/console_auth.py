"""Signing in to the console: a one-time link or a pasted token, a cookie, signing out.

- ``GET /console/signin?code=…``: the link ``ai2text up`` prints. A valid code (it
  works once, for ``console.signin_code_ttl_s``) opens a session; the page then moves
  on to the console. Without a code, or with a spent one, the page offers a form to
  paste a token instead.
- ``POST /console/session``: a token (JSON ``{"token": …}`` or the page's form),
  verified like any bearer token, opens a session with its claims, ending when the
  token expires at the latest.
- ``DELETE /console/session``: sign out; the session is deleted server-side.
- ``GET /console/me``: who the session is (subject, tenant, scopes) and the CSRF
  token its pages send with every state change.

The cookie is HttpOnly, SameSite=Strict, Path=/, Secure on https. Opening a session
needs a request from this server's own pages (``Origin``), so no other site can sign
a browser in as someone else.
"""

from __future__ import annotations

import asyncio
import functools
import html
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, ParamSpec, TypeVar

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from gateway.auth import AuthError, Principal, TokenVerifier
from gateway.csrf import SESSION_COOKIE, check_origin, check_state_change
from gateway.errors import ApiError, unauthorized
from gateway.ratelimit import RateLimiter
from gateway.sessions import Opened, Session, SessionStore
from pipeline.config import ConsoleSettings
from pipeline.errors import DatabaseError, TransientError

log = structlog.get_logger(__name__)

CONSOLE_HOME = "/console/"
SIGNIN_PATH = "/console/signin"
MAX_TOKEN_FIELD = 8 * 1024

router = APIRouter(prefix="/console", tags=["console"])
P = ParamSpec("P")
R = TypeVar("R")


class ConsoleAuth:
    """What the console's sign-in routes share: the sessions, the verifier, a limiter
    of failed sign-ins per client address."""

    def __init__(
        self,
        sessions: SessionStore,
        verifier: TokenVerifier,
        settings: ConsoleSettings,
        *,
        failures_per_minute: int,
    ) -> None:
        self.sessions = sessions
        self.verifier = verifier
        self.settings = settings
        self.failures = RateLimiter(failures_per_minute)

    def refuse_if_flooding(self, request: Request) -> None:
        """Count a failed sign-in from this address; 429 past the limit."""
        address = request.client.host if request.client else "unknown"
        wait_s = self.failures.acquire(address)
        if wait_s > 0:
            raise ApiError(
                429,
                "too many failed sign-ins from this address",
                headers={"Retry-After": self.failures.retry_after_header(wait_s)},
            )


def console_of(request: Request) -> ConsoleAuth:
    console: ConsoleAuth = request.app.state.console
    return console


Console = Annotated[ConsoleAuth, Depends(console_of)]


class TokenSignIn(BaseModel):
    token: str = Field(min_length=1, max_length=MAX_TOKEN_FIELD)


class Identity(BaseModel):
    """Who a console session is, and the token its state changes must carry."""

    subject: str
    tenant: str | None = Field(description="null: an admin, who sees every tenant")
    scopes: list[str]
    admin: bool
    csrf_token: str = Field(description="send as X-CSRF-Token with every state change")
    expires_at: datetime


def identity(session: Session) -> Identity:
    principal = session.principal
    return Identity(
        subject=principal.subject,
        tenant=principal.tenant_filter(),
        scopes=sorted(principal.scopes),
        admin=principal.is_admin,
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
    )


def set_session_cookie(response: Response, request: Request, opened: Opened) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        opened.session_id,
        expires=opened.session.expires_at,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


async def _session_of(console: ConsoleAuth, request: Request) -> Session | None:
    return await console.sessions.find(request.cookies.get(SESSION_COOKIE))


def _needs_sessions(
    route: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """503 (retry later), not 500, when the sessions' database cannot be reached."""

    @functools.wraps(route)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await route(*args, **kwargs)
        except (DatabaseError, TransientError):
            raise ApiError(503, "sessions cannot be reached now; retry later") from None

    return guarded


@router.get("/signin", response_class=HTMLResponse)
@_needs_sessions
async def signin_page(
    request: Request,
    console: Console,
    code: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The one-time link's landing page (``code``), or the form to paste a token."""
    if code is None:
        return HTMLResponse(_signin_html())
    principal = await console.sessions.redeem(code)
    if principal is None:
        console.refuse_if_flooding(request)
        log.info("console sign-in link refused (unknown, used or expired)")
        message = "This sign-in link is not valid: it was used already or has expired."
        return HTMLResponse(_signin_html(message), status_code=401)
    opened = await _replace_session(console, request, principal)
    log.info("console session opened", subject=principal.subject, by="sign-in link")
    response = HTMLResponse(_signed_in_html())
    set_session_cookie(response, request, opened)
    return response


@router.post(
    "/session",
    response_model=Identity,
    responses={303: {"description": "signed in from the page's form: on to the console"}},
)
@_needs_sessions
async def open_session(request: Request, console: Console) -> Response:
    """Sign in with a token: JSON ``{"token": "…"}`` (answered with the identity) or the
    sign-in page's form (answered with a redirect to the console)."""
    check_origin(request.scope, request.headers)
    from_form = request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    )
    token = await _offered_token(request, from_form)
    try:
        principal = await _verify(console.verifier, token)
    except AuthError as exc:
        console.refuse_if_flooding(request)
        log.info("console sign-in refused", reason=exc.reason)
        if from_form:
            message = "That token was not accepted (expired, or not signed for this server)."
            return HTMLResponse(_signin_html(message), status_code=401)
        raise unauthorized() from None
    opened = await _replace_session(console, request, principal)
    log.info("console session opened", subject=principal.subject, by="token")
    response: Response
    if from_form:
        response = RedirectResponse(CONSOLE_HOME, status_code=303)
    else:
        response = JSONResponse(identity(opened.session).model_dump(mode="json"))
    set_session_cookie(response, request, opened)
    return response


@router.delete("/session", status_code=204, response_class=Response)
@_needs_sessions
async def close_session(request: Request, console: Console) -> Response:
    """Sign out: the session is deleted, its cookie cleared (CSRF-checked)."""
    session = await _session_of(console, request)
    if session is not None:
        check_state_change(request.scope, request.headers, session.csrf_token)
        await console.sessions.close(request.cookies.get(SESSION_COOKIE))
        log.info("console session closed", subject=session.principal.subject)
    response = Response(status_code=204)
    clear_session_cookie(response, request)
    return response


@router.get("/me", response_model=Identity)
@_needs_sessions
async def me(request: Request, console: Console) -> Identity:
    """The signed-in session: subject, tenant, scopes and its CSRF token."""
    session = await _session_of(console, request)
    if session is None:
        raise unauthorized()
    return identity(session)


async def signin_link(sessions: SessionStore, settings: ConsoleSettings, base_url: str) -> str:
    """A fresh one-time sign-in link for the local operator (an admin)."""
    operator = Principal(subject=settings.signin_subject, scopes=frozenset({"admin"}), tenant=None)
    code = await sessions.create_code(operator, ttl_s=settings.signin_code_ttl_s)
    return f"{base_url.rstrip('/')}{SIGNIN_PATH}?code={code}"


def wants_signin_link(settings: ConsoleSettings, *, embedded_database: bool) -> bool:
    return settings.signin_link if settings.signin_link is not None else embedded_database


async def _replace_session(console: ConsoleAuth, request: Request, principal: Principal) -> Opened:
    """A new session; the one this browser held before (if any) is deleted."""
    await console.sessions.close(request.cookies.get(SESSION_COOKIE))
    return await console.sessions.open(principal, ttl_s=console.settings.session_ttl_s)


async def _offered_token(request: Request, from_form: bool) -> str:
    try:
        if from_form:
            form = await request.form(max_files=0, max_fields=4)
            raw = form.get("token")
            return TokenSignIn(token=raw.strip() if isinstance(raw, str) else "").token
        return TokenSignIn.model_validate_json(await request.body()).token
    except ValidationError:
        raise ApiError(400, 'send {"token": "<a JWT>"}', kind="invalid-request") from None


async def _verify(verifier: TokenVerifier, token: str) -> Principal:
    if verifier.fetches_keys:
        return await asyncio.to_thread(verifier.verify, token)
    return verifier.verify(token)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{head}<title>{title} · ai2text</title>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def _signin_html(message: str | None = None) -> str:
    alert = f'<p role="alert">{html.escape(message)}</p>\n' if message else ""
    body = (
        f"{alert}<p>Open the link that <code>ai2text up</code> printed, or paste a token"
        " (<code>ai2text token</code> makes one).</p>\n"
        '<form method="post" action="/console/session">\n'
        '<label for="token">Token</label>\n'
        '<textarea id="token" name="token" rows="6" cols="60" required'
        ' autocomplete="off" spellcheck="false"></textarea>\n'
        '<button type="submit">Sign in</button>\n'
        "</form>"
    )
    return _PAGE.format(head="", title="Sign in", body=body)


def _signed_in_html() -> str:
    # A page of this server, not a redirect, moves on: a SameSite=Strict cookie set by a
    # navigation that came from outside (a terminal) is then sent with the next request.
    head = f'<meta http-equiv="refresh" content="0; url={CONSOLE_HOME}">\n'
    body = f'<p>You are signed in. <a href="{CONSOLE_HOME}">Open the console</a>.</p>'
    return _PAGE.format(head=head, title="Signed in", body=body)
