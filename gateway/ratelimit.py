"""Per-subject token buckets: a steady rate with a burst of up to one minute's worth."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_subjects: int = 100_000,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_subjects = max_subjects
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, subject: str) -> float:
        """Take one token; return 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(subject)
            if bucket is None:
                if len(self._buckets) >= self.max_subjects:
                    self._forget_full(now)
                bucket = self._buckets[subject] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def retry_after_header(self, wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))

    def _forget_full(self, now: float) -> None:
        """Drop subjects whose buckets have refilled: they carry no state worth keeping."""
        full_after = self.capacity / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}
