"""Which embedded server a one-shot command attaches to: only a live, ready one.

``running_uri`` reads ``postmaster.pid`` (pid, data dir, start time, port, socket
directory, listen address, shared memory, status); anything else means "start one".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.db.embedded import EmbeddedPostgres


def _write_pid_file(pgdata: Path, pid: int, status: str, socket_dir: str = "/run/pg") -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    lines = [str(pid), str(pgdata), "1796240941", "5432", socket_dir, "", "  2154503  557116"]
    (pgdata / "postmaster.pid").write_text("\n".join([*lines, status.ljust(8)]) + "\n")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_ready_live_postmaster_is_reached_through_its_socket(tmp_path: Path) -> None:
    _write_pid_file(tmp_path / "pg", os.getpid(), "ready")

    uri = EmbeddedPostgres(tmp_path / "pg").running_uri()

    assert uri == "postgresql://postgres:@/postgres?host=/run/pg"


def test_no_server_a_dead_one_or_one_not_ready_yet_is_not_attached(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    assert server.running_uri() is None  # no postmaster.pid at all

    _write_pid_file(server.pgdata, _dead_pid(), "ready")
    assert server.running_uri() is None

    _write_pid_file(server.pgdata, os.getpid(), "starting")
    assert server.running_uri() is None

    _write_pid_file(server.pgdata, os.getpid(), "ready", socket_dir="")
    assert server.running_uri() is None

    (server.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n")  # being written
    assert server.running_uri() is None
