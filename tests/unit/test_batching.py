"""Group commit: what arrives while a batch is written goes into the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pipeline.ingest.batching import Batcher
from tests.waiting import eventually, next_loop_turn


def test_calls_made_during_a_flush_are_written_together_and_each_gets_its_result() -> None:
    batches: list[list[int]] = []
    release, first_flushing = asyncio.Event(), asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            first_flushing.set()
            await release.wait()
        return [i * 10 for i in items]

    async def scenario() -> list[int]:
        batcher: Batcher[int, int] = Batcher(flush, max_batch=3)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.wait_for(first_flushing.wait(), timeout=10)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await eventually(
            lambda: batcher.waiting == 5, timeout=10, what="five calls gathered", watch=[first]
        )
        release.set()
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50]
    assert batches == [[0], [1, 2, 3], [4, 5]]


def test_a_failed_flush_fails_only_its_own_callers() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        if 2 in items:
            raise ConnectionError("database down")
        return list(items)

    async def scenario() -> tuple[int, BaseException | int]:
        batcher: Batcher[int, int] = Batcher(flush, max_batch=1)
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        return results[0], results[1]  # type: ignore[return-value]

    ok, failed = asyncio.run(scenario())
    assert ok == 1
    assert isinstance(failed, ConnectionError)


def test_a_lone_call_is_written_at_once() -> None:
    async def flush(items: Sequence[str]) -> list[str]:
        return [s.upper() for s in items]

    async def scenario() -> str:
        return await asyncio.wait_for(Batcher(flush).submit("a"), 1)

    assert asyncio.run(scenario()) == "A"


@pytest.mark.parametrize("max_batch", [1, 200])
def test_every_caller_is_answered(max_batch: int) -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        await next_loop_turn()  # a write yields to the loop, as a database round trip does
        return [-i for i in items]

    async def scenario() -> list[int]:
        batcher: Batcher[int, int] = Batcher(flush, max_batch=max_batch)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(50))))

    assert asyncio.run(scenario()) == [-i for i in range(50)]


def test_an_error_in_one_items_place_goes_to_that_caller_only() -> None:
    async def flush(items: Sequence[int]) -> list[int | Exception]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    async def scenario() -> list[object]:
        batcher: Batcher[int, int] = Batcher(flush)
        return list(
            await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        )

    results = asyncio.run(scenario())
    assert results[0] == 0 and results[2] == 2
    assert [str(r) for r in results[1::2]] == ["bad 1", "bad 3"]
