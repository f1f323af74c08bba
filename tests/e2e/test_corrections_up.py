"""Through ``ai2text up`` and the real model: a correction reaches everything downstream.

A drop of real speech is transcribed; ``ai2text correct`` replaces a word the
model wrote; the transcript files in the outbox are written again with it, a
webhook subscribed to ``transcript.corrected`` is told (signed), and ``show``
and ``search`` answer with the newest revision.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import FAST_MODEL, REPO, Service, cli_json, wait_until
from tests.e2e.hook_server import HookServer, serving
from tests.e2e.test_up import embedded_env
from tests.webhook_receiver import verify_signature

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "corrections-webhook-secret-0123"

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[HookServer]:
    with serving() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI2TEXT_DATABASE__URL", raising=False)


def test_a_correction_rewrites_the_outbox_files_and_tells_its_webhook(
    embedded_root: Path, receiver: HookServer
) -> None:
    env = embedded_env(embedded_root) | FAST_MODEL
    env.pop("AI2TEXT_DATABASE__URL")
    hook = {"url": receiver.url, "secret": SECRET, "events": ["transcript.corrected"]}
    env |= {
        "AI2TEXT_DELIVERIES__WEBHOOKS": json.dumps([hook]),
        "AI2TEXT_DELIVERIES__POLL_INTERVAL_S": "1",
    }
    inbox = embedded_root / "inbox"
    txt = inbox / "transcripts" / "jfk.txt"
    service = Service("up", env, embedded_root / "up.log").start()
    try:
        service.wait_for_event("worker ready", timeout=120)
        shutil.copy(DATA / "jfk.flac", inbox / "jfk.flac")
        wait_until(txt.exists, timeout=180, what="the outbox transcript")
        (row,) = cli_json(env, "ls")
        heard = txt.read_text(encoding="utf-8")
        assert "country" in heard.lower()
        fixed = heard.replace("country", "homeland").replace("Country", "Homeland")
        edited = embedded_root / "jfk-fixed.txt"
        edited.write_text(fixed, encoding="utf-8")

        done = subprocess.run(
            [sys.executable, "-m", "ai2text", "correct", row["id"][:8], str(edited)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "revision 2 verified by cli:" in done.stdout

        wait_until(
            lambda: txt.read_text(encoding="utf-8") == fixed,
            timeout=60,
            what="the outbox file written again with the correction",
        )
        headers, body = wait_until(
            lambda: next(iter(receiver.accepted()), None),
            timeout=60,
            what="the transcript.corrected event at the webhook",
        )
        event = json.loads(body)
        assert event["type"] == "ai2text.transcript.corrected"
        assert event["data"]["audio_id"] == row["id"]
        assert verify_signature(SECRET, body, headers["x-ai2text-signature"])
        # Only what it asked for: the transcription itself was not sent to it.
        assert [json.loads(b)["type"] for _, b in receiver.accepted()] == [event["type"]]

        shown = cli_json(env, "show", row["id"])["transcript"]
        assert shown["revision"] == 2 and shown["verified"] is True
        assert "homeland" in shown["text"].lower() and "country" not in shown["text"].lower()
        found = cli_json(env, "search", "homeland")
        assert found and {r["audio_id"] for r in found} == {row["id"]}
        assert cli_json(env, "search", "country") == []
    finally:
        assert service.stop() == 0
