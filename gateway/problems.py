"""Error responses: RFC 9457 problems, or OpenAI's shape on the OpenAI-compatible paths.

Either way a stable kind, a safe message, never a stack trace. The official
``openai`` client reads ``{"error": {"message", "type", "param", "code"}}``, so the
routes it calls answer in that shape (their auth refusals included).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PROBLEM_BASE = "https://ai2text.dev/problems/"


# The routes the official OpenAI client calls.
OPENAI_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models"})
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def speaks_openai(path: str) -> bool:
    return path.rstrip("/") in OPENAI_PATHS


def openai_error(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    error_type: str | None = None,
) -> JSONResponse:
    """An error as OpenAI's API writes it; ``code`` is the same stable kind as a problem's.

    ``error_type`` overrides the type the status implies (OpenAI's unknown model is a
    404 of type ``invalid_request_error``).
    """
    body = {"error": openai_error_body(status, code, message, param=param, error_type=error_type)}
    return JSONResponse(body, status_code=status, headers=headers)


def openai_error_body(
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """The ``error`` object of OpenAI's shape (also what its stream's error event holds)."""
    default = "api_error" if status >= 500 else "invalid_request_error"
    kind = error_type or _OPENAI_TYPES.get(status, default)
    return {"message": message, "type": kind, "param": param, "code": code}


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )
