"""The delivery runner: drains the outbox (``deliveries``) into its handlers.

It claims due deliveries of the kinds it has handlers for, runs at most
``concurrency`` at once, each in its own task under a timeout, and records the
outcome: delivered, pending again after a backoff, or dead. It wakes on the
``ai2text_deliveries`` NOTIFY the outbox trigger sends when it queues deliveries (not
on every state change), when the earliest retry is due,
and every ``poll_interval_s`` in any case (a notification is only a hint).

Nothing waits on it: transcription commits its state change (and the outbox rows with
it) and moves on; a slow or hanging receiver holds one of the runner's slots for at
most its timeout, while other deliveries go on in the other slots.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping

import structlog

from pipeline.backoff import Backoff
from pipeline.config import DeliverySettings
from pipeline.db import deliveries
from pipeline.db.database import Database
from pipeline.db.deliveries import ClaimedDelivery
from pipeline.db.notifications import NotificationHub, Subscription
from pipeline.deliveries.base import DeliveryFailed, DeliveryHandler
from pipeline.deliveries.errors import DeliveryRefused
from pipeline.errors import DatabaseError, DatabaseUnavailable
from pipeline.metrics import Metrics
from pipeline.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# A claim holds a delivery this much longer than its handler's timeout: a runner that
# dies mid-delivery gives it back when this runs out.
LEASE_MARGIN_S = 30.0
PRUNE_EVERY_S = 3600.0
# On stop, deliveries in flight get this long to finish; the rest are given back.
DRAIN_S = 5.0
# Jitter spreads retries of many deliveries that failed together (a receiver's outage).
JITTER = 0.2


def retry_delay_s(settings: DeliverySettings, attempt: int) -> float:
    """backoff_base_s · 2^(attempt-1), capped at backoff_max_s, ±20 % jitter."""
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** min(attempt - 1, 64))
    return max(0.0, delay * random.uniform(1.0 - JITTER, 1.0 + JITTER))  # noqa: S311 - not a secret


class DeliveryRunner:
    """Runs ``handlers`` (by target kind: 'webhook', 'outbox', 'bucket') over the outbox.

    A handler may carry a ``timeout_s`` attribute for deliveries that take longer than
    an HTTP call (uploading files); otherwise ``settings.timeout_s`` bounds each one.
    """

    def __init__(
        self,
        db: Database,
        hub: NotificationHub | None,
        settings: DeliverySettings,
        handlers: Mapping[str, DeliveryHandler],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.hub = hub
        self.settings = settings
        self.handlers = dict(handlers)
        self.metrics = metrics
        self.kinds = sorted(self.handlers)
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._backoff = Backoff("delivery runner (database)", base_s=0.5, cap_s=10.0)
        self._next_prune = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; deliveries in flight then get ``DRAIN_S`` to finish, and
        those that do not are given back, due at once for the next runner."""
        if not self.handlers:
            return
        log.info("delivery runner started", kinds=self.kinds, concurrency=self.settings.concurrency)
        helpers = [asyncio.create_task(self._wake_on(stop), name="deliveries-stop")]
        sub: Subscription | None = None
        try:
            if self.hub is not None:
                sub = await self.hub.subscribe(deliveries.DELIVERIES_CHANNEL)
                helpers.append(asyncio.create_task(self._wake_on_notices(sub)))
            while not stop.is_set():
                self._wake.clear()
                wait_s = await self._round()
                if stop.is_set():
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), wait_s)
                except TimeoutError:
                    pass
            await self._drain()
        finally:
            for helper in helpers:
                await cancel_and_wait(helper)
            await self._give_back_in_flight()
            if sub is not None:
                await sub.close()
            await self._close_handlers()
            log.info("delivery runner stopped")

    async def _round(self) -> float:
        """Claim and start what is due; return how long to sleep unless woken."""
        try:
            wait_s = await self._claim_and_start()
            await self._maybe_prune()
        except (DatabaseUnavailable, DatabaseError) as exc:
            if self.metrics is not None:
                self.metrics.db_errors.labels(component="deliveries").inc()
            return self._backoff.failed(str(exc))
        self._backoff.succeeded()
        return wait_s

    async def _claim_and_start(self) -> float:
        poll_s = self.settings.poll_interval_s
        free = self.settings.concurrency - len(self._in_flight)
        if free <= 0:
            return poll_s  # woken as soon as one finishes
        async with self.db.connection() as conn:
            claimed = await deliveries.claim_due(
                conn, self.kinds, limit=free, lease_s=self._lease_s()
            )
            for delivery in claimed:
                task = asyncio.create_task(
                    self._deliver(delivery), name=f"delivery-{delivery.target}"
                )
                self._in_flight[task] = delivery
                task.add_done_callback(self._finished)
            if len(claimed) == free:
                return poll_s  # all slots taken: more may be due once one frees
            due_in = await deliveries.seconds_until_due(conn, self.kinds)
        return poll_s if due_in is None else min(poll_s, max(due_in, 0.05))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()

    def _lease_s(self) -> float:
        longest = max(self._timeout_of(h) for h in self.handlers.values())
        return longest + LEASE_MARGIN_S

    def _timeout_of(self, handler: DeliveryHandler) -> float:
        timeout = getattr(handler, "timeout_s", None)
        return float(timeout) if timeout else self.settings.timeout_s

    async def _deliver(self, claimed: ClaimedDelivery) -> None:
        """One attempt, under its timeout; the outcome goes to the database."""
        handler = self.handlers[claimed.kind]
        timeout_s = self._timeout_of(handler)
        bound = log.bind(
            event_id=str(claimed.event.id),
            target=claimed.target,
            attempt=claimed.attempt,
            event_type=claimed.event.type,
        )
        started = time.monotonic()
        error: str | None = None
        dead_now = False
        try:
            async with asyncio.timeout(timeout_s):
                await handler.deliver(claimed.event, claimed.target)
        except DeliveryRefused as exc:
            error, dead_now = str(exc) or "refused", True
        except DeliveryFailed as exc:
            error = str(exc) or type(exc).__name__
        except TimeoutError:
            error = f"no answer within {timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - a handler's bug must not stop the runner
            bound.exception("delivery handler failed unexpectedly")
            error = f"{type(exc).__name__}: {exc}"
        await self._record(claimed, error, dead_now, bound, time.monotonic() - started)

    async def _record(
        self,
        claimed: ClaimedDelivery,
        error: str | None,
        dead_now: bool,
        bound: structlog.typing.FilteringBoundLogger,
        took_s: float,
    ) -> None:
        retry_in_s: float | None = None
        if error is not None and not dead_now and claimed.attempt < self.settings.max_attempts:
            retry_in_s = retry_delay_s(self.settings, claimed.attempt)
        try:
            async with self.db.connection() as conn:
                if error is None:
                    kept = await deliveries.mark_delivered(conn, claimed)
                    state: str | None = "delivered" if kept else None
                else:
                    state = await deliveries.record_failure(
                        conn, claimed, error, retry_in_s=retry_in_s
                    )
        except (DatabaseUnavailable, DatabaseError) as exc:
            # The claim's lease brings it back; the receiver deduplicates by event id.
            bound.warning("could not record a delivery's outcome", error=str(exc))
            self._count(claimed, "lost", took_s)
            if self.metrics is not None:
                self.metrics.db_errors.labels(component="deliveries").inc()
            return
        self._count(claimed, {None: "lost", "pending": "retry"}.get(state, state), took_s)
        if state is None:
            bound.warning("delivery claim lost before its outcome was recorded")
        elif state == "delivered":
            bound.info("delivered", took_s=round(took_s, 3))
        elif state == "dead":
            bound.warning("delivery dead", error=error)
        else:
            bound.info("delivery failed; will retry", error=error, retry_in_s=retry_in_s)

    def _count(self, claimed: ClaimedDelivery, outcome: str | None, took_s: float) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(kind=claimed.kind, outcome=outcome).inc()
            self.metrics.delivery_latency.labels(kind=claimed.kind).observe(took_s)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        async with self.db.connection() as conn:
            pruned = await deliveries.prune_events(
                conn, older_than_days=self.settings.retention_days
            )
        if pruned:
            log.info(
                "pruned old events", events=pruned, retention_days=self.settings.retention_days
            )

    async def _drain(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=DRAIN_S)

    async def _give_back_in_flight(self) -> None:
        """Cancel what is still in flight and release its claims (else the lease would)."""
        unfinished = dict(self._in_flight)
        for task in unfinished:
            await cancel_and_wait(task)
        if not unfinished:
            return
        try:
            async with self.db.connection() as conn:
                for claimed in unfinished.values():
                    await deliveries.release(conn, claimed)
        except (DatabaseUnavailable, DatabaseError) as exc:
            log.warning("could not give back deliveries in flight", error=str(exc))
        log.info("deliveries in flight given back", count=len(unfinished))

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _wake_on_notices(self, sub: Subscription) -> None:
        async for _notice in sub:
            self._wake.set()

    async def _close_handlers(self) -> None:
        for handler in self.handlers.values():
            close = getattr(handler, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.exception("closing a delivery handler failed")
