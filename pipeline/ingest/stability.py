"""Deciding when a file in the hot folder has finished arriving.

A file is ready when its size and mtime have not changed for a quiet period.
All pending files are tracked together and re-checked on one timer, so a
thousand files dropped at once are all ready after about one quiet period.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path


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
