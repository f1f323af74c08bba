"""``GET /v1/events`` and ``ai2text show --follow`` on a real ``ai2text up``.

One service (tiny.en: the model is not what is checked) transcribes real speech
uploaded over HTTP by one tenant while Server-Sent Event clients of that tenant and
of another listen; a client that reconnects with ``Last-Event-ID`` gets what it
missed; ``show --follow`` prints progress and the transcript and exits 0; and the
service stops cleanly with a stream still open.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.gateway_harness import (
    DATA,
    READ,
    WRITE,
    Gateway,
    bearer,
    start_keyed_gateway,
)
from tests.e2e.harness import FAST_MODEL, REPO, Service
from tests.wav import speech_pcm, trailing_silence, wav_bytes

pytestmark = pytest.mark.slow

TRANSCRIBE_TIMEOUT_S = 300
_pad = iter(range(1, 10_000))


@dataclass
class Sse:
    """One event (or, with ``event`` None, a comment) as a client reads it."""

    event: str | None
    data: str = ""
    id: str | None = None

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


@dataclass
class Listener:
    """A Server-Sent Events client reading ``/v1/events`` on a thread of its own."""

    url: str
    token: str
    params: dict[str, str] = field(default_factory=dict)
    last_event_id: str | None = None
    received: queue.Queue[Sse | BaseException | None] = field(default_factory=queue.Queue)
    connected: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Listener:
        threading.Thread(target=self._read, daemon=True).start()
        assert self.connected.wait(30), "the event stream did not start"
        assert self.status == 200, self.status
        return self

    def _read(self) -> None:
        headers = bearer(self.token)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            timeout = httpx.Timeout(30, read=30)
            with (
                httpx.Client(base_url=self.url, timeout=timeout) as client,
                client.stream("GET", "/v1/events", params=self.params, headers=headers) as r,
            ):
                self.status = r.status_code
                if r.status_code != 200:
                    self.connected.set()
                    return
                lines: list[str] = []
                for line in r.iter_lines():
                    if self.stopping.is_set():
                        return
                    if line:
                        lines.append(line)
                        continue
                    for sse in parse(lines):
                        if sse.event is None and sse.data == "connected":
                            self.connected.set()
                        self.received.put(sse)
                    lines = []
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.received.put(exc)
        finally:
            self.received.put(None)
            self.ended.set()
            self.connected.set()

    def until(self, done: Callable[[Sse], bool], *, timeout: float, what: str) -> list[Sse]:
        """Events (comments left out) up to and including the first that is ``done``."""
        seen: list[Sse] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; saw {seen}") from None
            if item is None or isinstance(item, BaseException):
                raise AssertionError(f"the stream ended waiting for {what}: {item!r}; saw {seen}")
            if item.event is None:
                continue
            seen.append(item)
            if done(item):
                return seen

    def stop(self) -> None:
        self.stopping.set()


def parse(lines: list[str]) -> Iterator[Sse]:
    """The event of one block of lines, and any comments in it."""
    sse = Sse(event="message")
    data: list[str] = []
    has_field = False
    for line in lines:
        if line.startswith(":"):
            yield Sse(event=None, data=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            sse.event, has_field = value, True
        elif name == "data":
            data.append(value)
            has_field = True
        elif name == "id":
            sse.id, has_field = value, True
    if has_field and data:
        sse.data = "\n".join(data)
        yield sse


def speech(repeat: int) -> bytes:
    """jfk.flac ``repeat`` times, with bytes no other call returns (no dedupe)."""
    return wav_bytes(trailing_silence(speech_pcm(DATA / "jfk.flac", repeat=repeat), next(_pad)))


def upload(gw: Gateway, token: str, name: str, data: bytes) -> str:
    with gw.client() as http:
        r = http.post("/v1/audio", headers=bearer(token), files={"file": (name, data)})
    assert r.status_code == 201, r.text
    audio_id: str = r.json()["id"]
    return audio_id


def of(audio_id: str) -> Callable[[Sse], bool]:
    return lambda sse: sse.json().get("audio_id") == audio_id


def is_final(audio_id: str) -> Callable[[Sse], bool]:
    return lambda sse: of(audio_id)(sse) and sse.event in ("audio.transcribed", "audio.failed")


@pytest.fixture(scope="module")
def gw(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("events")
    gateway = start_keyed_gateway(
        "up",
        root,
        module_database_url,
        {**FAST_MODEL, "AI2TEXT_GATEWAY__SSE_KEEPALIVE_S": "1"},
        ready_event="worker ready",
    )
    yield gateway
    gateway.service.stop()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_a_tenant_streams_its_audio_from_queued_through_progress_to_transcribed(
    gw: Gateway,
) -> None:
    acme, globex = tenant(), tenant()
    acme_token = gw.signer.token(*WRITE, tenant=acme)
    globex_token = gw.signer.token(*WRITE, tenant=globex)
    mine = Listener(gw.url, acme_token).start()
    theirs = Listener(gw.url, globex_token).start()
    admin = Listener(gw.url, gw.signer.token("admin")).start()
    try:
        audio_id = upload(gw, acme_token, "speech.wav", speech(repeat=6))  # 66 s

        seen = mine.until(is_final(audio_id), timeout=TRANSCRIBE_TIMEOUT_S, what="transcribed")
        ours = [sse for sse in seen if of(audio_id)(sse)]
        live = ("audio.progress", "segment")
        states = [sse.event for sse in ours if sse.event not in live]
        assert states == ["audio.queued", "audio.processing", "audio.transcribed"], states
        ids = [int(sse.id) for sse in ours if sse.id is not None]
        assert len(ids) == 3 and ids == sorted(ids)
        for sse in ours:
            if sse.event in live:
                assert sse.id is None  # previews are not kept: nothing to resume from
                continue
            data = sse.json()
            assert data["state"] == str(sse.event).removeprefix("audio.")
            assert data["name"] == "speech.wav"
            uuid.UUID(data["id"])
            assert data["time"].endswith("Z")
        # Progress comes between processing and transcribed, and only goes up.
        kinds = [sse.event for sse in ours]
        first, last = kinds.index("audio.processing"), kinds.index("audio.transcribed")
        progress = [sse.json() for sse in ours if sse.event == "audio.progress"]
        assert progress, kinds
        assert all(first < i < last for i, k in enumerate(kinds) if k == "audio.progress")
        fractions = [p["progress"] for p in progress]
        assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1, fractions
        assert progress[0]["duration_s"] == pytest.approx(66, abs=1)
        assert set(progress[0]) == {"audio_id", "progress", "progress_s", "duration_s", "eta_s"}
        # The text comes as it is made, before the job ends: segments between processing
        # and transcribed, in order, each once, saying what was said.
        segments = [sse.json() for sse in ours if sse.event == "segment"]
        assert segments and all(first < i < last for i, k in enumerate(kinds) if k == "segment"), (
            kinds
        )
        assert [s["index"] for s in segments] == sorted({s["index"] for s in segments})
        assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
        assert "country" in " ".join(s["text"] for s in segments).lower()

        # The operator sees it too.
        admin.until(is_final(audio_id), timeout=30, what="the admin's stream to see it")

        # The other tenant's stream saw none of it: the first audio it hears of is its own.
        own = upload(gw, globex_token, "own.wav", speech(repeat=1))
        before = theirs.until(of(own), timeout=60, what="the other tenant's own upload")
        assert [sse.json()["audio_id"] for sse in before] == [own]
        assert before[0].event == "audio.queued"
    finally:
        for listener in (mine, theirs, admin):
            listener.stop()

    # A client that reconnects with the id of the last event it read gets the rest.
    queued = next(sse for sse in ours if sse.event == "audio.queued")
    resumed = Listener(
        gw.url, acme_token, params={"audio_id": audio_id}, last_event_id=queued.id
    ).start()
    try:
        replay = resumed.until(is_final(audio_id), timeout=30, what="the replay")
    finally:
        resumed.stop()
    assert [(sse.event, sse.id) for sse in replay] == [
        (sse.event, sse.id) for sse in ours if sse.id is not None and sse.id != queued.id
    ]


def test_a_token_without_audio_read_cannot_stream_and_bad_ids_are_refused(gw: Gateway) -> None:
    with gw.client() as http:
        assert http.get("/v1/events").status_code == 401
        no_read = gw.signer.token("transcripts:read", tenant=tenant())
        assert http.get("/v1/events", headers=bearer(no_read)).status_code == 403
        reader = bearer(gw.signer.token(*READ, tenant=tenant()))
        bad_id = http.get("/v1/events", params={"audio_id": "nope"}, headers=reader)
        assert bad_id.status_code == 400
        bad_resume = http.get("/v1/events", headers=reader | {"Last-Event-ID": "x1"})
        assert bad_resume.status_code == 400


def test_show_follow_prints_progress_then_the_transcript_and_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    """The gateway alone takes the upload; a worker starts only once ``--follow`` is
    listening, so it sees the whole transcription however fast the machine is."""
    edge = start_keyed_gateway("gateway", tmp_path, database_url, dict(FAST_MODEL))
    worker: Service | None = None
    try:
        token = edge.signer.token(*WRITE, tenant=tenant())
        audio_id = upload(edge, token, "follow.wav", speech(repeat=8))  # 88 s
        follow = subprocess.Popen(
            [sys.executable, "-m", "ai2text", "show", audio_id[:12], "--follow"],
            env={**edge.service.env, "AI2TEXT_LOG_FORMAT": "console"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        assert follow.stdout is not None
        first = follow.stdout.readline().decode()  # printed once it listens
        assert first == f"follow.wav  ({audio_id})  queued\n", first
        worker = Service("worker", edge.env, tmp_path / "worker.log").start()
        rest, err = follow.communicate(timeout=TRANSCRIBE_TIMEOUT_S)
    finally:
        if worker is not None:
            worker.stop()
        edge.service.stop()
    out = first + rest.decode()
    assert follow.returncode == 0, (out, err.decode()[-3000:])
    lines = out.splitlines()
    assert f"follow.wav  ({audio_id})  processing" in lines, out
    percents = [int(line.split()[1].rstrip("%")) for line in lines if line.startswith("progress ")]
    assert percents and percents == sorted(percents), out
    transcribed = lines.index(f"follow.wav  ({audio_id})  transcribed")
    processing = lines.index(f"follow.wav  ({audio_id})  processing")
    assert processing < transcribed
    # Segments are printed as they are made, before the job ends.
    live = [line for line in lines[processing:transcribed] if line.startswith("[")]
    assert live and all(re.match(r"^\[\d\d:\d\d\.\d → \d\d:\d\d\.\d\] \S", x) for x in live), out
    assert "country" in " ".join(live).lower(), out
    assert all(not line.startswith("progress ") for line in lines[transcribed:]), out
    assert "ask not what your country can do for you" in out.lower(), out


def test_stopping_the_service_ends_open_streams(gw: Gateway) -> None:
    """Last in the module: it stops the service."""
    listener = Listener(gw.url, gw.signer.token(*READ, tenant=tenant())).start()
    assert gw.service.stop(timeout=60) == 0
    assert listener.ended.wait(30), "the stream outlived the server"
    # The stream ended by itself: uvicorn did not have to cancel it after its grace time.
    log = gw.service.log_path.read_text(errors="replace")
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
