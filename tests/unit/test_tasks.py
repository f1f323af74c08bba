"""Stopping a background task whose cancellation is swallowed by a library call."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.tasks import cancel_and_wait


async def _swallows_one_cancel(entered: asyncio.Event, swallowed: list[int]) -> None:
    """A loop whose body eats the first cancellation, as a driver mid-query can."""
    while True:
        try:
            entered.set()
            await asyncio.Event().wait()  # blocks until cancelled
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)


def test_a_swallowed_cancellation_is_sent_again_until_the_task_ends() -> None:
    async def scenario() -> list[int]:
        entered, swallowed = asyncio.Event(), []
        task = asyncio.create_task(_swallows_one_cancel(entered, swallowed))
        await entered.wait()
        await asyncio.wait_for(cancel_and_wait(task), timeout=30)
        assert task.cancelled()
        return swallowed

    assert asyncio.run(scenario()) == [1]


def test_a_task_that_failed_is_waited_for_without_raising_its_error() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def scenario() -> None:
        task = asyncio.create_task(fails())
        await asyncio.wait({task})
        await cancel_and_wait(task)
        assert isinstance(task.exception(), ValueError)

    asyncio.run(scenario())


def test_cancelling_the_caller_still_cancels_the_caller() -> None:
    async def swallows_until_released(got_cancel: asyncio.Event, release: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.Event().wait()  # blocks until cancelled
            except asyncio.CancelledError:
                got_cancel.set()
                if release.is_set():
                    raise

    async def scenario() -> None:
        got_cancel, release = asyncio.Event(), asyncio.Event()
        inner = asyncio.create_task(swallows_until_released(got_cancel, release))
        outer = asyncio.create_task(cancel_and_wait(inner))
        # Inner has been cancelled once: outer is now waiting for it to end.
        await asyncio.wait_for(got_cancel.wait(), timeout=30)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert not inner.done()  # the caller's cancellation does not wait for the task
        release.set()
        await asyncio.wait_for(cancel_and_wait(inner), timeout=30)
        assert inner.cancelled()

    asyncio.run(scenario())
