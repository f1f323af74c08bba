"""What every delivery target is handed, and how it says "try again later".

The ``events`` table is the outbox: a trigger writes one row per audio state change in
the same transaction as the change (migration 0010), and a ``deliveries`` row for each
target that must hear of it ('webhook:<id>', 'outbox', 'bucket'). A runner claims due
deliveries and calls the handler registered for the target's kind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Event:
    """One audio state change, as the ``events`` table holds it."""

    id: uuid.UUID
    seq: int
    tenant: str
    type: str  # "audio." + state
    audio_id: uuid.UUID
    state: str
    occurred_at: datetime


class DeliveryFailed(Exception):
    """The target could not take the event now; the runner retries it with backoff."""


class DeliveryHandler(Protocol):
    """Delivers one event to one target; raises ``DeliveryFailed`` to be retried.

    ``target`` is the full target name (e.g. ``webhook:<uuid>``); the runner picks the
    handler by the part before the colon. Returning normally marks it delivered, so
    a handler with nothing to do for an event (no outbox configured) just returns.
    A handler is called again for an event it may already have delivered (at least
    once), so what it does must be idempotent.
    """

    async def deliver(self, event: Event, target: str) -> None: ...
