"""The MinIO listen loop survives stream failures (pure logic; a fake client)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import structlog
from urllib3.exceptions import ProtocolError

from pipeline.config import S3SourceSettings
from pipeline.metrics import Metrics
from pipeline.sources.listener import listen_forever
from pipeline.sources.registry import WatchedSource


class _Stream:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __enter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __exit__(self, *exc: object) -> None:
        return None


class _FlakyClient:
    """Fails ``failures`` times, then serves ``batches`` one stream each, then stops."""

    def __init__(self, failures: int, batches: list[list[Any]], stop: threading.Event) -> None:
        self.failures = failures
        self.batches = batches
        self.stop = stop
        self.opened = 0

    def listen_bucket_notification(self, bucket: str, **kwargs: Any) -> _Stream:
        self.opened += 1
        if self.failures:
            self.failures -= 1
            raise ProtocolError("connection reset by peer")
        if not self.batches:
            self.stop.set()
            return _Stream([])
        return _Stream(self.batches.pop(0))


def _source(client: _FlakyClient) -> WatchedSource:
    bucket: Any = SimpleNamespace(client=client)
    return WatchedSource(S3SourceSettings(bucket="uploads"), bucket, ("wav",))


def test_listener_reconnects_with_growing_capped_backoff_and_delivers_events() -> None:
    stop = threading.Event()
    record = {"Records": [{"eventName": "s3:ObjectCreated:Put"}]}
    client = _FlakyClient(failures=6, batches=[[record, None], [record]], stop=stop)
    delivered: list[Any] = []
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    with structlog.testing.capture_logs() as logs:
        listen_forever(_source(client), delivered.append, stop, wait=wait, metrics=Metrics())

    assert delivered == [record, record]  # keep-alive blanks (None) are not delivered
    assert waits == sorted(waits) and waits[0] > 0
    assert max(waits) <= 30.0
    assert len(waits) == 6
    warnings = [e for e in logs if e["event"] == "unavailable; retrying with backoff"]
    recovered = [e for e in logs if e["event"] == "available again"]
    assert len(warnings) == 1, "one warning per outage, not one per try"
    assert len(recovered) == 1 and recovered[0]["failed_tries"] == 6


def test_listener_stops_when_asked_during_backoff() -> None:
    stop = threading.Event()
    client = _FlakyClient(failures=100, batches=[], stop=stop)

    def wait(seconds: float) -> bool:
        return True  # the stop event fired while waiting

    listen_forever(_source(client), lambda n: None, stop, wait=wait, metrics=Metrics())
    assert client.opened == 1
