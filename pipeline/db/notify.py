"""Waiting for a PostgreSQL NOTIFY, a timeout, or shutdown, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib

from pipeline.db.notifications import Subscription


async def wait_for_notify(sub: Subscription, stop: asyncio.Event, max_wait_s: float) -> None:
    """Return on the next notice on ``sub`` (or a ``missed`` one), after ``max_wait_s``,
    or on ``stop``.

    What else is buffered is dropped: the caller re-checks the table, which covers it.
    """
    if stop.is_set():
        return
    notice = asyncio.ensure_future(sub.get())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait(
            {notice, stopping}, timeout=max_wait_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiting in (notice, stopping):
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    sub.clear()
