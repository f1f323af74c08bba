"""Is a process still there? Answers from ``/proc`` where it exists, else from ``kill(pid, 0)``."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state first), or ``None`` when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after the last
    # ')' are space-separated.
    return stat[stat.rfind(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or ``None`` when unknown or gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 overall
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, *, started: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone); with ``started``, the same process.

    ``started`` (start ticks, from ``process_start_ticks``) tells a reused pid apart; it
    is only checked where ``/proc`` exists.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: the signal test is all there is
    if fields[:1] == ["Z"]:
        return False
    return started is None or process_start_ticks(pid) == started
