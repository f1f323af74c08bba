"""The console's pages and assets.

Every page is a static HTML file whose scripts and styles are files of the same
origin (no inline code), so ``gateway.headers``'s strict Content-Security-Policy
(``'self'`` only) fits them. Which audio a page shows is in its URL
(``/console/audio/{id}``); the page's script reads it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(str(files("gateway.console").joinpath("static")))

PAGES = {
    "files": "files.html",
    "audio": "transcript.html",
    "search": "search.html",
    "ops": "ops.html",
}


def _page(name: str) -> Response:
    response = FileResponse(STATIC / PAGES[name], media_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


class ConsoleAssets(StaticFiles):
    """The console's CSS and scripts, revalidated on every load (an upgrade shows at once)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/")
async def files_page() -> Response:
    """Audio files, live, with uploads."""
    return _page("files")


@router.get("/audio/{audio_id}")
async def transcript_page(audio_id: str) -> Response:
    """One audio's player and transcript (the script fetches both by the id in the URL)."""
    return _page("audio")


@router.get("/search")
async def search_page() -> Response:
    return _page("search")


@router.get("/ops")
async def operations_page() -> Response:
    return _page("ops")


def mount_console(app: FastAPI) -> None:
    """Serve the console's pages under ``/console/`` and its assets under ``/console/static``."""
    app.include_router(router)
    app.mount("/console/static", ConsoleAssets(directory=STATIC), name="console-static")
