"""How much of the speech VAD found the segments cover, window by window.

Coverage is the overlap of two sets of time intervals (speech found by VAD, time
spanned by segments), not a sum of segment durations: a segment over silence covers
no speech, and two overlapping segments cover their speech once. Each window is
measured when it is done and only two running totals are kept, so a file of any
length costs the same memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Interval = tuple[float, float]


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` as sorted, disjoint intervals (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def total_s(intervals: Iterable[Interval]) -> float:
    """The time the union of ``intervals`` spans."""
    return sum(end - start for start, end in merged(intervals))


def overlap_s(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    """The time that lies in both the union of ``a`` and the union of ``b``."""
    left, right = merged(a), merged(b)
    i = j = 0
    shared = 0.0
    while i < len(left) and j < len(right):
        start = max(left[i][0], right[j][0])
        end = min(left[i][1], right[j][1])
        if end > start:
            shared += end - start
        if left[i][1] <= right[j][1]:
            i += 1
        else:
            j += 1
    return shared


@dataclass(slots=True)
class Coverage:
    """Running totals: speech found, and the part of it that segments cover."""

    speech_s: float = 0.0
    covered_s: float = 0.0

    def add(self, speech: Iterable[Interval], segments: Iterable[Interval]) -> None:
        """Count one window: its speech and its segments' spans (same clock)."""
        speech = merged(speech)
        self.speech_s += total_s(speech)
        self.covered_s += overlap_s(speech, segments)
