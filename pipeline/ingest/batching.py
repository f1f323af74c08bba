"""Group commit: calls that arrive while one batch is being written go into the next.

A flood of small files made the watcher spend most of its time on database round
trips, about ten per file. With a ``Batcher`` the take loops each ``submit`` their
file and wait; one task writes whatever has gathered in one transaction, and
meanwhile the next batch gathers. A lone file is written at once (no timer, no
added latency); under load batches grow by themselves up to ``max_batch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Hands items to ``flush`` in batches; each caller gets its own item's result.

    ``flush`` returns one result per item, in order; an exception in its place is
    raised to that item's caller alone. If ``flush`` raises, every caller of that
    batch gets the exception (each retries as it would have alone).
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = 200,
    ) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._writing = 0

    @property
    def waiting(self) -> int:
        """Items gathered for the next batch (not those being written now)."""
        return len(self._pending)

    @property
    def writing(self) -> int:
        """Items of the batch being written now."""
        return self._writing

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="ingest-batch")
        return await future

    async def _write_all(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._writing = len(batch)
            try:
                results = await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._pending:
                    if not future.done():
                        future.cancel()
                self._pending.clear()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to each caller, who handles it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._writing = 0
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
