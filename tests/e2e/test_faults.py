"""Faults injected into a running ``ai2text up``: nothing it holds is lost or leaked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import public_tempdir
from tests.e2e.harness import REPO, Service, cli_json, wait_until

# No external database URL: every process here runs the embedded one.
from tests.e2e.test_lifecycle import _env, _no_external_database  # noqa: F401
from tests.e2e.test_up import row_named

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


def _staged_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "tmp").rglob("*") if p.is_file()]


def test_staging_files_of_a_killed_up_are_swept_when_it_starts_again(
    embedded_root: Path, long_speech: Path
) -> None:
    env = _env(embedded_root, AI2TEXT_QUEUE__LEASE_S="3")
    data_dir = embedded_root / "data"
    first = Service("up", env, embedded_root / "first.log").start()
    try:
        first.wait_for_event("worker ready", timeout=120)
        shutil.copy(long_speech, embedded_root / "inbox" / "long.wav")
        staged = wait_until(
            lambda: _staged_files(data_dir), timeout=120, what="the worker to stage the audio"
        )
        first.signal(signal.SIGKILL)
        assert first.proc is not None
        first.proc.wait(timeout=30)
    finally:
        first.kill()
    assert all(p.exists() for p in staged), "SIGKILL leaves the staging file behind"

    second = Service("up", env, embedded_root / "second.log").start()
    try:
        second.wait_for_event("worker ready", timeout=120)
        assert not any(p.exists() for p in staged), "the dead process's staging files remain"
        assert second.count("removed the staging files of stopped processes") == 1
        row = wait_until(
            lambda: row_named(env, "long.wav", ("transcribed",)),
            timeout=300,
            what="the interrupted job to be transcribed after the restart",
        )
        assert row["attempts"] == 2
    finally:
        assert second.stop() == 0
    assert _staged_files(data_dir) == [], "a clean stop leaves no staging files"


@pytest.fixture(scope="module")
def running_up() -> Iterator[tuple[Service, dict[str, str], Path]]:
    root = public_tempdir("ai2text-faults-")
    env = _env(root)
    service = Service("up", env, root / "up.log").start()
    service.wait_for_event("worker ready", timeout=120)
    service.wait_for_event("watching", timeout=120)
    yield service, env, root
    assert service.stop() == 0
    shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"


def test_embedded_database_killed_under_up_comes_back_and_the_job_costs_no_attempt(
    running_up: Any, long_speech: Path
) -> None:
    service, env, root = running_up
    shutil.copy(long_speech, root / "inbox" / "long.wav")
    wait_until(
        lambda: row_named(env, "long.wav", ("processing",)),
        timeout=120,
        what="transcription to start",
    )
    doomed = _postmaster_pid(root / "data")
    assert doomed is not None
    os.kill(doomed, signal.SIGKILL)
    wait_until(lambda: not _alive(doomed), timeout=30, what="the postmaster to die")

    service.wait_for_event("embedded database restarted", timeout=120)
    row = wait_until(
        lambda: row_named(env, "long.wav", ("transcribed",)),
        timeout=300,
        what="the job to finish after the database came back",
    )
    assert row["attempts"] == 1, "a database outage spends no attempt"
    assert service.count("embedded database stopped; restarting it") == 1

    shutil.copy(DATA / "jfk.flac", root / "inbox" / "after.flac")
    wait_until(
        lambda: row_named(env, "after.flac", ("transcribed",)),
        timeout=120,
        what="a file dropped after the restart to be transcribed",
    )
    assert cli_json(env, "status")["transcripts"] == 2


def _run_briefly(role: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai2text", role],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_a_second_up_on_the_same_data_directory_is_refused_with_one_line(
    running_up: Any,
) -> None:
    service, env, root = running_up
    done = _run_briefly("up", env)
    assert done.returncode != 0
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "already running" in line
    assert str(root / "data") in line
    assert f"pid {service.pid}" in line
    service.check_alive()


def test_a_watcher_on_an_inbox_already_watched_is_refused_with_one_line(
    running_up: Any, tmp_path: Path
) -> None:
    service, env, root = running_up
    other = {**env, "AI2TEXT_DATA_DIR": str(tmp_path / "other-data")}
    done = _run_briefly("watch", other)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert "already running" in line
    assert f"inbox {root / 'inbox'}" in line
    assert not (tmp_path / "other-data" / "pg").exists(), "refused before starting anything"
    service.check_alive()
