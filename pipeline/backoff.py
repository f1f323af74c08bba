"""Capped exponential backoff that logs once per change of state, not once per try."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class Backoff:
    def __init__(self, what: str, *, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.what = what
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def failed(self, error: str) -> float:
        """Record a failure; return how long to wait before the next try."""
        if self.failures == 0:
            log.warning("unavailable; retrying with backoff", what=self.what, error=error)
        self.failures += 1
        return float(min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 32)))

    def succeeded(self) -> None:
        if self.failures:
            log.info("available again", what=self.what, failed_tries=self.failures)
        self.failures = 0
