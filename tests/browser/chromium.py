"""Debian's chromium under Playwright: launch, drop files on an element, watch for errors.

The browser is the system's (``/usr/bin/chromium``, or ``AI2TEXT_TEST_CHROMIUM``):
Playwright never downloads one. ``.ci/run`` installs Debian's package when missing.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    sync_playwright,
)

CHROMIUM = os.environ.get("AI2TEXT_TEST_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
# Screenshots of the main pages, kept after the run (gitignored).
ARTIFACTS = Path(os.environ.get("AI2TEXT_TEST_ARTIFACTS", REPO / "tests" / "artifacts" / "console"))
ARGS = (
    "--no-sandbox",  # CI runs as root
    "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage",
)


def chromium_path() -> str:
    found = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise AssertionError(
            f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does it)"
        )
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(ARGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageErrors:
    """Script errors and Content-Security-Policy violations a page reported."""

    messages: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda error: self.messages.append(f"page error: {error}"))
        page.on("console", self._console)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        # A failed request shows as a console error too; the API's 4xx answers that the
        # pages handle (a 401 before signing in, a 404 for another tenant's audio) are not.
        if message.type == "error" and "Failed to load resource" not in text:
            self.messages.append(f"console error: {text}")
        if "Content Security Policy" in text:
            self.messages.append(f"CSP: {text}")


def local_only(context: BrowserContext, origin: str, errors: PageErrors) -> BrowserContext:
    """Refuse (and record) every request to another origin: the pages must work offline."""

    def route(request_route: Route) -> None:
        url = request_route.request.url
        if url.startswith((origin + "/", "data:", "blob:")):
            request_route.continue_()
            return
        errors.messages.append(f"request to another origin: {url}")
        request_route.abort()

    context.route("**/*", route)
    return context


def drop_files(page: Page, selector: str, files: list[tuple[str, bytes]]) -> None:
    """Drop ``files`` on the element as a person dragging them from a file manager would:
    a ``drop`` event whose DataTransfer holds them."""
    payload = [
        {
            "name": name,
            "type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "data": base64.b64encode(data).decode("ascii"),
        }
        for name, data in files
    ]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const file of files) {
                const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], file.name, { type: file.type }));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
