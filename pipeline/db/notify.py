"""Waiting for a PostgreSQL NOTIFY, a timeout, or shutdown, whichever comes first."""

from __future__ import annotations

import asyncio

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
        notice.cancel()
        stopping.cancel()
        # Not ``await notice``: that would swallow a cancellation of the caller itself.
        await asyncio.wait({notice, stopping})
    sub.clear()
