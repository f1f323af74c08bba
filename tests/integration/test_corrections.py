"""Corrections: ``PUT /v1/audio/{id}/transcript``, revisions, and ``ai2text correct``.

A real ``ai2text gateway`` process on real PostgreSQL, called over loopback HTTP
with real signed JWTs; the CLI runs as ``python -m ai2text``. Transcripts are
written by hand as the worker writes them (``add_transcript``), so each test says
exactly what the model "heard"; the model itself is not what is tested here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.e2e.gateway_harness import PROBLEM, Gateway, bearer, start_keyed_gateway
from tests.e2e.harness import REPO
from tests.integration.test_dataset_languages import add_transcript

pytestmark = pytest.mark.slow

Conn = psycopg.Connection[dict[str, Any]]
READ = ("audio:read", "transcripts:read")
EDIT = (*READ, "transcripts:write")
BODY_LIMIT = 64 * 1024
HEARD = [(0.0, 4.0, "Helo wrld, this is a test.", "en"), (4.0, 8.0, "Good bye for now.", "en")]


@pytest.fixture(scope="module")
def gateway(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("corrections")
    started = start_keyed_gateway(
        "gateway",
        root,
        module_database_url,
        {"AI2TEXT_CORRECTIONS__MAX_BODY_BYTES": str(BODY_LIMIT)},
    )
    try:
        yield started
    finally:
        started.service.stop()


@pytest.fixture
def db(gateway: Gateway) -> Iterator[Conn]:
    with psycopg.connect(gateway.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def client(gateway: Gateway, *scopes: str, tenant: str | None, sub: str = "editor") -> httpx.Client:
    token = gateway.signer.token(*scopes, tenant=tenant, sub=sub)
    return gateway.client(headers=bearer(token))


def transcript_of(http: httpx.Client, audio_id: uuid.UUID, **params: Any) -> httpx.Response:
    return http.get(f"/v1/audio/{audio_id}/transcript", params=params)


def put(http: httpx.Client, audio_id: uuid.UUID, **kwargs: Any) -> httpx.Response:
    return http.put(f"/v1/audio/{audio_id}/transcript", **kwargs)


def revision_rows(db: Conn, audio_id: uuid.UUID) -> list[int]:
    rows = db.execute(
        "SELECT revision FROM transcript_revisions WHERE audio_id = %s ORDER BY revision",
        (audio_id,),
    ).fetchall()
    return [r["revision"] for r in rows]


def assert_untouched(db: Conn, audio_id: uuid.UUID) -> None:
    row = db.execute(
        "SELECT revision, verified, text FROM transcripts WHERE audio_id = %s", (audio_id,)
    ).fetchone()
    assert row == {"revision": 1, "verified": False, "text": " ".join(s[2] for s in HEARD)}
    assert revision_rows(db, audio_id) == []


# -- the API ------------------------------------------------------------------------------


def test_a_correction_is_a_new_verified_revision_and_the_model_s_is_kept(
    gateway: Gateway, db: Conn
) -> None:
    name = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=name)
    hook = db.execute(
        "INSERT INTO webhooks (tenant, url, secret, event_types, origin) VALUES"
        " (%s, 'https://hooks.example.com/x', 'sixteen-chars-secret', %s, 'api') RETURNING id",
        (name, ["transcript.corrected"]),
    ).fetchone()
    assert hook is not None
    with client(gateway, *EDIT, tenant=name, sub="alice@example.com") as http:
        read = transcript_of(http, audio_id)
        assert read.status_code == 200 and read.headers["etag"] == '"1"'
        document = read.json()
        assert (document["revision"], document["verified"], document["verified_by"]) == (
            1,
            False,
            None,
        )
        # Sent back as read, with one text edited.
        document["segments"][0]["text"] = "Hello world, this is a test."
        written = put(http, audio_id, json=document)
        assert written.status_code == 200, written.text
        assert written.headers["etag"] == '"2"'
        new = written.json()
        assert new["revision"] == 2 and new["verified"] is True
        assert new["verified_by"] == "alice@example.com" and new["verified_at"].endswith("Z")
        assert new["text"] == "Hello world, this is a test. Good bye for now."
        assert new["verdict"] == "ok" and new["review_reasons"] == []
        # The edited segment lost the model's scores, the other kept them.
        assert new["segments"][0]["avg_logprob"] is None
        assert new["segments"][1]["avg_logprob"] == pytest.approx(-0.3)
        assert transcript_of(http, audio_id).json() == new

        earlier = transcript_of(http, audio_id, revision=1)
        assert earlier.status_code == 200 and earlier.headers["etag"] == '"1"'
        assert earlier.json()["verified"] is False
        assert [s["text"] for s in earlier.json()["segments"]] == [s[2] for s in HEARD]
        missing = transcript_of(http, audio_id, revision=7)
        assert missing.status_code == 404 and "no revision 7" in missing.json()["detail"]

        listed = http.get(f"/v1/audio/{audio_id}/transcript/revisions").json()["items"]
        assert [(r["revision"], r["current"], r["verified"], r["verified_by"]) for r in listed] == [
            (2, True, True, "alice@example.com"),
            (1, False, False, None),
        ]
        assert listed[1]["superseded_at"] is not None and listed[0]["superseded_at"] is None

        # Every export and search read the newest revision.
        for fmt in ("txt", "srt", "vtt"):
            body = transcript_of(http, audio_id, format=fmt).text
            assert "Hello world" in body and "wrld" not in body, fmt
        found = http.get("/v1/search", params={"q": "world"}).json()["items"]
        assert [r["audio_id"] for r in found] == [str(audio_id)]
        assert http.get("/v1/search", params={"q": "wrld"}).json()["items"] == []

    # The audio's event, for webhooks that asked for it and the transcript files.
    events = db.execute(
        "SELECT e.state, array_agg(d.target ORDER BY d.target) AS targets FROM events e"
        " JOIN deliveries d ON d.event_id = e.id"
        " WHERE e.audio_id = %s AND e.type = 'transcript.corrected' GROUP BY e.id, e.state",
        (audio_id,),
    ).fetchall()
    assert events == [{"state": "transcribed", "targets": ["outbox", f"webhook:{hook['id']}"]}]


def test_two_editors_of_one_revision_do_not_overwrite_each_other(
    gateway: Gateway, db: Conn
) -> None:
    name = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=name)
    first = client(gateway, *EDIT, tenant=name, sub="first")
    second = client(gateway, *EDIT, tenant=name, sub="second")
    with first, second:
        body = {"segments": [{"idx": 0, "text": "first's text"}, {"idx": 1, "text": "bye"}]}
        assert put(first, audio_id, json=body, headers={"If-Match": '"1"'}).status_code == 200
        late = put(second, audio_id, json=body | {"base_revision": 1})
        assert late.status_code == 409 and late.headers["content-type"] == PROBLEM
        problem = late.json()
        assert problem["type"].endswith("revision-conflict")
        assert "revision 2 (corrected by first" in problem["detail"]
        assert late.headers["etag"] == '"2"'
        also_late = put(second, audio_id, json=body, headers={"If-Match": 'W/"1"'})
        assert also_late.status_code == 409
        # Edited on the newest revision, it goes through.
        again = put(second, audio_id, json=body, headers={"If-Match": '"2"'})
        assert again.status_code == 200 and again.json()["verified_by"] == "second"
        bad = put(second, audio_id, json=body, headers={"If-Match": "yesterday"})
        assert bad.status_code == 422 and "If-Match" in bad.json()["detail"]
    assert revision_rows(db, audio_id) == [1, 2]


def test_another_tenant_gets_404_and_writes_nothing(gateway: Gateway, db: Conn) -> None:
    owner = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=owner)
    body = {"segments": [{"idx": 0, "text": "taken over"}]}
    with client(gateway, *EDIT, tenant=tenant()) as stranger:
        refused = put(stranger, audio_id, json=body)
        assert refused.status_code == 404 and refused.json()["detail"] == "no such audio"
        assert stranger.get(f"/v1/audio/{audio_id}/transcript/revisions").status_code == 404
        assert transcript_of(stranger, audio_id, revision=1).status_code == 404
    with client(gateway, *READ, tenant=owner) as reader:
        forbidden = put(reader, audio_id, json=body)
        assert forbidden.status_code == 403
        assert "transcripts:write" in forbidden.json()["detail"]
    assert_untouched(db, audio_id)
    with client(gateway, "admin", tenant=None, sub="ops") as admin:
        done = put(admin, audio_id, json=body)
        assert done.status_code == 200 and done.json()["verified_by"] == "ops"


@pytest.mark.parametrize(
    ("content", "media_type", "status", "says"),
    [
        (b'{"segments": []}', "application/json", 422, "holds no segments"),
        (
            b'{"segments": [{"start": 1, "end": 60, "text": "too long"}]}',
            "application/json",
            422,
            "after the audio ends (8.000 s)",
        ),
        (
            b'{"segments": [{"start": 5, "end": 6, "text": "b"}, {"start": 1, "end": 2,'
            b' "text": "a"}]}',
            "application/json",
            422,
            "segments go in time order",
        ),
        (b'{"segments": [{"idx": 0, "text": ""}]}', "application/json", 422, "has no text"),
        (b"{oops", "application/json", 422, "not valid JSON"),
        (b"only one line\n", "text/plain", 422, "1 lines but the transcript has 2"),
        (b"\x89PNG", "image/png", 415, "unsupported Content-Type"),
        (b"x" * (BODY_LIMIT + 1), "text/plain", 413, f"at most {BODY_LIMIT} bytes"),
    ],
)
def test_bad_corrections_are_refused_with_a_reason_and_change_nothing(
    gateway: Gateway, db: Conn, content: bytes, media_type: str, status: int, says: str
) -> None:
    name = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=name)
    with client(gateway, *EDIT, tenant=name) as http:
        answer = put(http, audio_id, content=content, headers={"Content-Type": media_type})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert says in answer.json()["detail"]
    assert_untouched(db, audio_id)


def test_audio_without_a_transcript_cannot_be_corrected(gateway: Gateway, db: Conn) -> None:
    name = tenant()
    audio = db.execute(
        "INSERT INTO audio (tenant, source, original_name, source_uri, storage_key, state)"
        " VALUES (%s, 'upload', 'waiting.wav', 'upload://x', 'audio/x', 'queued') RETURNING id",
        (name,),
    ).fetchone()
    assert audio is not None
    with client(gateway, *EDIT, tenant=name) as http:
        answer = put(http, audio["id"], json={"segments": [{"start": 0, "end": 1, "text": "x"}]})
    assert answer.status_code == 409 and "the audio is queued" in answer.json()["detail"]


def test_plain_text_srt_and_webvtt_bodies(gateway: Gateway, db: Conn) -> None:
    name = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=name)
    with client(gateway, *EDIT, tenant=name) as http:
        text = put(
            http,
            audio_id,
            content="Hello world, this is a test.\nGood bye for now.\n",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert text.status_code == 200 and text.json()["revision"] == 2
        srt = transcript_of(http, audio_id, format="srt").text.replace("Good bye", "Goodbye")
        from_srt = put(
            http, audio_id, content=srt, headers={"Content-Type": "application/x-subrip"}
        )
        assert from_srt.status_code == 200 and "Goodbye for now." in from_srt.json()["text"]
        vtt = transcript_of(http, audio_id, format="vtt").text.replace("test", "trial")
        from_vtt = put(http, audio_id, content=vtt, headers={"Content-Type": "text/vtt"})
        assert from_vtt.status_code == 200
        assert from_vtt.json()["text"] == "Hello world, this is a trial. Goodbye for now."
        assert [(s["start_s"], s["end_s"]) for s in from_vtt.json()["segments"]] == [
            (0.0, 4.0),
            (4.0, 8.0),
        ]
    assert revision_rows(db, audio_id) == [1, 2, 3]


def test_transcribing_again_makes_a_newer_revision_and_keeps_the_correction(
    gateway: Gateway, db: Conn
) -> None:
    name = tenant()
    audio_id = add_transcript(db, HEARD, language="en", tenant=name)
    with client(gateway, *EDIT, tenant=name) as http:
        body = {"segments": [{"idx": 0, "text": "Hello world."}, {"idx": 1, "text": "Bye."}]}
        assert put(http, audio_id, json=body).status_code == 200
        # What the worker does when it transcribes an audio again (workers/results.py).
        old = db.execute("SELECT * FROM transcripts WHERE audio_id = %s", (audio_id,)).fetchone()
        assert old is not None
        db.execute("DELETE FROM transcripts WHERE audio_id = %s", (audio_id,))
        db.execute(
            "INSERT INTO transcripts (audio_id, attempt, worker_id, language, text, model,"
            " device, compute_type, audio_duration_s, processing_s, real_time_factor, verdict)"
            " VALUES (%s, 2, 'test:1:0', 'en', 'again', 'base', 'cpu', 'int8', 8, 1, 0.1, 'ok')",
            (audio_id,),
        )
        listed = http.get(f"/v1/audio/{audio_id}/transcript/revisions").json()["items"]
        assert [(r["revision"], r["verified"]) for r in listed] == [
            (3, False),
            (2, True),
            (1, False),
        ]
        kept = transcript_of(http, audio_id, revision=2).json()
        assert kept["text"] == "Hello world. Bye." and kept["verified"] is True


def test_the_openapi_document_describes_the_correction(gateway: Gateway) -> None:
    spec = httpx.get(f"{gateway.url}/openapi.json", timeout=30).json()
    operation = spec["paths"]["/v1/audio/{audio_id}/transcript"]["put"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "text/plain", "application/x-subrip", "text/vtt"}
    segment = content["application/json"]["schema"]["properties"]["segments"]["anyOf"][0]
    assert set(segment["items"]["properties"]) == {
        "idx",
        "start",
        "end",
        "text",
        "channel",
        "language",
    }
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Transcript")
    assert {"404", "409", "413", "415", "422"} <= set(operation["responses"])
    listing = spec["paths"]["/v1/audio/{audio_id}/transcript/revisions"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Revisions"
    )


# -- ai2text correct ----------------------------------------------------------------------


def ai2text(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    env = kept | {
        "AI2TEXT_DATABASE__URL": gateway.database_url,
        "AI2TEXT_DATA_DIR": str(gateway.data_dir),
        "USER": "carol",
        "LOGNAME": "carol",
    }
    return subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        ("txt", "Hello world, this is a test.\nSo long for now.\n"),
        (
            "srt",
            "1\n00:00:00,000 --> 00:00:04,000\nHello world, this is a test.\n\n"
            "2\n00:00:04,000 --> 00:00:08,000\nSo long for now.\n",
        ),
        (
            "vtt",
            "WEBVTT\n\n00:00.000 --> 00:04.000\nHello world, this is a test.\n\n"
            "00:04.000 --> 00:08.000 align:start\nSo long for now.\n",
        ),
        (
            "json",
            '{"segments": [{"idx": 0, "text": "Hello world, this is a test."},'
            ' {"start": 4.0, "end": 8.0, "text": "So long for now."}]}',
        ),
    ],
)
def test_ai2text_correct_reads_each_format(
    gateway: Gateway, db: Conn, tmp_path: Path, suffix: str, content: str
) -> None:
    audio_id = add_transcript(db, HEARD, language="en", tenant=tenant())
    path = tmp_path / f"fixed.{suffix}"
    path.write_text(content)
    done = ai2text(gateway, "correct", str(audio_id)[:13], str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"audio {audio_id}: revision 2 verified by cli:carol (2 segments)\n"
    shown = ai2text(gateway, "show", str(audio_id), "--format", "txt")
    assert shown.stdout == "Hello world, this is a test.\nSo long for now.\n"
    heading = ai2text(gateway, "show", str(audio_id))
    assert "revision 2, corrected by cli:carol" in heading.stdout
    assert revision_rows(db, audio_id) == [1]


def test_ai2text_correct_refuses_a_stale_base_and_a_bad_file(
    gateway: Gateway, db: Conn, tmp_path: Path
) -> None:
    audio_id = add_transcript(db, HEARD, language="en", tenant=tenant())
    path = tmp_path / "fixed.txt"
    path.write_text("Hello world.\nBye.\n")
    first = ai2text(gateway, "correct", str(audio_id), str(path), "--by", "dave", "--json")
    assert first.returncode == 0, first.stderr
    stale = ai2text(gateway, "correct", str(audio_id), str(path), "--base-revision", "1")
    assert stale.returncode == 1
    assert "correction refused: the transcript is at revision 2 (corrected by dave" in stale.stderr
    path.write_text("one line only\n")
    bad = ai2text(gateway, "correct", str(audio_id), str(path))
    assert bad.returncode == 1 and "1 lines but the transcript has 2" in bad.stderr
    assert revision_rows(db, audio_id) == [1]


def test_a_correction_can_fix_the_language_the_model_guessed(
    gateway: Gateway, db: Conn, tmp_path: Path
) -> None:
    """English heard as Thai: corrected with its language, it is English training data."""
    name = tenant()
    heard_as_thai = [(s, e, text, "th") for s, e, text, _ in HEARD]
    audio_id = add_transcript(db, heard_as_thai, language="th", tenant=name)
    with client(gateway, *EDIT, tenant=name) as http:
        contradicting = put(
            http,
            audio_id,
            params={"language": "en"},
            json={"language": "de", "segments": [{"idx": 0, "text": "x"}]},
        )
        assert contradicting.status_code == 422
        assert "the body says language 'de' and the request 'en'" in contradicting.json()["detail"]
        not_a_code = put(
            http,
            audio_id,
            params={"language": "English"},
            content=b"Hello world.\nGood bye.\n",
            headers={"Content-Type": "text/plain"},
        )
        assert not_a_code.status_code == 422
        assert_untouched_language = db.execute(
            "SELECT revision, language FROM transcripts WHERE audio_id = %s", (audio_id,)
        ).fetchone()
        assert assert_untouched_language == {"revision": 1, "language": "th"}

        written = put(
            http,
            audio_id,
            params={"language": "en"},
            content=b"Hello world, this is a test.\nGood bye for now.\n",
            headers={"Content-Type": "text/plain"},
        )
        assert written.status_code == 200, written.text
        new = written.json()
        assert new["language"] == "en" and new["verified"] is True
        # The model's 95 % was its confidence in "th", not in the person's "en".
        assert new["language_probability"] is None
        assert [s["language"] for s in new["segments"]] == ["en", "en"]
        # The model's guess stays readable in the revision it made.
        assert transcript_of(http, audio_id, revision=1).json()["language"] == "th"

    stats = ai2text(gateway, "dataset", "stats")
    assert stats.returncode == 0, stats.stderr
    mine = [line.split() for line in stats.stdout.splitlines() if line.split()[:1] == [name]]
    assert [row[1] for row in mine] == ["en"], stats.stdout

    # The CLI says it the same way.
    path = tmp_path / "fixed.txt"
    path.write_text("Hallo Welt, das ist ein Test.\nBis bald.\n")
    done = ai2text(gateway, "correct", str(audio_id), str(path), "--language", "de")
    assert done.returncode == 0, done.stderr
    row = db.execute(
        "SELECT t.language, array_agg(s.language ORDER BY s.idx) AS segments FROM transcripts t"
        " JOIN segments s ON s.transcript_id = t.id WHERE t.audio_id = %s GROUP BY t.language",
        (audio_id,),
    ).fetchone()
    assert row == {"language": "de", "segments": ["de", "de"]}
