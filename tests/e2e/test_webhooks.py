"""``ai2text up`` tells a configured webhook, signed, when a dropped file is transcribed.

The embedded default allows a receiver on 127.0.0.1 (private addresses are refused
only with an external database, unless allowed). The receiver refuses the first
request, so the delivery is retried; it is accepted once, with a signature that
verifies as the README says.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import FAST_MODEL, Service, cli_json, wait_until
from tests.e2e.hook_server import HookServer, serving
from tests.e2e.test_up import embedded_env
from tests.webhook_receiver import verify_signature

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "e2e-webhook-secret-0123456789"

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[HookServer]:
    with serving(fail_first=1) as server:  # the first one fails, so the delivery is retried
        yield server


@pytest.fixture(autouse=True)
def _no_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI2TEXT_DATABASE__URL", raising=False)


def test_up_delivers_a_signed_webhook_for_a_dropped_file(
    embedded_root: Path, receiver: HookServer
) -> None:
    env = embedded_env(embedded_root) | FAST_MODEL
    env.pop("AI2TEXT_DATABASE__URL")
    env |= {
        "AI2TEXT_DELIVERIES__WEBHOOKS": json.dumps([{"url": receiver.url, "secret": SECRET}]),
        "AI2TEXT_DELIVERIES__BACKOFF_BASE_S": "0.2",
        "AI2TEXT_DELIVERIES__POLL_INTERVAL_S": "1",
    }
    service = Service("up", env, embedded_root / "up.log").start()
    try:
        service.wait_for_event("watching", timeout=120)
        shutil.copy(DATA / "jfk.flac", embedded_root / "inbox" / "jfk.flac")
        headers, body = wait_until(
            lambda: next(iter(receiver.accepted()), None),
            timeout=180,
            what="the transcribed event at the receiver",
        )
        event = json.loads(body)
        assert event["type"] == "ai2text.audio.transcribed"
        assert event["data"]["name"] == "jfk.flac"
        assert event["data"]["state"] == "transcribed"
        assert event["data"]["links"]["transcript"] == (
            f"/v1/audio/{event['data']['audio_id']}/transcript"
        )
        assert headers["x-ai2text-event-id"] == event["id"]
        assert verify_signature(SECRET, body, headers["x-ai2text-signature"])
        assert len(receiver.requests) == 2  # refused once, then accepted
        assert all(json.loads(b)["id"] == event["id"] for _, b, _ in receiver.requests)

        listed = wait_until(
            lambda: _delivered(cli_json(env, "webhooks")),
            timeout=30,
            what="the delivery listed as delivered",
        )
        assert listed["event_id"] == event["id"]
        assert listed["attempts"] == 2
    finally:
        assert service.stop() == 0


def _delivered(overview: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (
            d
            for d in overview["deliveries"]
            if d["target"].startswith("webhook:") and d["state"] == "delivered"
        ),
        None,
    )
