"""Exclusive claims on a directory, so two services never race over the same files.

``ai2text up`` claims its data directory and every watcher claims its inbox with
an advisory ``flock`` on a lock file inside the directory. The kernel drops the
lock when the process dies however it dies, so a stale lock file never blocks a
restart. The holder writes its pid into the file for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ConfigError

DATA_DIR_LOCK = ".ai2text-up.lock"
INBOX_LOCK = ".ai2text-watch.lock"


class AlreadyRunning(ConfigError):
    """Another ai2text process holds the directory this one needs for itself."""


class DirectoryLock:
    """A held ``flock`` on ``<directory>/<name>``; released by ``release`` or process exit."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def claim_directory(directory: Path, name: str, *, what: str, hint: str) -> DirectoryLock:
    """Lock ``directory`` for this process, or raise ``AlreadyRunning`` naming the holder."""
    path = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use the {what} {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        by = f" (pid {holder})" if holder else ""
        raise AlreadyRunning(
            f"another ai2text{by} is already running on {what} {directory}; {hint}"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DirectoryLock(path, fd)


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Wait for and hold an exclusive ``flock`` on ``path`` (created if missing)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return ""
