"""How much CPU did *other* processes use while we measured? (Linux /proc only.)

Other test runs may share the machine. For each measurement we read the
machine-wide busy CPU time from /proc/stat and the CPU time of our own
processes (this one, ``ai2text up`` and its embedded PostgreSQL); the
difference, per wall-clock second, is the CPU taken by foreign load, in cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / _TICK


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime+stime seconds) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            rest = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster whose command line names ``pgdata`` and its children."""
    needle = str(pgdata).encode()
    masters = []
    for pid in _all_pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"postgres" in cmd and needle in cmd:
            masters.append(pid)
    if not masters:
        return []
    children = []
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is not None and st[0] in masters:
            children.append(pid)
    return masters + children


@dataclass
class CpuWindow:
    """Start it, run the measurement, ``stop()`` it: foreign cores used meanwhile."""

    own_pids: Callable[[], list[int]]
    _wall: float = 0.0
    _busy: float = 0.0
    _own: float = 0.0

    def _own_cpu_s(self) -> float:
        total = 0.0
        for pid in set(self.own_pids()):
            st = _proc_stat(pid)
            if st is not None:
                total += st[1]
        return total

    def start(self) -> CpuWindow:
        self._wall = time.monotonic()
        self._busy = _machine_busy_s()
        self._own = self._own_cpu_s()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        busy = _machine_busy_s() - self._busy
        own = self._own_cpu_s() - self._own
        # Backends that exited meanwhile take their CPU time with them; clamp at zero.
        foreign = max(0.0, busy - own)
        return {
            "wall_s": round(wall, 3),
            "machine_busy_cores": round(busy / wall, 2) if wall > 0 else 0.0,
            "own_cores": round(own / wall, 2) if wall > 0 else 0.0,
            "foreign_cores": round(foreign / wall, 2) if wall > 0 else 0.0,
        }
