"""Who is calling and what they may do: bearer JWT, scopes, rate limit per subject."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Depends, Request

from gateway.auth import AuthError, Principal, parse_bearer
from gateway.context import AppContext, get_context
from gateway.errors import ApiError, unauthorized

log = structlog.get_logger(__name__)


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks one scope."""

    async def dependency(
        request: Request,
        ctx: AppContext = Depends(get_context),  # noqa: B008 - FastAPI idiom
    ) -> Principal:
        try:
            token = parse_bearer(request.headers.get("authorization"))
            if ctx.verifier.fetches_keys:
                # A JWKS fetch may happen on an unknown key id: keep it off the event loop.
                principal = await asyncio.to_thread(ctx.verifier.verify, token)
            else:
                principal = ctx.verifier.verify(token)  # local keys: a signature check only
        except AuthError as exc:
            log.info("authentication failed", reason=exc.reason, path=request.url.path)
            raise unauthorized() from None
        wait_s = ctx.limiter.acquire(principal.subject)
        if wait_s > 0:
            raise ApiError(
                429,
                "rate limit exceeded for this subject",
                headers={"Retry-After": ctx.limiter.retry_after_header(wait_s)},
            )
        if not principal.allows(scope):
            raise ApiError(403, f"this token lacks the {scope} scope")
        structlog.contextvars.bind_contextvars(subject=principal.subject)
        return principal

    return dependency
