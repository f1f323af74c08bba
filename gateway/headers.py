"""Security headers on every answer, and a strict Content-Security-Policy on pages.

Pages (the console under ``/console``, the API docs) may load scripts, styles,
images, media and fonts from this server only, never inline scripts, and may talk
to this server only; nothing may frame them. ReDoc alone needs inline styles (its
styling library writes ``<style>`` elements) and a worker from a ``blob:`` URL for
its search. Every other answer (JSON, audio, manifests) is no page at all:
``default-src 'none'``. A header a route set itself is left as it is.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.middleware import adding_headers

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " media-src 'self' blob:; font-src 'self'; connect-src 'self'; object-src 'none';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
REDOC_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src blob:;"
    " object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
NO_PAGE_POLICY = "default-src 'none'; frame-ancestors 'none'"

PAGE_PREFIXES = ("/console", "/docs")
REDOC_PREFIX = "/redoc"

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Same-origin requests keep their Referer (the CSRF check may read it); others get none.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000")


def policy_for(path: str) -> str:
    if path == REDOC_PREFIX or path.startswith(REDOC_PREFIX + "/"):
        return REDOC_POLICY
    if any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES):
        return PAGE_POLICY
    return NO_PAGE_POLICY


class SecurityHeadersMiddleware:
    """Adds the headers above to every HTTP answer that does not carry them already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*_COMMON, (b"content-security-policy", policy_for(scope["path"]).encode())]
        if scope.get("scheme") == "https":
            extra.append(HSTS)
        await self.app(scope, receive, adding_headers(send, extra, keep_present=True))
