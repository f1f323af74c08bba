"""RFC 9457 problem responses: a stable ``type``, a title, never a stack trace."""

from __future__ import annotations

from fastapi.responses import JSONResponse

PROBLEM_BASE = "https://ai2text.dev/problems/"


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
