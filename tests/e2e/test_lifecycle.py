"""Stopping, crashing and pausing processes: nothing is lost, nothing is done twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.ingest.core import Arrival
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of
from tests.e2e.harness import FAST_MODEL, Service, cli_json, wait_until
from tests.e2e.test_up import embedded_env, row_named

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI2TEXT_DATABASE__URL", raising=False)


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = embedded_env(root) | FAST_MODEL
    env.pop("AI2TEXT_DATABASE__URL")
    env.update(extra)
    return env


def test_file_dropped_while_stopped_is_transcribed_after_start(embedded_root: Path) -> None:
    tmp_path = embedded_root
    env = _env(tmp_path)
    first = Service("up", env, tmp_path / "first.log").start()
    first.wait_for_event("watching", timeout=120)
    assert first.stop() == 0

    shutil.copy(DATA / "jfk.flac", tmp_path / "inbox" / "while-down.flac")
    second = Service("up", env, tmp_path / "second.log").start()
    try:
        row = wait_until(
            lambda: row_named(env, "while-down.flac", ("transcribed",)),
            timeout=120,
            what="file dropped while stopped to be transcribed",
        )
        assert "country" in cli_json(env, "show", row["id"])["transcript"]["text"].lower()
    finally:
        assert second.stop() == 0


def test_sigterm_mid_transcription_exits_in_grace_and_transcribes_once_after_restart(
    embedded_root: Path, long_speech: Path
) -> None:
    tmp_path = embedded_root
    grace_s = 1.0
    env = _env(tmp_path, AI2TEXT_SHUTDOWN_GRACE_S=str(grace_s))
    first = Service("up", env, tmp_path / "first.log").start()
    first.wait_for_event("worker ready", timeout=120)
    shutil.copy(long_speech, tmp_path / "inbox" / "long.wav")
    wait_until(
        lambda: row_named(env, "long.wav", ("processing",)),
        timeout=120,
        what="transcription to start",
    )
    signalled = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.proc is not None
    assert first.proc.wait(timeout=grace_s + 20) == 0
    took = time.monotonic() - signalled
    assert first.count("shutdown grace ran out: job released for another worker") == 1
    assert first.count("transcribed") == 0, f"finished instead of releasing ({took:.1f}s)"

    row = row_named(env, "long.wav", ("queued",))
    assert row is not None, "the released job is queued again"
    assert row["attempts"] == 0, "a released job does not count as a failed attempt"

    second = Service("up", env, tmp_path / "second.log").start()
    try:
        wait_until(
            lambda: row_named(env, "long.wav", ("transcribed",)),
            timeout=240,
            what="the job to be transcribed after restart",
        )
        assert cli_json(env, "status")["transcripts"] == 1
        assert first.count("transcribed") + second.count("transcribed") == 1
    finally:
        assert second.stop() == 0


# -- separate worker processes against one shared PostgreSQL --------------------------


def _shared_env(settings: Settings, database_url: str, lease_s: float) -> dict[str, str]:
    return FAST_MODEL | {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(settings.data_dir),
        "AI2TEXT_QUEUE__LEASE_S": str(lease_s),
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "0.5",
        "AI2TEXT_SHUTDOWN_GRACE_S": "0",
    }


def _ingest(settings: Settings, path: Path) -> str:
    async def go() -> str:
        db = Database(settings.database, embedded=None)
        await db.open()
        try:
            store = FilesystemStore(settings.data_dir / "objects")
            with open(path, "rb") as f:
                result = await ingestor_of(settings, db, store).ingest(
                    Arrival("folder", path.name, path.as_uri(), "v1"), f, path.stat().st_size
                )
            assert result.outcome == "accepted"
            return str(result.audio_id)
        finally:
            await db.close()

    return asyncio.run(go())


def _job(db: psycopg.Connection[dict[str, Any]], audio_id: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert row is not None
    return row


def _transcripts(db: psycopg.Connection[dict[str, Any]], audio_id: str) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM transcripts WHERE audio_id = %s", (audio_id,)).fetchall()


def test_worker_killed_mid_job_is_replaced_after_its_lease_expires(
    make_settings: Any,
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    long_speech: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    audio_id = _ingest(settings, long_speech)
    env = _shared_env(settings, database_url, lease_s=2)
    doomed = Service("worker", env, tmp_path / "doomed.log").start()
    try:
        wait_until(
            lambda: _job(db, audio_id)["state"] == "running",
            timeout=120,
            what="the first worker to claim the job",
        )
        doomed.signal(signal.SIGKILL)
        assert doomed.proc is not None
        doomed.proc.wait(timeout=10)
    finally:
        doomed.kill()
    assert _transcripts(db, audio_id) == []

    rescuer = Service("worker", env, tmp_path / "rescuer.log").start()
    try:
        wait_until(
            lambda: _job(db, audio_id)["state"] == "done",
            timeout=240,
            what="another worker to finish the job",
        )
    finally:
        assert rescuer.stop() == 0
    (transcript,) = _transcripts(db, audio_id)
    assert transcript["attempt"] == 2
    assert transcript["worker_id"].split(":")[1] == str(rescuer.pid)
    assert "permission" in transcript["text"].lower()


def test_paused_worker_cannot_overwrite_the_result_of_the_worker_that_took_over(
    make_settings: Any,
    database_url: str,
    db: psycopg.Connection[dict[str, Any]],
    long_speech: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    audio_id = _ingest(settings, long_speech)
    env = _shared_env(settings, database_url, lease_s=2)
    paused = Service("worker", env, tmp_path / "paused.log").start()
    rescuer = Service("worker", env, tmp_path / "rescuer.log")
    try:
        wait_until(
            lambda: _job(db, audio_id)["state"] == "running",
            timeout=120,
            what="the first worker to claim the job",
        )
        paused.signal(signal.SIGSTOP)
        first_token = _job(db, audio_id)["lease_token"]
        wait_until(
            lambda: db.execute(
                "SELECT lease_expires_at < now() AS expired FROM jobs WHERE audio_id = %s",
                (audio_id,),
            ).fetchone()["expired"],  # type: ignore[index]
            timeout=30,
            what="the paused worker's lease to expire",
        )
        rescuer.start()
        wait_until(
            lambda: _job(db, audio_id)["state"] == "done",
            timeout=240,
            what="the second worker to finish the job",
        )
        (winner,) = _transcripts(db, audio_id)
        assert winner["worker_id"].split(":")[1] == str(rescuer.pid)

        paused.signal(signal.SIGCONT)
        paused.wait_for_event(
            "lease lost: another worker owns this job now",
            timeout=120,
        )
        # The late worker gave up; the winner's transcript and objects stand.
        (after,) = _transcripts(db, audio_id)
        assert after["id"] == winner["id"] and after["worker_id"] == winner["worker_id"]
        job = _job(db, audio_id)
        assert job["state"] == "done" and job["lease_token"] is None
        assert first_token is not None
        store = FilesystemStore(settings.data_dir / "objects")
        assert store.stat(after["json_key"]) is not None
        assert not list(
            (settings.data_dir / "objects" / "transcripts" / audio_id).glob(f"{first_token}*")
        )
    finally:
        if paused.proc is not None and paused.proc.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
        paused.kill()
        rescuer.kill()


def test_a_busy_gateway_port_is_a_clear_error_before_anything_starts(
    embedded_root: Path,
) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, **_env(embedded_root), "AI2TEXT_GATEWAY__PORT": str(port)}
        done = subprocess.run(
            [sys.executable, "-m", "ai2text", "up"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, "a busy port is a configuration problem (exit code 2)"
    message = done.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "AI2TEXT_GATEWAY__PORT" in message
    # Nothing was started: no embedded database was created.
    assert not (embedded_root / "data" / "pg").exists()
