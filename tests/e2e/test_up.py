"""``ai2text up`` on the embedded default, driven like a user would: files in, CLI out."""

from __future__ import annotations

import http.server
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import pytest

from tests.conftest import public_tempdir
from tests.e2e.harness import Service, cli_json, cli_text, normalise, wait_until
from tests.wav import wav_bytes
from workers.sizing import Machine, plan, usable_cores

DATA = Path(__file__).resolve().parents[1] / "data"
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country."
)
QUIET_S = 1.0

pytestmark = pytest.mark.slow


def embedded_env(root: Path) -> dict[str, str]:
    return {
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__QUIET_PERIOD_S": str(QUIET_S),
        # Truncated files wait this long for the rest before they are rejected (default 600).
        "AI2TEXT_WATCH__INCOMPLETE_TIMEOUT_S": "2",
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "1",
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_DATABASE__URL": "",
    }


@pytest.fixture(scope="module")
def up() -> Iterator[tuple[Service, dict[str, str], Path]]:
    """One running ``ai2text up`` shared by the tests of this module."""
    root = public_tempdir("ai2text-up-")
    env = embedded_env(root)
    env.pop("AI2TEXT_DATABASE__URL")
    os.environ.pop("AI2TEXT_DATABASE__URL", None)
    service = Service("up", env, root / "up.log").start()
    service.wait_for_event("worker ready", timeout=120)
    service.wait_for_event("watching", timeout=120)
    yield service, env, root / "inbox"
    assert service.stop() == 0
    shutil.rmtree(root, ignore_errors=True)


def audio_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = cli_json(env, "ls", "-n", "500")
    return rows


def row_named(env: dict[str, str], name: str, states: tuple[str, ...]) -> dict[str, Any] | None:
    return next(
        (r for r in audio_rows(env) if r["original_name"] == name and r["state"] in states), None
    )


def test_dropped_flac_becomes_an_accurate_transcript(up: Any) -> None:
    service, env, inbox = up
    shutil.copy(DATA / "jfk.flac", inbox / "jfk.flac")
    row = wait_until(
        lambda: row_named(env, "jfk.flac", ("transcribed",)),
        timeout=120,
        what="jfk.flac transcribed",
    )
    assert row["language"] == "en"
    assert row["duration_s"] == pytest.approx(11.0, abs=0.1)

    shown = cli_json(env, "show", row["id"])
    transcript = shown["transcript"]
    error_rate = jiwer.wer(normalise(JFK_REFERENCE), normalise(transcript["text"]))
    assert error_rate <= 0.15, transcript["text"]
    segments = transcript["segments"]
    assert segments and segments[0]["start_s"] >= 0
    assert all(s["end_s"] >= s["start_s"] for s in segments)
    assert segments[-1]["end_s"] <= 11.5

    srt = cli_text(env, "show", row["id"][:8], "--format", "srt")
    assert srt.startswith("1\n00:00:0")
    assert " --> " in srt
    timestamps = cli_text(env, "show", row["id"][:8])
    assert "country" in timestamps.lower() and "[00:00:00" in timestamps
    # The source left the inbox only after it was stored.
    assert not (inbox / "jfk.flac").exists()
    assert (inbox / "processed" / "jfk.flac").exists()

    status = cli_json(env, "status")
    assert status["transcripts"] >= 1
    assert status["hours_transcribed"] > 0
    # Defaults size the workers for this machine: the choice is logged once at start,
    # and status lists that many workers of this process, the job counted on one of them.
    sizing = service.wait_for_event("asr sizing")
    assert sizing["requested"] == "concurrency=auto cpu_threads=auto"
    machine = Machine(usable_cores(), sizing["memory_available_mib"], "cpu", sizing["model"])
    assert sizing["cores"] == machine.cores
    chosen = plan(machine)
    assert (sizing["concurrency"], sizing["cpu_threads"]) == (
        chosen.concurrency,
        chosen.cpu_threads,
    )

    def alive_workers() -> list[dict[str, Any]] | None:
        alive = [w for w in cli_json(env, "status")["workers"] if w["alive"]]
        return alive if len(alive) == chosen.concurrency else None

    workers = wait_until(alive_workers, timeout=30, what="every sized worker listed")
    assert {w["pid"] for w in workers} == {service.pid}
    assert all(w["device"] == "cpu" for w in workers)
    assert sum(w["jobs_done"] for w in workers) >= 1
    status_text = cli_text(env, "status")
    assert f"pid {service.pid}: {chosen.concurrency} jobs at once, model base on cpu" in status_text


def test_same_audio_under_two_names_gives_one_transcript(up: Any) -> None:
    service, env, inbox = up
    shutil.copy(DATA / "hotwords.mp3", inbox / "first.mp3")
    shutil.copy(DATA / "hotwords.mp3", inbox / "second name.mp3")
    first = wait_until(
        lambda: row_named(env, "first.mp3", ("transcribed", "duplicate")),
        timeout=120,
        what="first.mp3 done",
    )
    second = wait_until(
        lambda: row_named(env, "second name.mp3", ("transcribed", "duplicate")),
        timeout=120,
        what="second name.mp3 done",
    )
    states = sorted([first["state"], second["state"]])
    assert states == ["duplicate", "transcribed"]
    original, duplicate = (first, second) if first["state"] == "transcribed" else (second, first)
    assert duplicate["duplicate_of"] == original["id"]
    # The duplicate shows the original's transcript; only one was ever made.
    shown = cli_json(env, "show", duplicate["id"])
    assert shown["transcript"]["audio_id"] == original["id"]
    assert service.count("transcribed", lambda e: e.get("audio_id") == duplicate["id"]) == 0


def _forged_wav(path: Path) -> None:
    data = bytearray(wav_bytes(b"\x00\x01" * 16000))
    data[40:44] = struct.pack("<I", 0x7FFFFFFF)  # the data chunk claims ~2 GB
    path.write_bytes(data)


def test_bad_inputs_are_rejected_with_reasons_and_the_service_keeps_running(
    up: Any, tmp_path: Path
) -> None:
    service, env, inbox = up
    outside = tmp_path / "secret.wav"
    shutil.copy(DATA / "stereo_diarization.wav", outside)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "empty.wav").write_bytes(b"")
    (staging / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    jfk = (DATA / "jfk.flac").read_bytes()
    (staging / "truncated.flac").write_bytes(jfk[: len(jfk) // 2])
    _forged_wav(staging / "huge-header.wav")
    for f in staging.iterdir():
        shutil.copy(f, inbox / f.name)
    (inbox / "link.wav").symlink_to(outside)

    expected = {
        "empty.wav": "empty",
        "notes.wav": "not a readable audio file",
        "truncated.flac": "truncated",
        "huge-header.wav": "header",
        "link.wav": "symbolic link",
    }
    for name, words in expected.items():
        row = wait_until(
            lambda n=name: row_named(env, n, ("rejected",)), timeout=60, what=f"{name} rejected"
        )
        assert words in row["error"].lower(), row["error"]
        moved = inbox / "rejected" / name
        assert moved.exists() or moved.is_symlink(), f"{name} not moved to rejected/"
        note = inbox / "rejected" / f"{name}.error.txt"
        assert words in note.read_text().lower()
    # The link was moved, never followed: its target is untouched.
    assert outside.exists()
    assert (inbox / "rejected" / "link.wav").is_symlink()

    # Still alive and still working.
    shutil.copy(DATA / "stereo_diarization.wav", inbox / "after-bad.wav")
    wait_until(
        lambda: row_named(env, "after-bad.wav", ("transcribed",)),
        timeout=120,
        what="a good file after the bad ones",
    )
    service.check_alive()


def test_slowly_written_file_is_taken_only_after_its_last_byte(up: Any) -> None:
    service, env, inbox = up
    data = (DATA / "jfk.flac").read_bytes()
    target = inbox / "slow.flac"
    chunks = 6
    step = len(data) // chunks + 1
    with open(target, "wb") as out:
        for i in range(chunks):
            out.write(data[i * step : (i + 1) * step])
            out.flush()
            # The writer pauses for less than the quiet period between chunks.
            time.sleep(QUIET_S * 0.6)
    finished_writing = time.time()
    row = wait_until(
        lambda: row_named(env, "slow.flac", ("transcribed", "duplicate", "rejected")),
        timeout=120,
        what="slow.flac ingested",
    )
    assert row["state"] != "rejected", row["error"]
    assert row["size_bytes"] == len(data)
    rows = [r for r in audio_rows(env) if r["original_name"] == "slow.flac"]
    assert len(rows) == 1
    ingested = service.wait_for_event(
        "duplicate" if row["state"] == "duplicate" else "ingested",
        where=lambda e: e.get("file") == "slow.flac",
    )
    assert _epoch(ingested["timestamp"]) >= finished_writing
    assert service.count("rejected", lambda e: e.get("file") == "slow.flac") == 0


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


def test_playlists_disguised_as_wav_are_rejected_without_fetching_anything(up: Any) -> None:
    service, env, inbox = up
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/leak.wav"
        local = DATA / "multilingual.mp3"
        (inbox / "playlist.wav").write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:60\n"
            f"#EXTINF:60,\n{local}\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n"
        )
        (inbox / "concat.wav").write_text(f"ffconcat version 1.0\nfile '{local}'\nfile '{url}'\n")
        for name in ("playlist.wav", "concat.wav"):
            row = wait_until(
                lambda n=name: row_named(env, n, ("rejected",)), timeout=60, what=f"{name} rejected"
            )
            assert row["error"]
        assert _Recorder.hits == []
    finally:
        server.shutdown()
        server.server_close()
    # Nothing from the referenced local file became a transcript.
    for r in audio_rows(env):
        if r["original_name"] in ("playlist.wav", "concat.wav"):
            assert r["state"] == "rejected"
