"""Which files some process still holds open for writing (Linux ``/proc``, best effort).

A recorder that pauses longer than the quiet period leaves a file that looks
settled; if it keeps the file open, ``/proc/<pid>/fd`` says so. Each open file
descriptor is a symlink to the file's current path, and ``/proc/<pid>/fdinfo/<fd>``
gives the flags it was opened with, so only descriptors opened for writing
(``O_WRONLY`` or ``O_RDWR``) count; readers such as media players do not.

Best effort by design: processes of other users are invisible without privileges
(``EACCES`` is ignored), a writer in another mount namespace sees another path,
and a writer that closes the file between writes is not seen at all. Where
``/proc`` does not exist (macOS, Windows) nothing is ever reported.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

PROC = Path("/proc")
_ACCESS_MODE = 0o3  # O_ACCMODE
_WRITING = {os.O_WRONLY, os.O_RDWR}


def open_for_writing(paths: Collection[Path], *, proc: Path = PROC) -> dict[Path, int]:
    """Map each of ``paths`` that a process has open for writing to one such pid.

    Cost: one ``readlink`` per open descriptor on the machine, so call it once for
    a batch of candidate files, not once per file.
    """
    wanted = {os.fspath(p): p for p in paths}
    found: dict[Path, int] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        for path in _writers_in(proc / entry, wanted):
            found.setdefault(path, int(entry))
        if len(found) == len(wanted):
            break
    return found


def _writers_in(process: Path, wanted: dict[str, Path]) -> list[Path]:
    fd_dir = process / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:  # another user's process, or it has exited
        return []
    hits = []
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        path = wanted.get(target)
        if path is not None and _opened_for_writing(process / "fdinfo" / fd):
            hits.append(path)
    return hits


def _opened_for_writing(fdinfo: Path) -> bool:
    try:
        text = fdinfo.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return False  # closed meanwhile
    except OSError:
        return True  # open, but its mode cannot be read: assume the worst
    for line in text.splitlines():
        if line.startswith("flags:"):
            try:
                flags = int(line.split(":", 1)[1].strip(), 8)
            except ValueError:
                return True
            return (flags & _ACCESS_MODE) in _WRITING
    return True
