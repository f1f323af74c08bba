"""API documentation that works offline: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Their scripts and styles come from the ``fastapi-offline`` package (which ships the
upstream bundles) and are served from ``/docs/assets/``; nothing is fetched from a
CDN. Swagger UI starts from ``swagger-init.js`` (no inline script, so the pages can
be served under a Content-Security-Policy that forbids them; see
:mod:`gateway.headers`); ReDoc starts itself from its ``<redoc spec-url>`` element.

The OpenAPI document names the bearer scheme (so Swagger UI shows **Authorize**),
puts it on every route a token is needed for with the scopes in the description,
and gives each route's answer its schema (see :mod:`gateway.schemas`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

from gateway.schemas import Problem
from gateway.security import required_scopes

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"
BEARER = "bearerAuth"
WEBHOOK_SCHEME = "s3WebhookToken"
WEBHOOK_PATH = "/v1/events/s3"

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    """The upstream bundles (``fastapi-offline``) and our own start-up script."""
    return StaticFiles(packages=[("gateway", "static"), ("fastapi_offline", "static")])


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        # Relative to /docs and /redoc, so a path prefix in front of the gateway works.
        '<link rel="icon" type="image/png" href="docs/assets/favicon.png">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


@router.get(DOCS_PATH, response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    head = '<link rel="stylesheet" href="docs/assets/swagger-ui.css">\n'
    body = (
        '<main id="swagger-ui" data-openapi-url="openapi.json"></main>\n'
        '<script src="docs/assets/swagger-ui-bundle.js"></script>\n'
        '<script src="docs/assets/swagger-init.js"></script>\n'
    )
    return HTMLResponse(_page("ai2text API", head, body))


@router.get(REDOC_PATH, response_class=HTMLResponse)
async def redoc() -> HTMLResponse:
    body = (
        '<redoc spec-url="openapi.json"></redoc>\n'
        '<script src="docs/assets/redoc.standalone.js"></script>\n'
    )
    return HTMLResponse(_page("ai2text API reference", "", body))


def install_docs(app: FastAPI) -> None:
    """Serve the pages and their assets, and make ``app.openapi`` document the auth."""
    app.include_router(router)
    app.mount(ASSETS_PATH, assets(), name="docs-assets")
    app.openapi = _openapi_of(app)  # type: ignore[method-assign]


def _openapi_of(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's own document (it regenerates when routes change), completed once each."""
    generate = app.openapi
    completed: list[int] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not completed or completed[-1] != id(document):
            document_auth(document, api_routes(app))
            tidy_response_schemas(document)
            completed.append(id(document))
        return document

    return openapi


def api_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    """(path, methods, route) of every API route, whether included through a router or not."""
    found: list[tuple[str, set[str], APIRoute]] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path_format and context.methods:
            found.append((context.path_format, set(context.methods), route))
    return found


def document_auth(
    document: dict[str, Any], routes: list[tuple[str, set[str], APIRoute]]
) -> dict[str, Any]:
    """The bearer scheme, on every route that needs a token, with its scopes."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    schemes = components.setdefault("securitySchemes", {})
    schemes[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT signed for this server (`ai2text token` makes one). The console's"
        " session cookie is accepted too.",
    }
    schemes[WEBHOOK_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "The configured webhook token (`AI2TEXT_WEBHOOK__TOKEN`), not a JWT.",
    }
    paths = document.get("paths", {})
    for path, methods, route in routes:
        for method in methods:
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            if path == WEBHOOK_PATH:
                operation["security"] = [{WEBHOOK_SCHEME: []}]
                continue
            scopes = sorted(required_scopes(route))
            if not scopes:
                continue
            operation["security"] = [{BEARER: []}]
            note = "Needs a token with scope " + ", ".join(f"`{s}`" for s in scopes)
            note += " (or `admin`)." if "admin" not in scopes else "."
            described = operation.get("description")
            operation["description"] = f"{described}\n\n{note}" if described else note
            _document_refusals(operation)
    return document


def _document_refusals(operation: dict[str, Any]) -> None:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", {"description": "No valid token", "content": problem})
    responses.setdefault("403", {"description": "The token lacks the scope", "content": problem})


def tidy_response_schemas(document: dict[str, Any]) -> None:
    """Where a route documents its answer's model, keep that model's reference only.

    FastAPI merges a ``responses`` model into the schema of the route's return type
    (``dict[str, Any]``: an untyped object); the model is what describes the answer.
    A media type without a schema (audio bytes) is binary.
    """
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if len(content) > 1 and not content.get("application/json", {}).get("schema"):
                    # FastAPI's default for a route answering a Response of its own.
                    content.pop("application/json", None)
                for media in content.values():
                    schema = media.get("schema") or {"type": "string", "format": "binary"}
                    if "$ref" in schema and len(schema) > 1:
                        schema = {"$ref": schema["$ref"]}
                    media["schema"] = schema
