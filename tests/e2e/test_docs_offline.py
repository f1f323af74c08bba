"""The API docs and the console's sign-in on a real ``ai2text up`` (embedded default).

Swagger UI and ReDoc load every asset from the gateway itself (the machine has no
network, and nothing in the pages points elsewhere), under a Content-Security-Policy
with no inline script; the OpenAPI document has the bearer scheme and a response
schema for every route, and real answers fit those schemas; the sign-in link that
``ai2text up`` prints works once; in Chromium, "Authorize" takes a token and a call
made from the page then succeeds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource

from tests.conftest import public_tempdir
from tests.e2e.gateway_harness import bearer, unique_silence
from tests.e2e.harness import REPO, Service

pytestmark = pytest.mark.slow

PAGES = ("/docs", "/redoc")


@dataclass
class Up:
    service: Service
    env: dict[str, str]
    url: str
    signin_link: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ai2text", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return done.stdout.decode().strip()

    def token(self, *scopes: str) -> str:
        return self.cli("token", *(f"--scope={s}" for s in scopes))


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """``ai2text up`` on the embedded default, without workers (no model is needed here)."""
    root = public_tempdir("ai2text-docs-")
    env = {
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_ASR__CONCURRENCY": "0",
    }
    os.environ.pop("AI2TEXT_DATABASE__URL", None)
    service = Service("up", env, root / "up.log").start()
    try:
        listening = service.wait_for_event("gateway listening", timeout=120)
        link = service.wait_for_event("console sign-in link", timeout=60)
        yield Up(service, env, str(listening["url"]), str(link["url"]))
    finally:
        assert service.stop() == 0
        shutil.rmtree(root, ignore_errors=True)


class _Assets(HTMLParser):
    """Every URL a page loads: scripts, styles, icons, images, and spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "spec-url", "data-openapi-url"):
            if found.get(name):
                self.urls.append(str(found[name]))
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1


def test_the_docs_pages_load_every_asset_from_this_server(up: Up) -> None:
    origin = urlsplit(up.url).netloc
    with up.client() as http:
        for path in PAGES:
            page = http.get(path)
            assert page.status_code == 200, page.text
            policy = page.headers["content-security-policy"]
            script_src = re.search(r"script-src ([^;]*)", policy)
            assert script_src and script_src.group(1).split() == ["'self'"], policy
            assert "frame-ancestors 'none'" in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            parsed = _Assets()
            parsed.feed(page.text)
            assert parsed.inline_scripts == 0
            assert len(parsed.urls) >= 3, parsed.urls
            for url in parsed.urls:
                absolute = urljoin(up.url + path, url)
                assert urlsplit(absolute).netloc == origin, f"{path} loads {url} from elsewhere"
                asset = http.get(absolute)
                assert asset.status_code == 200, (path, url)
                assert asset.content, (path, url)
        init = http.get("/docs/assets/swagger-init.js")
        assert init.headers["content-type"].startswith(
            ("text/javascript", "application/javascript")
        )
        # Swagger UI would send the document to an online validator unless told not to.
        assert "validatorUrl: null" in init.text


def test_the_openapi_document_has_the_bearer_scheme_and_every_answer_a_schema(up: Up) -> None:
    with up.client() as http:
        document = http.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    schemas = document["components"]["schemas"]
    operations = [
        (method, path, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    ]
    assert len(operations) >= 30
    for method, path, operation in operations:
        where = f"{method.upper()} {path}"
        if path.startswith("/v1/") and path != "/v1/events/s3":
            assert operation.get("security") == [{"bearerAuth": []}], where
            assert "Needs a token with scope" in operation["description"], where
        answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert answers, where
        for code, answer in answers.items():
            content = answer.get("content")
            if code == "204":
                assert not content, where
                continue
            assert content, where
            for media, body in content.items():
                schema = body.get("schema")
                assert schema, f"{where} {code} {media}: no schema"
                assert schema != {"type": "object", "additionalProperties": True}, where
                ref = schema.get("$ref")
                if ref is not None:
                    assert ref.removeprefix("#/components/schemas/") in schemas, (where, ref)
                elif media == "application/json":
                    # A JSON answer is a model, except the manifest file dataset.json.
                    assert path.endswith("/files/{file}"), f"{where}: an untyped JSON answer"


def test_real_answers_fit_their_documented_schemas(up: Up) -> None:
    admin = bearer(up.token("admin"))
    with up.client(headers=admin) as http:
        document = http.get("/openapi.json").json()
        uploaded = http.post("/v1/audio", files={"file": ("a.wav", unique_silence(0.5))})
        assert uploaded.status_code == 201, uploaded.text
        audio_id = uploaded.json()["id"]
        calls = [
            ("post", "/v1/audio", uploaded),
            ("get", "/v1/audio", http.get("/v1/audio")),
            ("get", "/v1/audio/{audio_id}", http.get(f"/v1/audio/{audio_id}")),
            ("get", "/v1/jobs", http.get("/v1/jobs")),
            ("get", "/v1/stats", http.get("/v1/stats")),
            ("get", "/v1/workers", http.get("/v1/workers")),
            ("get", "/v1/search", http.get("/v1/search", params={"q": "anything"})),
            ("get", "/v1/datasets", http.get("/v1/datasets")),
            ("get", "/v1/training-runs", http.get("/v1/training-runs")),
            ("get", "/v1/webhooks", http.get("/v1/webhooks")),
            ("get", "/v1/webhooks/deliveries", http.get("/v1/webhooks/deliveries")),
            ("get", "/v1/models", http.get("/v1/models")),
            ("get", "/readyz", http.get("/readyz")),
        ]
    registry = Registry().with_resource("urn:openapi", Resource.opaque(document))
    for method, path, answer in calls:
        assert answer.status_code in (200, 201), (path, answer.text)
        operation = document["paths"][path][method]
        media = operation["responses"][str(answer.status_code)]["content"]["application/json"]
        ref = media["schema"]["$ref"].replace("#/", "urn:openapi#/")
        body = answer.json()
        assert body, path
        jsonschema.validate(
            body,
            {"$ref": ref},
            cls=jsonschema.Draft202012Validator,
            registry=registry,
        )
    assert calls[1][2].json()["items"], "the upload is listed"


def test_the_printed_signin_link_signs_in_once_and_console_link_makes_another(up: Up) -> None:
    assert up.signin_link.startswith(up.url + "/console/signin?code=")
    with up.client() as browser:
        assert browser.get(up.signin_link).status_code == 200
        me = browser.get("/console/me").json()
        assert me["admin"] is True and me["subject"] == "console-admin"
    with up.client() as other:
        assert other.get(up.signin_link).status_code == 401
    fresh = up.cli("console-link", f"--url={up.url}")
    assert fresh.startswith(up.url + "/console/signin?code=") and fresh != up.signin_link
    with up.client() as browser:
        assert browser.get(fresh).status_code == 200
        assert browser.get("/console/me").status_code == 200


def test_swagger_ui_renders_offline_and_authorize_takes_a_token(up: Up) -> None:
    from tests.browser.chromium import PageErrors, chromium, screenshot

    token = up.token("audio:read")
    elsewhere: list[str] = []
    errors = PageErrors()
    with chromium() as browser:
        page = errors.watch(browser.new_page())

        def only_here(route: Any) -> None:
            if route.request.url.startswith(up.url):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_here)
        page.goto(up.url + "/docs")
        page.get_by_role("button", name=re.compile("Authorize")).first.click()
        form = page.locator(".modal-ux .auth-container", has_text="bearerAuth")
        form.locator("input").fill(token)
        form.locator("button.authorize").click()  # "Apply credentials"
        form.locator("button.btn-done").click()
        stats = page.locator("#operations-default-stats_v1_stats_get, [id$='stats_v1_stats_get']")
        stats.first.click()
        page.get_by_role("button", name="Try it out").first.click()
        page.get_by_role("button", name="Execute").first.click()
        status = page.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=30_000)
        assert status.inner_text().strip().startswith("200"), status.inner_text()
        screenshot(page, "api-docs")
        page.goto(up.url + "/redoc")
        # ReDoc renders each operation under its summary, and the bearer scheme.
        page.locator("h2", has_text="List Audio").first.wait_for(timeout=30_000)
        page.get_by_text("bearerAuth").first.wait_for(timeout=30_000)
        screenshot(page, "api-reference")
    assert elsewhere == [], f"the docs asked for {elsewhere}"
    # ReDoc's bundle always shows its maker's logo from a CDN; the policy stops that
    # load before any request (and the logo hides itself). Nothing else may be refused.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert [m for m in errors.messages if logo not in m] == [], errors.messages
