"""``ai2text up`` through an S3 outage: events wait, nothing is lost, nothing is done twice.

The service reaches S3 (its store bucket and the watched source bucket) only
through a loopback TCP proxy in front of an in-process moto server. Cutting the
proxy is the outage: every connection is reset, while the objects live on in
moto, where the test keeps uploading directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from minio import Minio

from pipeline.sources.inbox import CLAIM_HIDE_S
from tests import wav
from tests.e2e.harness import FAST_MODEL, Service, wait_until
from tests.e2e.tcp_proxy import TcpProxy
from tests.wav import trailing_silence, wav_bytes

DATA = Path(__file__).resolve().parents[1] / "data"
RETRY_WARNING = "unavailable; retrying with backoff"
PROCESSING = "S3 event processing"
Row = dict[str, Any]

pytestmark = pytest.mark.slow


# -- fixtures and helpers --------------------------------------------------------


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[TcpProxy]:
    with TcpProxy.to(moto_endpoint) as p:
        yield p


@pytest.fixture(scope="module")
def speech_pcm() -> bytes:
    """jfk.flac as 16 kHz mono 16-bit PCM."""
    return wav.speech_pcm(DATA / "jfk.flac")


def speech_wav(pcm: bytes, variant: int) -> bytes:
    """Real speech, made byte-distinct by ``variant`` tenths of a second of trailing silence."""
    return wav_bytes(trailing_silence(pcm, 1600 * variant))


@dataclass
class Stack:
    service: Service
    proxy: TcpProxy
    s3: Minio  # straight to moto, never through the proxy
    uploads: str
    gateway: str
    token: str
    db: psycopg.Connection[Row]

    def upload(self, key: str, data: bytes) -> str:
        """Put an object into the watched bucket directly; return its etag."""
        result = self.s3.put_object(self.uploads, key, io.BytesIO(data), len(data))
        return str(result.etag).strip('"')

    def announce(self, *objects: tuple[str, int, str]) -> None:
        """POST an AWS-shaped notification for ``(key, size, etag)`` objects to the gateway."""
        records = [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": self.uploads},
                    "object": {"key": key, "size": size, "eTag": etag},
                },
            }
            for key, size, etag in objects
        ]
        response = httpx.post(
            f"{self.gateway}/v1/events/s3",
            json={"Records": records},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"recorded": len(objects)}

    def put(self, key: str, data: bytes) -> None:
        self.announce((key, len(data), self.upload(key, data)))

    def audio(self, key: str) -> list[Row]:
        return self.db.execute(
            "SELECT * FROM audio WHERE source_uri = %s", (f"s3://{self.uploads}/{key}",)
        ).fetchall()

    def job(self, key: str) -> Row | None:
        return self.db.execute(
            "SELECT j.* FROM jobs j JOIN audio a ON a.id = j.audio_id WHERE a.source_uri = %s",
            (f"s3://{self.uploads}/{key}",),
        ).fetchone()

    def transcribed(self, key: str) -> bool:
        return any(r["state"] == "transcribed" for r in self.audio(key))

    def events_for(self, key: str) -> list[Row]:
        """The object's notifications; ``in_hand`` while the processor holds one (claimed)."""
        return self.db.execute(
            "SELECT *, run_after > now() + make_interval(secs => %s) AS in_hand"
            " FROM s3_events WHERE bucket = %s AND key = %s ORDER BY id",
            (CLAIM_HIDE_S / 2, self.uploads, key),
        ).fetchall()

    def retry_warnings(self, what: str) -> int:
        return self.service.count(RETRY_WARNING, where=lambda e: e.get("what") == what)

    def available_again(self, what: str) -> int:
        return self.service.count("available again", where=lambda e: e.get("what") == what)

    def wait_transcribed(self, *keys: str, timeout: float = 120) -> None:
        def done() -> bool:
            self.service.check_alive()
            return all(self.transcribed(k) for k in keys)

        wait_until(done, timeout=timeout, what=f"{', '.join(keys)} transcribed", every=0.2)

    def assert_each_once(self, *keys: str) -> None:
        """Exactly one audio row, one done job and one transcript per object; nothing else."""
        for key in keys:
            rows = self.audio(key)
            assert len(rows) == 1, (key, rows)
            audio = rows[0]
            assert audio["state"] == "transcribed", (key, audio)
            jobs = self.db.execute(
                "SELECT state FROM jobs WHERE audio_id = %s", (audio["id"],)
            ).fetchall()
            assert [j["state"] for j in jobs] == ["done"], (key, jobs)
            transcripts = self.db.execute(
                "SELECT text FROM transcripts WHERE audio_id = %s", (audio["id"],)
            ).fetchall()
            assert len(transcripts) == 1, (key, transcripts)
            assert "country" in transcripts[0]["text"].lower(), (key, transcripts)
        total = self.db.execute(
            "SELECT (SELECT count(*) FROM audio) AS audio,"
            " (SELECT count(*) FROM transcripts) AS transcripts,"
            " (SELECT count(*) FROM jobs) AS jobs"
        ).fetchone()
        assert total == {"audio": len(keys), "transcripts": len(keys), "jobs": len(keys)}
        unsettled = self.db.execute(
            "SELECT key, state, error FROM s3_events WHERE state NOT IN ('done', 'skipped')"
        ).fetchall()
        assert unsettled == []


def s3_env(
    root: Path, database_url: str, proxy: TcpProxy, uploads: str, token: str
) -> dict[str, str]:
    source = {"bucket": uploads, "quiet_period_s": 0, "reconcile_interval_s": 2}
    return FAST_MODEL | {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_STORAGE__ENDPOINT": proxy.endpoint,
        "AI2TEXT_STORAGE__ACCESS_KEY": "testing",
        "AI2TEXT_STORAGE__SECRET_KEY": "testing",
        "AI2TEXT_STORAGE__SECURE": "false",
        "AI2TEXT_STORAGE__BUCKET": f"store-{uuid.uuid4().hex[:12]}",
        "AI2TEXT_STORAGE__TIMEOUT_S": "2",
        "AI2TEXT_S3_SOURCES": json.dumps([source]),
        "AI2TEXT_WEBHOOK__TOKEN": token,
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "0.5",
        "AI2TEXT_QUEUE__BACKOFF_BASE_S": "0.5",
        "AI2TEXT_QUEUE__BACKOFF_MAX_S": "3",
    }


@pytest.fixture
def service_env() -> dict[str, str]:
    """Extra environment for the service; tests override it by parametrizing."""
    return {}


@pytest.fixture
def stack(
    tmp_path: Path,
    database_url: str,
    db: psycopg.Connection[Row],
    moto_endpoint: str,
    proxy: TcpProxy,
    service_env: dict[str, str],
) -> Iterator[Stack]:
    uploads = f"uploads-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    s3 = Minio(moto_endpoint, access_key="testing", secret_key="testing", secure=False)
    s3.make_bucket(uploads)
    env = {**s3_env(tmp_path, database_url, proxy, uploads, token), **service_env}
    service = Service("up", env, tmp_path / "up.log").start()
    try:
        service.wait_for_event("worker ready", timeout=120)
        url = service.wait_for_event("gateway listening", timeout=60)["url"]
        yield Stack(service, proxy, s3, uploads, url, token, db)
        proxy.restore()  # a clean stop must not wait on S3
        proxy.throttle(None)
        assert service.stop() == 0
    finally:
        service.kill()


def wait_for_download(stack: Stack, key: str) -> Row:
    """The job for ``key`` claimed and fetching (the proxy is throttled, so it takes a while)."""

    def running() -> Row | None:
        stack.service.check_alive()
        job = stack.job(key)
        return job if job is not None and job["state"] == "running" else None

    return wait_until(running, timeout=60, what=f"the job for {key} to start", every=0.02)


# -- tests -------------------------------------------------------------------------


def test_events_announced_during_an_outage_are_transcribed_once_it_ends(
    stack: Stack, speech_pcm: bytes
) -> None:
    a, b, c = (speech_wav(speech_pcm, i) for i in (1, 2, 3))
    listing = f"listing s3://{stack.uploads}/"

    # Before the outage: A, announced by no one, is found by reconcile and transcribed.
    stack.upload("a.wav", a)
    stack.wait_transcribed("a.wav")
    assert stack.events_for("a.wav")[0]["origin"] == "reconcile"
    assert stack.retry_warnings(PROCESSING) == stack.retry_warnings(listing) == 0

    stack.proxy.cut()
    # B and C land in the bucket; their notifications are still recorded durably.
    stack.put("b.wav", b)
    stack.put("c.wav", c)

    def tried_and_failed() -> bool:
        stack.service.check_alive()
        events = stack.events_for("b.wav") + stack.events_for("c.wav")
        return (
            len(events) == 2
            # two tries each, both over (not one still in the processor's hands)
            and all(e["attempts"] >= 2 and e["error"] and not e["in_hand"] for e in events)
            # each listing try is 4 connections (urllib3 retries 3 times): 2+ tries
            and stack.proxy.refused_matching(b"list-type=2") >= 8
            and stack.retry_warnings(listing) >= 1
            and stack.retry_warnings(PROCESSING) >= 1
        )

    wait_until(tried_and_failed, timeout=60, what="the service to try S3 and fail, twice")
    stack.service.check_alive()
    health = httpx.get(f"{stack.gateway}/healthz", timeout=10)
    assert health.status_code == 200
    for event in stack.events_for("b.wav") + stack.events_for("c.wav"):
        assert event["state"] == "pending"
        assert "cannot stat" in event["error"], event["error"]
    assert stack.audio("b.wav") == stack.audio("c.wav") == []

    stack.proxy.restore()
    stack.wait_transcribed("b.wav", "c.wav")
    wait_until(
        lambda: stack.available_again(PROCESSING) and stack.available_again(listing),
        timeout=60,
        what="both loops to log that S3 is available again",
    )

    stack.assert_each_once("a.wav", "b.wav", "c.wav")
    # Many failed tries during the outage, one warning per loop for it.
    assert stack.retry_warnings(PROCESSING) == 1
    assert stack.retry_warnings(listing) == 1
    processing_tries = sum(e["attempts"] for e in stack.events_for("b.wav"))
    processing_tries += sum(e["attempts"] for e in stack.events_for("c.wav"))
    recovered = stack.service.events()
    again = {e["what"]: e["failed_tries"] for e in recovered if e.get("event") == "available again"}
    # Every claim of B and C but the last, successful one was a failed try.
    assert again[PROCESSING] == processing_tries - 2 >= 4
    assert again[listing] >= 2


def test_a_download_cut_mid_transfer_is_retried_and_transcribed_once(
    stack: Stack, speech_pcm: bytes
) -> None:
    d = speech_wav(speech_pcm, 4)
    # ~5 s for the processor's head read and again for the worker's download.
    stack.proxy.throttle(64 * 1024)
    stack.put("d.wav", d)
    wait_for_download(stack, "d.wav")

    stack.proxy.cut()

    def failed() -> Row | None:
        stack.service.check_alive()
        job = stack.job("d.wav")
        return job if job is not None and job["last_error"] else None

    job = wait_until(failed, timeout=60, what="the cut download to fail", every=0.02)
    stack.proxy.throttle(None)
    stack.proxy.restore()
    assert job["state"] in ("queued", "running"), job
    # Storage being unreachable is not the job's fault: the attempt is handed back.
    expected_attempts = 0 if job["state"] == "queued" else 1  # 1: already claimed again
    assert job["attempts"] == expected_attempts, job
    assert "cannot download d.wav" in job["last_error"], job["last_error"]
    stack.service.check_alive()

    stack.wait_transcribed("d.wav")
    stack.assert_each_once("d.wav")
    done = stack.job("d.wav")
    # Only the successful attempt counts: the outage did not use up the retry budget.
    assert done is not None and done["attempts"] == 1, done
    audio = stack.audio("d.wav")[0]
    assert audio["sha256"] == hashlib.sha256(d).hexdigest()
    # The partial download left no temp file behind.
    staging = Path(stack.service.env["AI2TEXT_DATA_DIR"]) / "tmp"
    leftovers = [p for p in staging.rglob("*") if not p.is_dir()]
    assert leftovers == []


class JobDiedInOutage(Exception):
    """The job ended dead while S3 was down, though the object was intact all along."""


@pytest.mark.parametrize("service_env", [{"AI2TEXT_QUEUE__MAX_ATTEMPTS": "3"}], ids=["3-attempts"])
def test_a_job_outlives_an_outage_longer_than_its_retry_budget(
    stack: Stack, speech_pcm: bytes
) -> None:
    e = speech_wav(speech_pcm, 5)
    stack.proxy.throttle(64 * 1024)
    stack.put("e.wav", e)
    wait_for_download(stack, "e.wav")
    stack.proxy.cut()

    # Three attempts, 0.5 s and 1 s of backoff apart, fail within ~5 s: an outage of
    # 20 s is well past the budget. (Stop waiting early once the job is dead.)
    outage_ends = time.monotonic() + 20

    def dead_or_over() -> bool:
        stack.service.check_alive()
        job = stack.job("e.wav")
        return (job is not None and job["state"] == "dead") or time.monotonic() > outage_ends

    wait_until(dead_or_over, timeout=40, what="the outage to run its course")
    stack.proxy.throttle(None)
    stack.proxy.restore()

    job = stack.job("e.wav")
    assert job is not None
    if job["state"] == "dead":
        raise JobDiedInOutage(f"job dead after {job['attempts']} attempts: {job['last_error']}")
    stack.wait_transcribed("e.wav", timeout=60)
    stack.assert_each_once("e.wav")
