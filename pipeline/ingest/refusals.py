"""What the hot folder records for entries it will not open: links, FIFOs, sockets, devices.

Each gets a ``rejected`` row with a reason, like any other refused input, and
is never opened: following a link could read a file outside the inbox, and
opening a FIFO for reading blocks until someone writes to it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.errors import RejectCode
from pipeline.ingest.core import Arrival

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def describe_refusal(
    path: Path, rel: Path, inbox: Path, tenant: str
) -> tuple[Arrival, str, RejectCode]:
    """The arrival, reason and code for a symlink or special file (``lstat`` only).

    Raises ``FileNotFoundError`` if it is gone.
    """
    st = path.lstat()
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special"
    arrival = Arrival(
        source="folder",
        original_name=str(rel),
        source_uri=path.as_uri(),
        source_version=f"{kind}:{st.st_ino}:{st.st_mtime_ns}",
        tenant=tenant,
    )
    if kind == "symlink":
        return arrival, _symlink_reason(path, inbox), "symlink"
    what = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
    reason = f"not a regular file: {what}; only regular audio files are taken"
    return arrival, reason, "not_regular"


def _symlink_reason(path: Path, inbox: Path) -> str:
    target = os.readlink(path)
    inside = path.resolve().is_relative_to(inbox)
    where = "a file inside the watched folder" if inside else "outside the watched folder"
    return (
        f"symbolic link to {where} ({target}): links are not followed;"
        " put the file itself in the inbox"
    )
