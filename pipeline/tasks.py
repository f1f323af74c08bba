"""Stopping background asyncio tasks for certain.

A cancellation that lands while a task is inside a library call can be consumed there
(psycopg's pool does this when a cancel arrives during a query), and the task then
carries on: ``task.cancel(); await task`` waits forever and the process never stops.
``cancel_and_wait`` cancels again until the task has really ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

# How long one cancellation is given before it is sent again.
_RECANCEL_AFTER_S = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` (again, if a cancellation is swallowed) and wait until it is done.

    The task's own result or exception is not raised; a cancellation of the caller is.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_AFTER_S)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never seen
