"""Waiting for a PostgreSQL NOTIFY, a timeout, or shutdown, whichever comes first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg


async def wait_for_notify(
    listener: psycopg.AsyncConnection[Any], stop: asyncio.Event, max_wait_s: float
) -> None:
    """Return on the first notification on ``listener``, after ``max_wait_s``, or on ``stop``.

    Notifications are read in short slices so shutdown is noticed within half a second.
    """
    deadline = time.monotonic() + max_wait_s
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        async for _ in listener.notifies(timeout=min(remaining, 0.5), stop_after=1):
            return
