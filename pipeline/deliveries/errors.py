"""Failures past retrying."""

from __future__ import annotations

from pipeline.deliveries.base import DeliveryFailed


class DeliveryRefused(DeliveryFailed):
    """Retrying cannot help (the endpoint was deleted, its address is not allowed): the
    delivery is dead at once, with this reason."""
