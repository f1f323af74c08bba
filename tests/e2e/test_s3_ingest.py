"""S3 ingestion end to end: ``ai2text up`` fed by webhook events and by reconcile.

One ``ai2text up`` process (watch + worker + gateway + s3 roles) runs for the
module against a real PostgreSQL database and an in-process moto S3 server. Files
are uploaded with the minio SDK, announced with MinIO- or AWS-shaped webhook
bodies over HTTP, and the outcome is read back from the database. Every test
uses its own keys (and its own audio content, so content dedupe across tests
cannot mask a result); the reconcile test has a bucket of its own.
"""

from __future__ import annotations

import functools
import io
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import psycopg
import pytest
from minio import Minio
from psycopg.rows import dict_row

from tests.e2e.harness import Service, wait_until
from tests.integration.s3_server import moto_s3_server
from tests.wav import speech_pcm, trailing_silence, write_wav

DATA = Path(__file__).resolve().parents[1] / "data"
JFK = DATA / "jfk.flac"
MAX_BODY = 2048
TIMEOUT = 120.0
TERMINAL = ("transcribed", "failed", "rejected", "duplicate")
RECONCILE_KEYS = ("early/one.wav", "early/two.wav")
Row = dict[str, Any]

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- audio


@functools.cache
def _jfk_pcm() -> bytes:
    return speech_pcm(JFK)


def speech_wav(path: Path, variant: int) -> Path:
    """JFK's sentence as a 16 kHz mono WAV, made unique by ``variant`` ms of trailing silence.

    Each test needs content no other test uploads, or content dedupe would turn its
    object into a duplicate of another test's.
    """
    return write_wav(path, trailing_silence(_jfk_pcm(), 16 * (10 + variant)))


# --------------------------------------------------------------------------- service


@dataclass
class S3Up:
    """The running service and everything needed to talk to it."""

    root: Path
    env: dict[str, str]
    client: Minio
    bucket: str
    quiet_bucket: str
    wav_bucket: str
    german_bucket: str
    token: str
    conn: psycopg.Connection[Row]
    service: Service | None = None
    url: str = ""
    starts: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    # -- lifecycle

    def start(self) -> None:
        self.starts += 1
        self.service = Service("up", self.env, self.root / f"up-{self.starts}.log").start()
        listening = self.service.wait_for_event("gateway listening", timeout=TIMEOUT)
        self.url = listening["url"]
        self.service.wait_for_event("worker ready", timeout=TIMEOUT)

    def stop(self) -> int:
        assert self.service is not None
        return self.service.stop()

    @property
    def svc(self) -> Service:
        assert self.service is not None
        return self.service

    # -- bucket

    def upload(self, key: str, path: Path, bucket: str | None = None) -> tuple[str, int]:
        """Upload with the minio SDK; return (etag, size)."""
        result = self.client.fput_object(bucket or self.bucket, key, str(path))
        etag = result.etag
        assert etag
        return etag.strip('"'), path.stat().st_size

    def upload_bytes(self, key: str, data: bytes, bucket: str | None = None) -> tuple[str, int]:
        result = self.client.put_object(bucket or self.bucket, key, io.BytesIO(data), len(data))
        assert result.etag
        return result.etag.strip('"'), len(data)

    # -- webhook

    def post(
        self,
        body: bytes | str | Iterator[bytes],
        *,
        token: str | None = "default",
        content_type: str = "application/json",
    ) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if token == "default":
            token = self.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(f"{self.url}/v1/events/s3", content=body, headers=headers)

    def announce(
        self,
        key: str,
        etag: str | None,
        size: int | None,
        *,
        shape: str = "minio",
        bucket: str | None = None,
    ) -> None:
        """POST one ObjectCreated event for ``key`` and require a 2xx."""
        body = event_body(bucket or self.bucket, key, etag, size, shape=shape)
        response = self.post(json.dumps(body))
        assert response.is_success, (response.status_code, response.text)
        assert response.json()["recorded"] == 1

    # -- database

    def query(self, sql: str, *params: Any) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def audio(self, key: str, bucket: str | None = None) -> list[Row]:
        uri = f"s3://{bucket or self.bucket}/{key}"
        return self.query("SELECT * FROM audio WHERE source_uri = %s ORDER BY created_at", uri)

    def events_for(self, key: str, bucket: str | None = None) -> list[Row]:
        return self.query(
            "SELECT * FROM s3_events WHERE bucket = %s AND key = %s ORDER BY id",
            bucket or self.bucket,
            key,
        )

    def jobs_for(self, audio_id: Any) -> list[Row]:
        return self.query("SELECT * FROM jobs WHERE audio_id = %s", audio_id)

    def transcripts_for(self, audio_id: Any) -> list[Row]:
        return self.query("SELECT * FROM transcripts WHERE audio_id = %s", audio_id)

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) AS n FROM {table}")[0]["n"])  # noqa: S608

    def settle(
        self,
        key: str,
        *,
        rows: int = 1,
        bucket: str | None = None,
        until: Callable[[list[Row]], bool] | None = None,
        timeout: float = TIMEOUT,
    ) -> list[Row]:
        """Wait until the key's events are handled and ``rows`` audio rows are final.

        Fails fast if the service died; on timeout, says what the rows and events were.
        """
        seen: tuple[list[Row], list[Row]] = ([], [])

        def settled() -> tuple[list[Row]] | None:  # a tuple: truthy even with no rows
            nonlocal seen
            self.svc.check_alive()
            seen = (self.audio(key, bucket), self.events_for(key, bucket))
            audio, events = seen
            done = (
                len(audio) >= rows
                and all(r["state"] in TERMINAL for r in audio)
                and all(e["state"] != "pending" for e in events)
                and (until is None or until(audio))
            )
            return (audio,) if done else None

        try:
            return wait_until(settled, timeout=timeout, what=f"{key!r} to settle", every=0.2)[0]
        except AssertionError as exc:
            audio, events = seen
            show_a = [(r["state"], r["error"], r["source_etag"]) for r in audio]
            show_e = [(e["origin"], e["state"], e["error"]) for e in events]
            raise AssertionError(
                f"{exc} with {rows} audio row(s): audio={show_a} events={show_e}"
            ) from None


def event_body(
    bucket: str,
    key: str,
    etag: str | None,
    size: int | None,
    *,
    shape: str = "minio",
) -> dict[str, Any]:
    """A notification as MinIO's webhook or AWS S3 sends it (keys form-URL-encoded)."""
    obj: dict[str, Any] = {
        # MinIO escapes the whole name ('/' too, as %2F); S3 keeps the slashes.
        "key": quote_plus(key, safe="" if shape == "minio" else "/"),
        # MinIO and S3 both send a hex sequencer that grows for later writes to a key.
        "sequencer": f"{time.time_ns():016X}",
    }
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    name = "s3:ObjectCreated:Put" if shape == "minio" else "ObjectCreated:Put"
    record = {
        "eventVersion": "2.1" if shape == "aws" else "2.0",
        "eventSource": "aws:s3" if shape == "aws" else "minio:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-01-01T00:00:00.000Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
    if shape == "aws":
        return {"Records": [record]}
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}


@pytest.fixture(scope="module")
def s3up(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Up]:
    root = tmp_path_factory.mktemp("s3up")
    suffix = uuid.uuid4().hex[:12]
    bucket, quiet_bucket = f"uploads-{suffix}", f"quiet-{suffix}"
    wav_bucket = f"wav-only-{suffix}"
    german_bucket = f"deutsch-{suffix}"  # a source whose audio is expected to be German
    token = secrets.token_urlsafe(24)
    with moto_s3_server() as endpoint:
        client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False)
        client.make_bucket(bucket)
        client.make_bucket(quiet_bucket)
        client.make_bucket(wav_bucket)
        client.make_bucket(german_bucket)
        # Objects no event will ever announce, there before the service starts.
        for i, key in enumerate(RECONCILE_KEYS):
            wav = speech_wav(root / f"early-{i}.wav", variant=100 + i)
            client.fput_object(quiet_bucket, key, str(wav))
        sources = [
            {"bucket": bucket, "quiet_period_s": 0, "reconcile_interval_s": 3600},
            {"bucket": quiet_bucket, "quiet_period_s": 0, "reconcile_interval_s": 3600},
            {
                "bucket": wav_bucket,
                "suffixes": ["wav"],
                "quiet_period_s": 0,
                "reconcile_interval_s": 3600,
            },
            {
                "bucket": german_bucket,
                "language": "de",
                "vocabulary": ["Kennedy"],
                "quiet_period_s": 0,
                "reconcile_interval_s": 3600,
            },
        ]
        env = {
            "AI2TEXT_DATABASE__URL": module_database_url,
            "AI2TEXT_DATA_DIR": str(root / "data"),
            "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
            "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
            "AI2TEXT_STORAGE__ENDPOINT": endpoint,
            "AI2TEXT_STORAGE__ACCESS_KEY": "testing",
            "AI2TEXT_STORAGE__SECRET_KEY": "testing",
            "AI2TEXT_STORAGE__SECURE": "false",
            "AI2TEXT_STORAGE__BUCKET": f"store-{suffix}",
            "AI2TEXT_S3_SOURCES": json.dumps(sources),
            "AI2TEXT_WEBHOOK__TOKEN": token,
            "AI2TEXT_WEBHOOK__MAX_BODY_BYTES": str(MAX_BODY),
            "AI2TEXT_GATEWAY__PORT": "0",
            "AI2TEXT_QUEUE__POLL_INTERVAL_S": "0.5",
        }
        with psycopg.connect(module_database_url, autocommit=True, row_factory=dict_row) as conn:
            up = S3Up(
                root=root,
                env=env,
                client=client,
                bucket=bucket,
                quiet_bucket=quiet_bucket,
                wav_bucket=wav_bucket,
                german_bucket=german_bucket,
                token=token,
                conn=conn,
            )
            up.start()
            try:
                yield up
                assert up.stop() == 0
            finally:
                up.svc.kill()
                up.http.close()


# --------------------------------------------------------------------------- tests


def test_minio_webhook_delivered_three_times_gives_one_transcript(s3up: S3Up) -> None:
    key = "meetings/jfk.flac"
    etag, size = s3up.upload(key, JFK)
    for _ in range(3):
        s3up.announce(key, etag, size, shape="minio")

    [row] = s3up.settle(key, until=lambda rows: rows[0]["state"] == "transcribed")
    assert row["state"] == "transcribed", row["error"]
    assert row["source_key"] == key and row["source_etag"] == etag
    [transcript] = s3up.transcripts_for(row["id"])
    assert "country" in transcript["text"].lower()

    # Every delivery was recorded (2xx only after that), and all are handled by now.
    events = s3up.events_for(key)
    assert len(events) == 3
    assert all(e["origin"] == "webhook" and e["state"] == "done" for e in events), events
    assert {e["audio_id"] for e in events} == {row["id"]}
    assert len(s3up.audio(key)) == 1
    assert len(s3up.jobs_for(row["id"])) == 1
    assert len(s3up.transcripts_for(row["id"])) == 1


def test_aws_event_with_encoded_key_finds_the_exact_object(s3up: S3Up, tmp_path: Path) -> None:
    key = "talks/my talk+ü ñ.wav"
    etag, size = s3up.upload(key, speech_wav(tmp_path / "talk.wav", variant=1))
    body = event_body(s3up.bucket, key, etag, size, shape="aws")
    sent_key = body["Records"][0]["s3"]["object"]["key"]
    # Encoded as S3 does: space as '+', a literal '+' as %2B, UTF-8 percent-encoded.
    assert sent_key == "talks/my+talk%2B%C3%BC+%C3%B1.wav"
    response = s3up.post(json.dumps(body))
    assert response.is_success, response.text

    [row] = s3up.settle(key)
    assert row["state"] == "transcribed", row["error"]
    assert row["source_key"] == key
    assert row["source_uri"] == f"s3://{s3up.bucket}/{key}"
    [event] = s3up.events_for(key)
    assert event["key"] == key and event["state"] == "done"
    [transcript] = s3up.transcripts_for(row["id"])
    assert "country" in transcript["text"].lower()


def test_objects_without_events_are_found_by_reconcile_once(s3up: S3Up, tmp_path: Path) -> None:
    bucket = s3up.quiet_bucket
    rows = {key: s3up.settle(key, bucket=bucket) for key in RECONCILE_KEYS}
    for key, found in rows.items():
        assert len(found) == 1, (key, found)
        assert found[0]["state"] == "transcribed", (key, found[0]["error"])
        assert found[0]["source_key"] == key
        assert len(s3up.transcripts_for(found[0]["id"])) == 1
        assert [e["origin"] for e in s3up.events_for(key, bucket)] == ["reconcile"]
    assert s3up.svc.count("reconcile found objects no event announced") >= 1

    # A third object appears while the service is down: the restart's reconcile must
    # find exactly that one and leave the two it has already seen alone.
    jobs_before = s3up.count("jobs")
    assert s3up.stop() == 0
    late = "late/three.wav"
    s3up.upload(late, speech_wav(tmp_path / "late.wav", variant=102), bucket=bucket)
    s3up.start()

    logged = s3up.svc.wait_for_event(
        "reconcile found objects no event announced",
        where=lambda e: e.get("bucket") == bucket,
        timeout=TIMEOUT,
    )
    assert logged["count"] == 1, logged
    [late_row] = s3up.settle(late, bucket=bucket)
    assert late_row["state"] == "transcribed", late_row["error"]

    for key, before in rows.items():
        after = s3up.audio(key, bucket)
        assert [r["id"] for r in after] == [before[0]["id"]], key
        assert len(s3up.jobs_for(before[0]["id"])) == 1
        assert [e["origin"] for e in s3up.events_for(key, bucket)] == ["reconcile"], key
    assert s3up.count("jobs") == jobs_before + 1


def test_webhook_refuses_bad_token_bad_json_and_oversized_bodies(s3up: S3Up) -> None:
    key = "refused/never.wav"
    valid = json.dumps(event_body(s3up.bucket, key, "0" * 32, 1000))
    assert len(valid) < MAX_BODY

    for token in (None, "wrong-" + s3up.token, s3up.token[:-1]):
        response = s3up.post(valid, token=token)
        assert response.status_code == 401, (token, response.text)
        assert "invalid_token" in response.headers.get("www-authenticate", ""), token
        assert response.headers["content-type"].startswith("application/problem+json")

    for not_json in (b"this is not json", b"{", b"\xff\xfe{}"):
        response = s3up.post(not_json)
        assert response.status_code == 400, (not_json, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 400

    padded = json.loads(valid)
    padded["padding"] = "x" * MAX_BODY
    oversized = json.dumps(padded).encode()
    response = s3up.post(oversized)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")

    # The same without a Content-Length header: the limit holds while streaming.
    response = s3up.post(iter([oversized[:1000], oversized[1000:]]))
    assert response.status_code == 413, response.text

    # Nothing about this object was recorded (other tests' objects may be, meanwhile).
    assert s3up.events_for(key) == []
    assert s3up.audio(key, s3up.bucket) == []
    # And the receiver still works for a correct request afterwards.
    s3up.svc.check_alive()
    assert s3up.post(json.dumps({"Event": "s3:TestEvent"})).status_code == 200


def test_event_for_deleted_object_is_recorded_as_failed_and_service_goes_on(
    s3up: S3Up, tmp_path: Path
) -> None:
    gone = "gone/deleted-before-ingest.wav"
    etag, size = s3up.upload(gone, speech_wav(tmp_path / "gone.wav", variant=2))
    s3up.client.remove_object(s3up.bucket, gone)
    s3up.announce(gone, etag, size)
    never = "gone/never-uploaded.wav"
    s3up.announce(never, "d41d8cd98f00b204e9800998ecf8427e", 12345)

    for key in (gone, never):
        [row] = s3up.settle(key)
        [event] = s3up.events_for(key)
        assert event["state"] == "failed", event
        assert "no longer exists" in (event["error"] or ""), event
        assert row["state"] == "rejected", row
        assert "no longer exists" in (row["error"] or ""), row
        assert event["audio_id"] == row["id"]
        assert s3up.jobs_for(row["id"]) == []

    s3up.svc.check_alive()
    fine = "gone/still-working.wav"
    etag, size = s3up.upload(fine, speech_wav(tmp_path / "fine.wav", variant=3))
    s3up.announce(fine, etag, size)
    [row] = s3up.settle(fine)
    assert row["state"] == "transcribed", row["error"]
    assert "country" in s3up.transcripts_for(row["id"])[0]["text"].lower()


def test_same_content_under_another_key_is_a_duplicate(s3up: S3Up) -> None:
    first, second = "dup/first.mp3", "dup/copy of first.mp3"
    etag, size = s3up.upload(first, DATA / "hotwords.mp3")
    s3up.announce(first, etag, size)
    [original] = s3up.settle(first)
    assert original["state"] == "transcribed", original["error"]

    etag2, size2 = s3up.upload(second, DATA / "hotwords.mp3")
    assert etag2 == etag
    s3up.announce(second, etag2, size2)
    [copy] = s3up.settle(second)
    assert copy["state"] == "duplicate", copy
    assert copy["duplicate_of"] == original["id"]
    assert copy["sha256"] == original["sha256"]
    assert s3up.transcripts_for(copy["id"]) == []
    assert len(s3up.transcripts_for(original["id"])) == 1
    assert s3up.svc.count("transcribed", lambda e: e.get("audio_id") == str(copy["id"])) == 0


def test_a_sources_language_and_vocabulary_reach_the_job_and_a_mismatch_is_flagged(
    s3up: S3Up, tmp_path: Path
) -> None:
    """English speech in a bucket declared German: transcribed as asked, put in review."""
    key = "interviews/english-by-mistake.wav"
    wav = speech_wav(tmp_path / "jfk.wav", variant=300)
    etag, size = s3up.upload(key, wav, bucket=s3up.german_bucket)
    s3up.announce(key, etag, size, bucket=s3up.german_bucket)
    [row] = s3up.settle(key, bucket=s3up.german_bucket)
    assert row["state"] == "transcribed", row["error"]
    [job] = s3up.jobs_for(row["id"])
    assert job["options"] == {"language": "de", "vocabulary": ["Kennedy"]}
    [transcript] = s3up.transcripts_for(row["id"])
    assert transcript["expected_language"] == "de"
    assert transcript["detected_language"] == "en"
    assert transcript["verdict"] == "review"
    assert any("language differs from expected" in r for r in transcript["review_reasons"])


def test_overwritten_object_gets_its_own_row_and_transcript(s3up: S3Up, tmp_path: Path) -> None:
    key = "overwrite/clip.wav"
    etag1, size1 = s3up.upload(key, DATA / "stereo_diarization.wav")
    s3up.announce(key, etag1, size1)
    [v1] = s3up.settle(key)
    assert v1["state"] == "transcribed", v1["error"]

    etag2, size2 = s3up.upload(key, speech_wav(tmp_path / "v2.wav", variant=4))
    assert etag2 != etag1
    s3up.announce(key, etag2, size2)
    rows = s3up.settle(key, rows=2)
    assert len(rows) == 2, rows
    assert [r["source_etag"] for r in rows] == [etag1, etag2]
    assert all(r["state"] == "transcribed" for r in rows), [(r["state"], r["error"]) for r in rows]
    assert rows[0]["sha256"] != rows[1]["sha256"]

    [t1] = s3up.transcripts_for(rows[0]["id"])
    [t2] = s3up.transcripts_for(rows[1]["id"])
    assert t1["text"] != t2["text"]
    assert "country" not in t1["text"].lower()
    assert "country" in t2["text"].lower()


def test_text_named_wav_is_rejected_and_left_untouched_in_the_bucket(s3up: S3Up) -> None:
    key = "notes/not-really.wav"
    data = b"this is a text file, not audio\n" * 40
    etag, size = s3up.upload_bytes(key, data)
    s3up.announce(key, etag, size)

    [row] = s3up.settle(key)
    # Refused from its first bytes, before any job: a short reason, not a stack trace.
    assert row["state"] == "rejected", row
    reason = row["error"] or ""
    assert reason.strip() and len(reason) < 500, reason
    assert "Traceback" not in reason
    assert s3up.jobs_for(row["id"]) == []
    assert s3up.transcripts_for(row["id"]) == []

    stat = s3up.client.stat_object(s3up.bucket, key)
    assert (stat.etag or "").strip('"') == etag
    response = s3up.client.get_object(s3up.bucket, key)
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    keys = [o.object_name for o in s3up.client.list_objects(s3up.bucket, prefix="notes/")]
    assert keys == [key]


def test_stale_event_arriving_after_the_overwrite_changes_nothing(
    s3up: S3Up, tmp_path: Path
) -> None:
    key = "late/stale.wav"
    etag1, size1 = s3up.upload(key, speech_wav(tmp_path / "v1.wav", variant=6))
    stale = event_body(s3up.bucket, key, etag1, size1)  # sequencer taken now: the older one
    etag2, size2 = s3up.upload(key, speech_wav(tmp_path / "v2.wav", variant=7))
    s3up.announce(key, etag2, size2)
    [row] = s3up.settle(key)
    assert row["state"] == "transcribed" and row["source_etag"] == etag2, row

    response = s3up.post(json.dumps(stale))
    assert response.is_success, response.text
    rows = s3up.settle(key)
    assert [r["id"] for r in rows] == [row["id"]]
    assert [e["state"] for e in s3up.events_for(key)] == ["done", "skipped"]
    assert len(s3up.transcripts_for(row["id"])) == 1


def test_object_reuploaded_after_its_event_found_it_deleted_is_transcribed(
    s3up: S3Up, tmp_path: Path
) -> None:
    key = "again/back.wav"
    wav = speech_wav(tmp_path / "back.wav", variant=5)
    etag, size = s3up.upload(key, wav)
    s3up.client.remove_object(s3up.bucket, key)
    s3up.announce(key, etag, size)
    [row] = s3up.settle(key)
    assert row["state"] == "rejected" and "no longer exists" in row["error"], row

    # The user uploads the very same file again: same bytes, same etag, a fresh event.
    etag2, size2 = s3up.upload(key, wav)
    assert etag2 == etag
    s3up.announce(key, etag2, size2)
    rows = s3up.settle(key)  # both events handled, every row final
    assert any(r["state"] == "transcribed" for r in rows), [(r["state"], r["error"]) for r in rows]


def test_event_for_key_outside_the_sources_suffixes_is_not_ingested(s3up: S3Up) -> None:
    bucket, key = s3up.wav_bucket, "talk.mp3"  # that source watches ["wav"] only
    etag, size = s3up.upload(key, DATA / "multilingual.mp3", bucket=bucket)
    s3up.announce(key, etag, size, bucket=bucket)
    wait_until(
        lambda: all(e["state"] != "pending" for e in s3up.events_for(key, bucket)),
        timeout=TIMEOUT,
        what="the event to be handled",
    )
    [event] = s3up.events_for(key, bucket)
    assert event["state"] == "skipped", event
    assert s3up.audio(key, bucket) == []
