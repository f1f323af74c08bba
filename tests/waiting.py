"""Waiting in async tests, always bounded by a deadline.

Workers send a NOTIFY on ``TRANSCRIPTS_CHANNEL`` whenever a job ends (done,
duplicate or dead), so ``jobs_settled`` sleeps on that instead of polling the
table. For conditions nothing announces (a metric value, a row's state, a
lease running out), ``eventually`` re-checks the condition until it holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import psycopg

from pipeline.config import Settings
from pipeline.db.jobs import JOBS_CHANNEL, TRANSCRIPTS_CHANNEL

T = TypeVar("T")

# How long one wait for a notification may last before the watched tasks are checked
# again (a task that crashed sends no notification).
_CHECK_TASKS_EVERY_S = 1.0


async def jobs_settled(
    settings: Settings,
    *,
    timeout: float,
    audio_id: uuid.UUID | None = None,
    at_least: int = 0,
    watch: Iterable[asyncio.Task[None]] = (),
) -> None:
    """Return once at least ``at_least`` jobs exist and every job (or ``audio_id``'s job)
    is done or dead. Woken by job endings and by new jobs being queued.

    Fails if the deadline passes or one of the ``watch`` tasks stops first.
    """
    tasks = list(watch)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    assert settings.database.url is not None, "tests run against an external database URL"
    url = settings.database.url.get_secret_value()
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        # Listen before the first look, so no ending can slip in between.
        await conn.execute(f"LISTEN {TRANSCRIPTS_CHANNEL}")
        await conn.execute(f"LISTEN {JOBS_CHANNEL}")
        while await _unsettled(conn, audio_id, at_least):
            for task in tasks:
                if task.done():
                    task.result()
                    raise AssertionError("a background task stopped while jobs were pending")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"jobs not done or dead after {timeout:.0f}s")
            async for _ in conn.notifies(
                timeout=min(remaining, _CHECK_TASKS_EVERY_S), stop_after=1
            ):
                pass


async def _unsettled(
    conn: psycopg.AsyncConnection[object], audio_id: uuid.UUID | None, at_least: int
) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE state NOT IN ('done', 'dead')), count(*) FROM jobs"
        " WHERE (%(audio)s::uuid IS NULL OR audio_id = %(audio)s)",
        {"audio": audio_id},
    )
    row = await cur.fetchone()
    assert row is not None
    pending, total = int(row[0]), int(row[1])  # type: ignore[index]
    return pending > 0 or total < at_least


async def eventually(
    check: Callable[[], T | None | Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    every: float = 0.05,
    watch: Iterable[asyncio.Future[Any]] = (),
) -> T:
    """Re-check ``check`` (plain or async) until it returns something truthy; return it.

    Fails when ``timeout`` seconds pass, or at once when one of the ``watch`` tasks
    ends first (with its exception, if it raised one): a stopped role cannot make
    the condition come true.
    """
    tasks = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value  # type: ignore[return-value]
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError(f"a background task stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def next_loop_turn() -> None:
    """Let every callback already scheduled run once: a step of the loop, not a timed wait.

    For tests whose subject is the order of steps (closing after N turns of a change),
    and for stand-ins of an awaited round trip that must give the loop a turn.
    """
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn
