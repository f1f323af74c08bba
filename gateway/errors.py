"""API errors as RFC 9457 problem documents, never stack traces or library text."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.problems import openai_error, problem, speaks_openai

log = structlog.get_logger(__name__)

_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Missing scope"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("unprocessable", "Input not acceptable"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


class ApiError(StarletteHTTPException):
    """An error meant for the caller: status, a stable kind, and a safe detail.

    An HTTP exception, so that FastAPI passes it through unchanged when it is raised
    while a request body is read (it turns any other error there into a bare 400).
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        default_kind, default_title = _TITLES.get(status, ("error", "Error"))
        super().__init__(status, detail or default_title, headers)
        self.status = status
        self.kind = kind or default_kind
        self.title = title or default_title
        self.problem_detail = detail
        self.problem_headers = headers

    def response(self, path: str = "") -> JSONResponse:
        """This error as a problem document, or in OpenAI's shape on its paths."""
        if speaks_openai(path):
            return openai_error(
                self.status,
                self.kind,
                self.problem_detail or self.title,
                headers=self.problem_headers,
            )
        return problem(
            self.status, self.kind, self.title, self.problem_detail, headers=self.problem_headers
        )


def unauthorized() -> ApiError:
    """The one answer to every failed authentication: it reveals nothing."""
    return ApiError(
        401,
        "a valid bearer token is required",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def forbid_nul(value: str, where: str) -> None:
    """400 for a NUL character: PostgreSQL text cannot hold one, and no name needs it."""
    if "\x00" in value:
        raise ApiError(400, f"NUL characters are not allowed in {where}", kind="nul-character")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind, title = _TITLES.get(exc.status_code, ("error", "Error"))
        headers = getattr(exc, "headers", None)
        if speaks_openai(request.url.path):
            return openai_error(exc.status_code, kind, title, headers=headers)
        return problem(exc.status_code, kind, title, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted(
            {".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors()}
        )
        detail = f"check: {', '.join(fields)}"
        if speaks_openai(request.url.path):
            return openai_error(400, "invalid-request", detail, param=fields[0] if fields else None)
        return problem(400, "invalid-request", "Invalid request", detail)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error in request", path=request.url.path, exc_info=exc)
        if speaks_openai(request.url.path):
            return openai_error(500, "internal-error", "Internal error")
        return problem(500, "internal-error", "Internal error")
