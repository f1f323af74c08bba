"""What happens to a hot-folder file once its fate is decided.

Accepted and duplicate files are moved to ``processed/`` (or deleted, or kept);
rejected ones go to ``rejected/`` with a ``<name>.error.txt`` that says why. By the
time this runs the bytes are stored and recorded, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import WatchSettings
from pipeline.ingest.core import IngestResult
from pipeline.ingest.stability import Fingerprint


def fingerprint_of(st: os.stat_result) -> Fingerprint:
    return Fingerprint(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def tidy_after_ingest(
    path: Path, rel: Path, result: IngestResult, watch: WatchSettings
) -> Fingerprint | None:
    """Move, delete or keep ``path``; return its fingerprint when it is kept in place."""
    if result.outcome == "rejected":
        dest = move_unique(path, watch.rejected_path / rel, result)
        note = dest.with_name(dest.name + ".error.txt")
        note.write_text(
            f"{result.reason}\n\naudio id: {result.audio_id}\n"
            f"rejected at: {datetime.now(UTC).isoformat(timespec='seconds')}\n",
            encoding="utf-8",
        )
        return None
    if watch.after_ingest == "move":
        move_unique(path, watch.processed_path / rel, result)
        return None
    if watch.after_ingest == "delete":
        path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(FileNotFoundError):
        return fingerprint_of(path.lstat())
    return None


def move_unique(path: Path, dest: Path, result: IngestResult) -> Path:
    """Move ``path`` to ``dest``, adding the audio id to the name if ``dest`` exists."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest = dest.with_name(f"{dest.stem}.{str(result.audio_id)[:8]}{dest.suffix}")
    try:
        os.rename(path, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(path, dest)
    return dest
