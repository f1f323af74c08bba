"""The web console in a real browser (Debian's chromium) against a real ``ai2text up``.

Signed in with the one-time link ``up`` prints, an operator drops two recordings on
the files page and watches them reach ``transcribed`` without reloading (a third,
not audio, is shown rejected with its reason); plays one and sees the highlighted
segment follow the audio, clicks a segment to seek; searches a word and lands on its
segment. A tenant signed in with a pasted token cannot open another tenant's file by
its URL. No page reports a script error or a Content-Security-Policy violation, and
none asks for anything from another origin (the browser may reach the gateway only).
Screenshots of the main pages are kept under ``tests/artifacts/console``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.chromium import PageErrors, chromium, drop_files, local_only, screenshot
from tests.e2e.gateway_harness import Gateway, bearer, start_keyed_gateway
from tests.e2e.harness import FAST_MODEL, cli_json, wait_until

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
# jfk.flac: one sentence ("... what your country can do for you ..."); multilingual.mp3:
# a minute read aloud, many segments ("Permission is hereby granted, free of charge").
RECORDINGS = ("jfk.flac", "multilingual.mp3")
TIMEOUT_MS = 120_000


@dataclass
class Console:
    gw: Gateway
    signin_link: str
    browser: Browser
    errors: PageErrors
    admin_token: str

    def context(self, **options: Any) -> BrowserContext:
        """A new browser profile that may reach this gateway only."""
        return local_only(self.browser.new_context(**options), self.gw.url, self.errors)

    def api(self, path: str, token: str | None = None) -> Any:
        response = httpx.get(
            f"{self.gw.url}{path}", headers=bearer(token or self.admin_token), timeout=30
        )
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def console(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    gw = start_keyed_gateway(
        "up",
        root,
        module_database_url,
        {**FAST_MODEL, "AI2TEXT_CONSOLE__SIGNIN_LINK": "true"},
        ready_event="worker ready",
    )
    try:
        link = str(gw.service.wait_for_event("console sign-in link", timeout=30)["url"])
        with chromium() as browser:
            yield Console(gw, link, browser, PageErrors(), gw.signer.token("admin"))
        assert gw.service.stop() == 0
    finally:
        gw.service.kill()


@pytest.fixture(scope="module")
def admin(console: Console) -> Iterator[BrowserContext]:
    """A browser signed in with the printed link (which works once)."""
    context = console.context(viewport={"width": 1280, "height": 900})
    page = console.errors.watch(context.new_page())
    page.goto(console.signin_link)
    page.wait_for_url(f"{console.gw.url}/console/", timeout=30_000)
    expect(page.get_by_test_id("who")).to_have_text("console-admin")
    page.close()
    yield context
    context.close()


def page_of(console: Console, context: BrowserContext) -> Page:
    return console.errors.watch(context.new_page())


def transcribed(console: Console) -> dict[str, str]:
    """The recordings' audio ids once both are transcribed (uploaded here if need be)."""

    def find() -> dict[str, str] | None:
        rows = console.api("/v1/audio?state=transcribed")["items"]
        ids = {row["original_name"]: row["id"] for row in rows}
        return ids if all(name in ids for name in RECORDINGS) else None

    if find() is None and not console.api("/v1/audio")["items"]:
        for name in RECORDINGS:  # this test ran alone: upload through the API
            httpx.post(
                f"{console.gw.url}/v1/audio",
                headers=bearer(console.admin_token),
                files={"file": (name, (DATA / name).read_bytes())},
                timeout=60,
            ).raise_for_status()
    return wait_until(find, timeout=180, what="both recordings transcribed", every=0.5)


def segments_of(console: Console, audio_id: str) -> list[dict[str, Any]]:
    segments: list[dict[str, Any]] = console.api(f"/v1/audio/{audio_id}/transcript")["segments"]
    return segments


def test_dropped_files_upload_with_progress_and_reach_transcribed_without_a_reload(
    console: Console, admin: BrowserContext
) -> None:
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/")
    expect(page.get_by_role("heading", name="Files")).to_be_visible()
    page.keyboard.press("Tab")  # the keyboard's first stop skips the navigation
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.evaluate("window.__sameDocument = true")

    dropped = [(name, (DATA / name).read_bytes()) for name in RECORDINGS]
    drop_files(page, "#dropzone", [*dropped, ("notes.txt", b"this is not audio at all\n" * 40)])

    uploads = page.locator("ul.uploads li")
    expect(uploads).to_have_count(3)
    for name in RECORDINGS:
        item = page.locator(f'ul.uploads li[data-name="{name}"]')
        expect(item).to_have_attribute("data-outcome", "accepted", timeout=60_000)
        expect(item.locator("progress")).to_have_attribute("value", "100")
    rejected = page.locator('ul.uploads li[data-name="notes.txt"]')
    expect(rejected).to_have_attribute("data-outcome", "rejected", timeout=60_000)
    expect(rejected).to_contain_text("rejected:")
    reason = rejected.locator(".status").inner_text()
    assert len(reason) > len("rejected: ") + 5, reason  # a reason a person can read

    # The rows change state as the event stream says, in this same document.
    for name in RECORDINGS:
        row = page.locator("table.files tbody tr", has=page.get_by_role("link", name=name))
        expect(row).to_have_attribute("data-state", "transcribed", timeout=TIMEOUT_MS)
        expect(row.locator("td").nth(3)).not_to_have_text("–")  # the duration
    assert page.evaluate("window.__sameDocument") is True

    # Filtered by state and found by name.
    page.get_by_label("State").select_option("transcribed")
    page.get_by_label("Find").fill("jfk")
    expect(page.locator("table.files tbody tr")).to_have_count(1)
    expect(page.locator("table.files tbody tr").first).to_contain_text("jfk.flac")
    page.get_by_label("Find").fill("")
    screenshot(page, "files")

    # The refused file is listed with its reason, and its page says there is no transcript.
    page.get_by_label("State").select_option("rejected")
    refused = page.locator("table.files tbody tr", has=page.get_by_role("link", name="notes.txt"))
    expect(refused.locator(".reason")).to_contain_text("not accepted")
    refused.get_by_role("link", name="notes.txt").click()
    expect(page.get_by_role("alert")).to_have_text("No transcript: the audio is rejected.")
    expect(page.locator("main .reason")).to_contain_text("not accepted")
    assert console.errors.messages == []
    page.close()


def test_a_file_uploaded_elsewhere_appears_and_shows_its_progress_live(
    console: Console, admin: BrowserContext, long_speech: Path
) -> None:
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/")
    expect(page.get_by_role("heading", name="Files")).to_be_visible()
    expect(page.locator("table.files tbody tr[data-id]").first).to_be_visible()  # the list is read
    uploaded = httpx.post(
        f"{console.gw.url}/v1/audio",
        headers=bearer(console.admin_token),
        files={"file": ("three-minutes.wav", long_speech.read_bytes())},
        timeout=60,
    )
    uploaded.raise_for_status()
    # Its transcript page, opened before there is a transcript, fills in once there is.
    waiting = page_of(console, admin)
    waiting.goto(f"{console.gw.url}/console/audio/{uploaded.json()['id']}")
    expect(waiting.get_by_role("status")).to_contain_text("no transcript yet")
    row = page.locator(
        "table.files tbody tr", has=page.get_by_role("link", name="three-minutes.wav")
    )
    bar = row.locator("td.progress progress")
    # A worker reports about once a second: the bar shows a part done, then the end.
    partly = bar.and_(page.locator('progress:not([value="0"]):not([value="100"])'))
    expect(partly).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_have_attribute("data-state", "processing")
    expect(row).to_have_attribute("data-state", "transcribed", timeout=TIMEOUT_MS)
    expect(bar).to_have_count(0)
    expect(row.locator("td.progress")).to_have_text("100%")
    expect(waiting.locator("ol.segments li.segment").first).to_be_visible()
    waiting.close()
    assert console.errors.messages == []
    page.close()


def test_the_transcript_follows_the_audio_and_a_click_seeks(
    console: Console, admin: BrowserContext
) -> None:
    audio_id = transcribed(console)["multilingual.mp3"]
    segments = segments_of(console, audio_id)
    assert len(segments) >= 3, segments
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/audio/{audio_id}")
    items = page.locator("ol.segments li.segment")
    expect(items).to_have_count(len(segments))
    expect(page.locator('dd[data-field="language"]')).to_contain_text("en")
    expect(page.locator('dd[data-field="model"]')).to_have_text("tiny.en")
    expect(page.locator('dd[data-field="verdict"] .badge')).not_to_have_text("–")
    for fmt in ("TXT", "SRT", "VTT", "JSON"):
        link = page.get_by_role("link", name=fmt, exact=True)
        href = link.get_attribute("href")
        assert href is not None
        status = page.evaluate("(url) => fetch(url).then((r) => r.status)", href)
        assert status == 200, (fmt, status)

    player = page.locator("#player")
    # The metadata came through the Range-served content route. (Polled from here: the
    # page's policy refuses the eval that in-page polling needs.)
    wait_until(lambda: player.evaluate("p => p.readyState") >= 1, timeout=30, what="metadata")
    # Play from just before the second segment: the highlight moves onto it.
    first, second = segments[0], segments[1]
    player.evaluate(
        "(p, at) => { p.currentTime = at; p.play(); }", max(0.0, second["start_s"] - 0.6)
    )
    current = page.locator("li.segment.current")
    expect(current).to_have_attribute("data-idx", str(second["idx"]), timeout=20_000)
    assert page.evaluate("document.querySelector('#player').paused") is False
    screenshot(page, "transcript")

    # Clicking a segment seeks there and highlights it (keyboard: Enter on its button).
    third = segments[2]
    items.nth(2).get_by_role("button").click()
    expect(current).to_have_attribute("data-idx", str(third["idx"]))
    at = player.evaluate("p => p.currentTime")
    assert third["start_s"] - 0.05 <= at <= third["end_s"] + 0.5, (at, third)
    items.nth(0).get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(current).to_have_attribute("data-idx", str(first["idx"]))
    at = player.evaluate("p => p.currentTime")
    assert at < first["end_s"], at
    player.evaluate("p => p.pause()")
    assert console.errors.messages == []
    page.close()


def test_search_opens_the_transcript_at_the_segment_that_says_it(
    console: Console, admin: BrowserContext
) -> None:
    audio_id = transcribed(console)["multilingual.mp3"]
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/search")
    page.get_by_label("Words to find").fill("granted")
    page.get_by_role("button", name="Search").click()
    hit = page.locator("li.hit", has_text="multilingual.mp3").first
    expect(hit.locator("mark")).to_have_text("granted", ignore_case=True)
    screenshot(page, "search")
    hit.get_by_role("link").click()
    page.wait_for_url(f"**/console/audio/{audio_id}?t=*")
    segment = page.locator("li.segment.current")
    expect(segment).to_contain_text("granted", ignore_case=True)
    expect(segment.get_by_role("button")).to_be_focused()
    wanted = float(page.url.split("t=")[1].split("&")[0])
    player = page.locator("#player")
    wait_until(
        lambda: abs(player.evaluate("p => p.currentTime") - wanted) < 0.5,
        timeout=30,
        what="the player to stand at the hit",
    )
    assert console.errors.messages == []
    page.close()


def test_a_correction_made_in_the_page_is_saved_as_a_verified_revision(
    console: Console, admin: BrowserContext
) -> None:
    audio_id = transcribed(console)["jfk.flac"]
    before = console.api(f"/v1/audio/{audio_id}/transcript")
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/audio/{audio_id}")
    page.get_by_role("button", name="Edit text").click()
    first = page.locator("ol.segments textarea").first
    expect(first).to_be_focused()
    # Markup in a correction stays text wherever it is shown (and CSP would refuse it).
    first.fill('And so, my fellow Americans: ask not <img src=x onerror="window.__owned=1">')
    # The spoken language, shown as the model gave it, can be corrected too (here a
    # person overrules the model's "en", as for a language it guessed wrong).
    spoken = page.get_by_label("Spoken language")
    expect(spoken).to_have_value(before["language"])
    spoken.fill("fr")
    page.get_by_role("button", name="Save correction").click()
    expect(page.get_by_role("status").first).to_contain_text(f"revision {before['revision'] + 1}")
    expect(page.locator("li.segment").first).to_contain_text("my fellow Americans: ask not <img")
    expect(page.locator('dd[data-field="corrected by"]')).to_contain_text("console-admin")
    assert page.locator("ol.segments img").count() == 0

    after = console.api(f"/v1/audio/{audio_id}/transcript")
    assert after["revision"] == before["revision"] + 1
    assert after["verified"] is True and after["verified_by"] == "console-admin"
    assert after["segments"][0]["text"].strip().startswith("And so, my fellow Americans: ask")
    assert [s["start_s"] for s in after["segments"]] == [s["start_s"] for s in before["segments"]]
    assert after["language"] == "fr" and {s["language"] for s in after["segments"]} == {"fr"}
    expect(page.locator('dd[data-field="language"]')).to_contain_text("fr")

    page.goto(f"{console.gw.url}/console/search?q=Americans")
    hit = page.locator("li.hit", has_text="jfk.flac")
    expect(hit.locator("mark")).to_have_text("Americans")
    assert page.locator("li.hit img").count() == 0
    assert page.evaluate("window.__owned") is None
    assert console.errors.messages == []
    page.close()


def test_a_tenant_cannot_open_another_tenants_file_by_its_url(console: Console) -> None:
    audio_id = transcribed(console)["jfk.flac"]  # the operator's upload: tenant "default"
    token = console.gw.signer.token(
        "audio:read", "audio:write", "transcripts:read", tenant="globex", sub="globex-user"
    )
    context = console.context(viewport={"width": 390, "height": 844})  # a phone
    page = page_of(console, context)
    page.goto(f"{console.gw.url}/console/")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("who")).to_have_text("globex-user")
    expect(page.locator("table.files tbody")).to_contain_text("No files match.")
    expect(page.get_by_role("link", name="Operations")).to_have_count(0)  # admin only
    expect(page.get_by_test_id("dropzone")).to_be_visible()  # it may upload
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "files-phone")

    page.goto(f"{console.gw.url}/console/audio/{audio_id}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    for path in (f"/v1/audio/{audio_id}", f"/v1/audio/{audio_id}/content"):
        status = page.evaluate("(url) => fetch(url).then((r) => r.status)", path)
        assert status == 404, (path, status)
    page.goto(f"{console.gw.url}/console/search?q=country")
    expect(page.get_by_role("status")).to_contain_text("Nothing says")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_visible()

    # A token that may only read gets the list without the upload zone.
    reader = console.gw.signer.token("audio:read", "transcripts:read", tenant="globex")
    page.get_by_label("Access token").fill(reader)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Search")).to_be_visible()  # back where it was
    page.goto(f"{console.gw.url}/console/")
    expect(page.get_by_role("heading", name="Files")).to_be_visible()
    expect(page.get_by_test_id("dropzone")).to_have_count(0)
    assert console.errors.messages == []
    context.close()


def test_operations_show_the_queue_workers_disk_and_datasets(
    console: Console, admin: BrowserContext
) -> None:
    transcribed(console)
    frozen = cli_json(console.gw.env, "dataset", "freeze")  # the operator's CLI
    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/ops")
    expect(page.get_by_test_id("queue-depth")).to_have_text("0", timeout=30_000)
    workers = page.locator("#workers table tbody tr")
    expect(workers.first).to_contain_text("tiny.en")
    expect(workers.first).to_contain_text("alive")
    expect(page.locator("#disk table tbody tr")).to_have_count(2)
    expect(page.locator("#dead-jobs")).to_contain_text("No dead or failed jobs.")
    version = page.locator("#datasets tbody tr").first
    expect(version).to_contain_text(f"{frozen['name']}")
    expect(version.locator("td").nth(2)).to_have_text(str(frozen["version"]))
    stats = console.api("/v1/datasets")["items"][0]["stats"]
    for group in ("splits", "languages"):  # hours per split and per language, in minutes here
        for name, counted in stats[group].items():
            expect(version).to_contain_text(f"{name} {counted['hours'] * 60:.1f} min")
    screenshot(page, "operations")
    assert console.errors.messages == []
    page.close()


def test_a_dead_job_is_retried_from_the_operations_page(
    console: Console, admin: BrowserContext
) -> None:
    jfk = transcribed(console)["jfk.flac"]
    # A job that died (its error kept), for audio whose bytes are stored: set up in
    # the database as the queue leaves one after its last attempt.
    stored = console.gw.sql("SELECT sha256, storage_key, size_bytes FROM audio WHERE id = %s", jfk)
    audio = console.gw.sql(
        "INSERT INTO audio (tenant, source, original_name, source_uri, state, error, sha256,"
        " storage_key, size_bytes) VALUES ('acme', 'upload', 'retried.flac', %s, 'failed',"
        " 'worker vm:1 stopped responding', %s, %s, %s) RETURNING id",
        f"upload://{uuid.uuid4()}",
        stored[0]["sha256"],
        stored[0]["storage_key"],
        stored[0]["size_bytes"],
    )[0]["id"]
    job = console.gw.sql(
        "INSERT INTO jobs (audio_id, state, attempts, max_attempts, last_error, finished_at)"
        " VALUES (%s, 'dead', 3, 3, 'decoder crashed: test fault', now()) RETURNING id",
        audio,
    )[0]["id"]

    page = page_of(console, admin)
    page.goto(f"{console.gw.url}/console/ops")
    row = page.locator("#dead-jobs tbody tr", has_text="decoder crashed: test fault")
    expect(row).to_contain_text("3 / 3")
    row.get_by_role("button", name=f"Retry job {job}").click()
    expect(page.locator("#dead-jobs")).to_contain_text("No dead or failed jobs.")
    wait_until(
        lambda: console.api(f"/v1/audio/{audio}")["state"] == "transcribed",
        timeout=120,
        what="the retried job to transcribe its audio",
        every=0.5,
    )
    assert console.errors.messages == []
    page.close()
