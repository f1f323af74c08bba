"""Waiting for a PostgreSQL NOTIFY, a timeout, or shutdown, whichever comes first."""

from __future__ import annotations

import asyncio

from pipeline.db.notifications import Notice, Subscription


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


async def next_notices(
    subs: tuple[Subscription, ...], stops: tuple[asyncio.Event, ...], timeout_s: float
) -> list[Notice]:
    """The next notices of any of ``subs`` (all that came at once), or [] after
    ``timeout_s`` or once one of ``stops`` is set.

    Every notice taken off a buffer is returned, so none is lost between two channels.
    """
    ready = [notice for sub in subs if (notice := sub.get_nowait()) is not None]
    if ready or any(stop.is_set() for stop in stops):
        return ready
    waits = [asyncio.ensure_future(sub.get()) for sub in subs]
    stopping = [asyncio.ensure_future(stop.wait()) for stop in stops]
    try:
        await asyncio.wait(
            {*waits, *stopping}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (*waits, *stopping):
            task.cancel()
        # Not awaited one by one: that would swallow a cancellation of the caller itself.
        await asyncio.wait({*waits, *stopping})
    return [task.result() for task in waits if not task.cancelled() and task.exception() is None]
