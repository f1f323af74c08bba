"""Per-process staging directories under the temp root, and sweeping those of dead processes.

Every process that stages bytes on disk (a worker's fetched audio, an upload being
spooled, a manifest being served) does so in its own directory
``<temp root>/<host>.p<pid>-<start>``, where ``<start>`` is the process start time in
clock ticks since boot; the host name keeps other machines' processes out of the sweep
when the temp root is on a shared volume. A process killed with SIGKILL cannot clean up
after itself, so at start-up every process removes the directories whose owner is gone:
the pid no longer exists, or it now belongs to a process that started at a different
time (pid reuse).
On platforms without ``/proc`` the start time is unknown and only the pid is checked.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.processes import process_alive, process_start_ticks

log = structlog.get_logger(__name__)

_OWNED_DIR = re.compile(r"^(?P<host>.+)\.p(?P<pid>\d+)-(?P<start>\d+)$")
_created: dict[Path, Path] = {}


def process_staging_dir(temp_root: Path) -> Path:
    """This process's own staging directory under ``temp_root`` (created 0700 on first use)."""
    pid = os.getpid()
    path = _created.get(temp_root)
    if path is None or not path.name.startswith(f"{_host()}.p{pid}-"):  # first use, or forked
        path = temp_root / f"{_host()}.p{pid}-{process_start_ticks(pid) or 0}"
        _created[temp_root] = path
    temp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(exist_ok=True, mode=0o700)  # again each time: someone may have emptied tmp/
    return path


def prepare_staging(temp_root: Path) -> None:
    """At start-up: make sure ``temp_root`` can be used, and sweep what dead processes left.

    Raises ``ConfigError`` (one line for the user) when the directory cannot be created.
    """
    try:
        temp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the temp directory {temp_root} (AI2TEXT_ASR__TEMP_DIR):"
            f" {exc.strerror or exc}"
        ) from None
    sweep_dead_staging(temp_root)


def sweep_dead_staging(temp_root: Path) -> list[Path]:
    """Remove the staging directories of processes that no longer run; return what went."""
    try:
        entries = list(temp_root.iterdir())
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    host = _host()
    for entry in entries:
        match = _OWNED_DIR.match(entry.name)
        if match is None or match["host"] != host or not entry.is_dir() or entry.is_symlink():
            continue
        if process_alive(int(match["pid"]), started=int(match["start"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    if removed:
        log.info(
            "removed the staging files of stopped processes",
            directories=len(removed),
            temp_root=str(temp_root),
        )
    return removed


def _host() -> str:
    """The host name, made safe for a directory name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
