"""Keeping the data directory private: directories 0700, files 0600.

The data directory holds audio, transcripts, keys and the embedded database, so
no other user may read it. Directories are created 0700 here, whatever the umask.

``pgserver`` gets in the way when it runs as root: it runs PostgreSQL as a
``pgserver`` user (keeping root's group) and, on every start, adds ``g+rx,o+rx``
to each directory above the database so that user can reach it, which leaves the
data directory 0755. :func:`restrict_data_dir` takes that back once the server is
up. PostgreSQL keeps reaching its data through the data directory by path (the
log, ``pg_ctl stop``), so when the database directory belongs to another user the
data directory stays traversable by its own group only (0710); root's group
holds no other user on an ordinary system. The directories *above* the data
directory keep the ``o+rx`` pgserver gave them: the server could not reach its
data without it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import structlog

from pipeline.errors import ConfigError

log = structlog.get_logger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# The data directory when the database inside it runs as another user: that user keeps
# our group (pgserver changes only the uid), so group traversal is all it needs.
SHARED_WITH_SERVER = 0o710


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory it creates is 0700 (existing ones are left)."""
    missing: list[Path] = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process was quicker
            directory.mkdir(mode=PRIVATE_DIR)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))


def ensure_data_dir(data_dir: Path) -> None:
    """Create the data directory (0700); one readable ``ConfigError`` if that fails."""
    try:
        make_private_dirs(data_dir)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot create the data directory {data_dir} (AI2TEXT_DATA_DIR): {reason}"
        ) from exc


def restrict_data_dir(data_dir: Path, *, server_dir: Path | None = None) -> None:
    """Make ``data_dir`` and the directories directly in it private again.

    Called after the embedded server in ``server_dir`` (default ``<data_dir>/pg``)
    starts, since pgserver widens the data directory then, and when a process's
    roles start. Deeper directories need no walk: no other user can pass the
    top-level ones.
    """
    data_mode = PRIVATE_DIR
    if _owner(server_dir or data_dir / "pg") not in (None, os.geteuid()):
        data_mode = SHARED_WITH_SERVER
        try:
            if data_dir.stat().st_gid != os.getegid():
                os.chown(data_dir, -1, os.getegid())
        except PermissionError as exc:
            log.warning(
                "cannot give the data directory our group", path=str(data_dir), error=str(exc)
            )
    _chmod_dir(data_dir, data_mode)
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _chmod_dir(Path(entry.path), PRIVATE_DIR)


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except FileNotFoundError:
        return None


def _chmod_dir(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass
    except PermissionError as exc:  # another user's directory: say so, do not stop
        log.warning("cannot restrict permissions", path=str(path), mode=oct(mode), error=str(exc))
