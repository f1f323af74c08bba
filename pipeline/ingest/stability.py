"""Deciding when a file in the hot folder has finished arriving.

A file is ready when its size and mtime have not changed for a quiet period.
All pending files are tracked together and re-checked on one timer, so a
thousand files dropped at once are all ready after about one quiet period.

A quiet file can still be unfinished: another process may hold it open for
writing, its header may promise more audio than it holds, or it may not be
readable yet. Such files are *held* (``HeldFiles``) and looked at again when they
change or when their time comes, never on every tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What must stay the same for a file to count as settled."""

    size: int
    mtime_ns: int
    inode: int


@dataclass(slots=True)
class _Pending:
    fingerprint: Fingerprint
    unchanged_since: float


class StabilityTracker:
    def __init__(self, quiet_period_s: float) -> None:
        self.quiet_period_s = quiet_period_s
        self._pending: dict[Path, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def paths(self) -> list[Path]:
        return list(self._pending)

    def observe(self, path: Path, fingerprint: Fingerprint | None, now: float) -> None:
        """Record what ``path`` looks like at ``now`` (``None``: it is gone)."""
        if fingerprint is None:
            self._pending.pop(path, None)
            return
        entry = self._pending.get(path)
        if entry is None or entry.fingerprint != fingerprint:
            self._pending[path] = _Pending(fingerprint, now)

    def fingerprint(self, path: Path) -> Fingerprint | None:
        entry = self._pending.get(path)
        return entry.fingerprint if entry else None

    def quiet_since(self, path: Path) -> float | None:
        """When ``path`` was first seen with its current fingerprint (monotonic)."""
        entry = self._pending.get(path)
        return entry.unchanged_since if entry else None

    def ready(self, now: float) -> list[Path]:
        """Files seen unchanged for at least the quiet period, oldest first.

        Only time observed here counts, never the file's own mtime: a writer on a
        network share may set times from a clock that is far behind ours.
        """
        due = [
            (entry.unchanged_since, path)
            for path, entry in self._pending.items()
            if now - entry.unchanged_since >= self.quiet_period_s
        ]
        # By time only: after a start-up scan every file has the same time, and comparing
        # Paths to break the ties made this sort ~4x slower. Ties keep discovery order.
        due.sort(key=itemgetter(0))
        return [path for _, path in due]

    def next_due(self) -> float | None:
        """When the earliest pending file's quiet period ends (monotonic), if any."""
        if not self._pending:
            return None
        return min(e.unchanged_since for e in self._pending.values()) + self.quiet_period_s

    def discard(self, path: Path) -> None:
        self._pending.pop(path, None)


HoldReason = Literal["open", "incomplete", "unreadable"]


@dataclass(slots=True)
class Held:
    """A quiet file that is not taken yet, and when to look at it again."""

    reason: HoldReason
    fingerprint: Fingerprint
    ctime_ns: int
    quiet_since: float
    due: float
    attempts: int = 1


def backoff_s(attempt: int, *, base_s: float, cap_s: float) -> float:
    """Delay before try ``attempt + 1``: ``base_s`` doubling per attempt, at most ``cap_s``."""
    return min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 64))


class HeldFiles:
    """Quiet files waiting for a writer to close, the rest of their bytes, or read access.

    A held file is released (and watched for a new quiet period) as soon as it is
    seen changed; a change of its ``ctime`` alone (``chmod``, ``chown``) makes an
    unreadable file due at once instead of at the end of its back-off.
    """

    def __init__(self) -> None:
        self._held: dict[Path, Held] = {}

    def __contains__(self, path: object) -> bool:
        return path in self._held

    def __len__(self) -> int:
        return len(self._held)

    def get(self, path: Path) -> Held | None:
        return self._held.get(path)

    def hold(self, path: Path, held: Held) -> None:
        self._held[path] = held

    def discard(self, path: Path) -> None:
        self._held.pop(path, None)

    def observe(self, path: Path, fingerprint: Fingerprint, ctime_ns: int, now: float) -> bool:
        """Whether ``path`` stays held, seen like this (False: it changed, or was not held)."""
        held = self._held.get(path)
        if held is None:
            return False
        if held.fingerprint != fingerprint:
            del self._held[path]
            return False
        if held.reason == "unreadable" and held.ctime_ns != ctime_ns:
            held.ctime_ns = ctime_ns
            held.due = min(held.due, now)
        return True

    def due(self, now: float) -> list[Path]:
        """Held files whose time has come, earliest first (they stay held until taken)."""
        due = sorted((h.due, path) for path, h in self._held.items() if h.due <= now)
        return [path for _, path in due]

    def next_due(self) -> float | None:
        return min((h.due for h in self._held.values()), default=None)
