"""Keeping the embedded PostgreSQL alive under a running service.

If the embedded server dies (killed, crashed, out of memory) every role would
otherwise retry its queries forever. The supervisor notices within a check
interval, starts the server again with capped backoff, and points the pool at
it; it logs once when the server goes down and once when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from pipeline.backoff import Backoff
from pipeline.db.database import Database
from pipeline.errors import TransientError

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 1.0


async def supervise_embedded(
    db: Database,
    stop: asyncio.Event,
    *,
    check_interval_s: float = CHECK_INTERVAL_S,
    backoff: Backoff | None = None,
) -> None:
    """Restart the embedded server whenever it is found dead, until ``stop``."""
    embedded = db.embedded
    if embedded is None:
        return
    retry = backoff or Backoff("embedded PostgreSQL", base_s=1.0, cap_s=30.0)
    down = False
    wait_s = check_interval_s
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
        if stop.is_set():
            return
        wait_s = check_interval_s
        if await asyncio.to_thread(embedded.is_running):
            continue
        if not down:
            log.error("embedded database stopped; restarting it", pgdata=str(embedded.pgdata))
            down = True
        try:
            uri = await asyncio.to_thread(embedded.restart)
        except TransientError as exc:
            wait_s = retry.failed(str(exc))
            continue
        db.point_at(uri)
        retry.succeeded()
        down = False
        log.info("embedded database restarted", pgdata=str(embedded.pgdata))
