"""The hot folder against real writer processes: recorders that pause, files that cannot be read.

``ai2text watch`` runs as its own process against the test PostgreSQL, with a
quiet period of 1 s. Each writer is another process that writes half a recording,
really pauses for 4 s (four quiet periods), then writes the rest. The watcher must
take the whole recording once, never the first half, and never reject it.

What the issue saw before: a streaming WAV (no sizes in its header) and an OGG
file were transcribed from their first half; a WAV with its final sizes was
moved to ``rejected/`` while its writer was still writing.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from pipeline.media import decode_mono_16k
from tests.conftest import fresh_database, public_tempdir
from tests.e2e.harness import REPO, Service, cli_text, wait_until

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
QUIET_S = 1.0
PAUSE_S = 4.0
SPEECH_S = 11.0  # jfk.flac

# Writes argv[3] to argv[1], pauses argv[2] seconds, then writes argv[4]. "hold" keeps
# the file open through the pause (a recorder); "reopen" closes it and appends later.
WRITER = """
import sys, time
path, mode, pause, first, rest = sys.argv[1:]
with open(first, "rb") as f:
    head = f.read()
with open(rest, "rb") as f:
    tail = f.read()
out = open(path, "wb")
out.write(head)
out.flush()
if mode == "reopen":
    out.close()
time.sleep(float(pause))
if mode == "reopen":
    out = open(path, "ab")
out.write(tail)
out.close()
print(time.time(), flush=True)
"""


# -- recordings ---------------------------------------------------------------------


def speech_pcm() -> np.ndarray[Any, np.dtype[np.int16]]:
    with open(DATA / "jfk.flac", "rb") as f:
        audio = decode_mono_16k(f)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def wav(pcm: np.ndarray[Any, np.dtype[np.int16]], *, data_size: int | None = None) -> bytes:
    """16 kHz mono WAV; ``data_size`` replaces the final sizes (0 or 0xFFFFFFFF: streaming)."""
    body = pcm.tobytes()
    size = len(body) if data_size is None else data_size
    riff = 36 + len(body) if data_size is None else data_size
    header = (
        b"RIFF"
        + riff.to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + (16000).to_bytes(4, "little")
        + (32000).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + size.to_bytes(4, "little")
    )
    return header + body


def ogg_opus(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for chunk in resampler.resample(frame):
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@dataclass(frozen=True)
class Recording:
    name: str
    data: bytes
    mode: str  # "hold" or "reopen"
    waits_because: str  # the watcher's log line that says why it did not take the first half


def recordings() -> list[Recording]:
    speech = speech_pcm()

    def pcm(variant: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        stamped = speech.copy()
        stamped[0] = variant  # inaudible; distinct bytes, so no recording dedupes another
        return stamped

    open_writer = "waiting: file still open for writing"
    more_promised = "waiting for the rest of the file"
    return [
        Recording("stream-ff.wav", wav(pcm(1), data_size=0xFFFFFFFF), "hold", open_writer),
        Recording("stream-zero.wav", wav(pcm(2), data_size=0), "hold", open_writer),
        Recording("recording.ogg", ogg_opus(pcm(3)), "hold", open_writer),
        Recording("sized-held.wav", wav(pcm(4)), "hold", open_writer),
        Recording("sized-reopened.wav", wav(pcm(5)), "reopen", more_promised),
    ]


# -- the watcher ----------------------------------------------------------------------


@dataclass
class Watcher:
    service: Service
    env: dict[str, str]
    inbox: Path
    database_url: str

    def rows(self, name: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT * FROM audio WHERE original_name = %s ORDER BY created_at", (name,)
            ).fetchall()


def watch_env(root: Path, database_url: str) -> dict[str, str]:
    return {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__QUIET_PERIOD_S": str(QUIET_S),
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "1",
    }


@pytest.fixture(scope="module")
def watcher(pg_server: Any) -> Iterator[Watcher]:
    root = public_tempdir("ai2text-slow-writers-")
    databases = fresh_database(pg_server)
    url = next(databases)
    env = watch_env(root, url)
    service = Service("watch", env, root / "watch.log").start()
    try:
        service.wait_for_event("watching", timeout=120)
        yield Watcher(service, env, root / "inbox", url)
        assert service.stop() == 0
    finally:
        service.kill()
        with suppress(StopIteration):
            next(databases)
        shutil.rmtree(root, ignore_errors=True)


def write_slowly(recording: Recording, inbox: Path, staging: Path) -> float:
    """Run the writer process to the end; return when (wall clock) it wrote the last byte."""
    half = len(recording.data) // 2
    first, rest = staging / f"{recording.name}.1", staging / f"{recording.name}.2"
    first.write_bytes(recording.data[:half])
    rest.write_bytes(recording.data[half:])
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(inbox / recording.name), recording.mode]
        + [str(PAUSE_S), str(first), str(rest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout.strip())


@pytest.mark.parametrize("recording", recordings(), ids=lambda r: r.name)
def test_a_recording_written_with_a_long_pause_is_taken_whole_once(
    watcher: Watcher, recording: Recording, tmp_path: Path
) -> None:
    finished = write_slowly(recording, watcher.inbox, tmp_path)

    def taken() -> list[dict[str, Any]] | None:
        watcher.service.check_alive()
        rows = watcher.rows(recording.name)
        moved = (watcher.inbox / "processed" / recording.name).exists()
        return rows if rows and moved else None

    (row,) = wait_until(taken, timeout=60, what=f"{recording.name} to be taken")
    assert row["state"] == "queued", row["error"]
    assert row["sha256"] == hashlib.sha256(recording.data).hexdigest()
    assert row["duration_s"] == pytest.approx(SPEECH_S, abs=0.1)  # not the first half
    assert row["created_at"].timestamp() >= finished, "taken before the writer finished"
    assert (watcher.inbox / "processed" / recording.name).read_bytes() == recording.data
    assert not (watcher.inbox / "rejected" / recording.name).exists()
    waits = watcher.service.count(
        recording.waits_because, where=lambda e: str(e.get("file", "")).endswith(recording.name)
    )
    assert waits == 1, f"expected the watcher to log {recording.waits_because!r} once"


# -- a file the watcher may not read ---------------------------------------------------


class SocketRelay:
    """Forwards a Unix socket to another, so a process without DAC override can reach it.

    The test PostgreSQL keeps its socket in a data directory only its own system
    user may enter; the watcher below runs as root without the capability that
    lets root ignore such permissions.
    """

    def __init__(self, listen: Path, upstream: str) -> None:
        self.listen = listen
        self.upstream = upstream
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._open: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> SocketRelay:
        self._server.bind(str(self.listen))
        self._server.listen(16)
        self._server.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
        for sock in self._open:
            with suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def relayed(database_url: str, socket_dir: Path) -> tuple[str, str]:
    """The URL to give the watcher, and PostgreSQL's real socket path."""
    info = conninfo_to_dict(database_url)
    port = info.get("port") or "5432"
    upstream = f"{info['host']}/.s.PGSQL.{port}"
    return make_conninfo(database_url, host=str(socket_dir)), upstream


class RestrictedService(Service):
    """A role that file permissions apply to, even when the tests run as root."""

    def start(self) -> RestrictedService:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Root keeps its uid (the interpreter lives under /root) but loses the
        # capabilities that bypass file permission checks.
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        prefix = drop if os.geteuid() == 0 else []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "ai2text", self.role, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self


def test_an_unreadable_file_is_recorded_once_then_taken_when_it_becomes_readable(
    pg_server: Any,
) -> None:
    root = public_tempdir("ai2text-unreadable-")
    databases = fresh_database(pg_server)
    url = next(databases)
    relay_dir = root / "pg"
    relay_dir.mkdir()
    watcher_url, upstream = relayed(url, relay_dir)
    env = {**watch_env(root, watcher_url), "AI2TEXT_LOG_LEVEL": "debug"}
    inbox = root / "inbox"
    data = wav(speech_pcm()[:16000])
    service = RestrictedService("watch", env, root / "watch.log")
    try:
        with SocketRelay(relay_dir / Path(upstream).name, upstream):
            service.start()
            service.wait_for_event("watching", timeout=120)
            locked = inbox / "locked.wav"
            locked.write_bytes(data)
            locked.chmod(0)

            def rows() -> list[dict[str, Any]]:
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                    return conn.execute(
                        "SELECT * FROM audio WHERE original_name = 'locked.wav' ORDER BY created_at"
                    ).fetchall()

            (placeholder,) = wait_until(rows, timeout=60, what="the unreadable file's row")
            assert placeholder["state"] == "rejected" and placeholder["supersede_pending"]
            assert "cannot read the file" in placeholder["error"]
            assert "tried again" in placeholder["error"]
            listed = cli_text(service.env, "ls")
            assert "locked.wav" in listed and "cannot read the file" in listed

            # Retried with a growing delay (1 s, 2 s, 4 s...), said only at debug level.
            def retries() -> list[dict[str, Any]] | None:
                found = [e for e in service.events() if e["event"] == "still unreadable"]
                return found if len(found) >= 3 else None

            delays = [e["retry_in_s"] for e in wait_until(retries, timeout=60, what="3 retries")]
            assert delays[:3] == [1.0, 2.0, 4.0]
            assert len(rows()) == 1, "one row, however many retries"
            assert locked.exists(), "an unreadable file stays in the inbox"
            assert not (inbox / "rejected" / "locked.wav").exists()

            locked.chmod(0o644)
            wait_until(
                lambda: (inbox / "processed" / "locked.wav").exists(),
                timeout=60,
                what="locked.wav taken once readable",
            )
            old, new = rows()
            assert service.stop() == 0
            events = service.events()
    finally:
        service.kill()
        with suppress(StopIteration):
            next(databases)
        shutil.rmtree(root, ignore_errors=True)

    assert old["id"] == placeholder["id"] and old["superseded_by"] == new["id"]
    assert not old["supersede_pending"]
    assert new["state"] == "queued" and new["sha256"] == hashlib.sha256(data).hexdigest()
    said = [e for e in events if str(e.get("file", "")).endswith("locked.wav")]
    assert [e["event"] for e in said].count("rejected") == 1, said
    assert not [e for e in said if e["event"] in ("will retry file", "failed to take file")]
