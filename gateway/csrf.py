"""Cross-site request forgery: what a request made with the session cookie must show.

A browser attaches cookies to requests that other sites make it send, so a state
change (any method but GET, HEAD and OPTIONS) made with the console's cookie must
also show:

- ``X-CSRF-Token``: the session's own token (``GET /console/me`` gives it to the
  console's pages), compared in constant time. Another site can neither read it nor
  make a browser send a custom header to us without a CORS preflight we never grant;
- an ``Origin`` (or, without one, a ``Referer``) of this very server.

The cookie is SameSite=Strict as well; each of the three alone would stop the common
attacks. Requests with a bearer token are not affected: browsers never add those.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

from gateway.errors import ApiError

SESSION_COOKIE = "ai2text_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def changes_state(scope: Scope) -> bool:
    return str(scope.get("method", "GET")).upper() not in SAFE_METHODS


def own_origin(scope: Scope, headers: Headers) -> str:
    """``scheme://host[:port]`` as the browser addressed this server."""
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()


def check_origin(scope: Scope, headers: Headers) -> None:
    """403 unless the request comes from a page of this server (``Origin``, else
    ``Referer``); a request naming neither is refused too."""
    origin = headers.get("origin")
    if origin is None:
        referer = headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
    if origin is None or origin.lower() != own_origin(scope, headers):
        raise ApiError(
            403,
            "a request made with the console's session must come from this server's pages",
            kind="cross-origin",
            title="Cross-origin request refused",
        )


def check_token(headers: Headers, expected: str) -> None:
    """403 unless ``X-CSRF-Token`` holds the session's token."""
    offered = headers.get(CSRF_HEADER, "")
    if not offered or not secrets.compare_digest(offered.encode(), expected.encode()):
        raise ApiError(
            403,
            "send the session's CSRF token (GET /console/me) in the X-CSRF-Token header",
            kind="csrf-token",
            title="CSRF token missing or wrong",
        )


def check_state_change(scope: Scope, headers: Headers, csrf_token: str) -> None:
    """Both checks, for a state change made with the session cookie."""
    check_origin(scope, headers)
    check_token(headers, csrf_token)
