"""Signed webhook POSTs: the handler for 'webhook:<id>' targets.

The body is a small CloudEvents-style JSON document (see README "Webhooks"); its
``id`` is the event's, the same on every retry, so receivers deduplicate by it. Each
request is signed: ``X-Ai2text-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed by the endpoint's secret>``. Redirects are not followed (a
3xx is a failure), and the connection goes to the address that passed the SSRF check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import structlog
from pydantic_core import to_jsonable_python

from pipeline.config import DeliverySettings
from pipeline.db import deliveries
from pipeline.db.database import Database
from pipeline.deliveries.addresses import (
    Destination,
    UnresolvedHost,
    UnsafeUrl,
    resolve_destination,
)
from pipeline.deliveries.base import DeliveryFailed, Event
from pipeline.deliveries.errors import DeliveryRefused

log = structlog.get_logger(__name__)

SOURCE = "ai2text"
TYPE_PREFIX = "ai2text."
SIGNATURE_HEADER = "X-Ai2text-Signature"
EVENT_ID_HEADER = "X-Ai2text-Event-Id"
USER_AGENT = "ai2text-webhooks/1"
# How much of a refusing receiver's answer is kept in the delivery's last_error.
ERROR_SNIPPET_CHARS = 200


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event_document(event: Event, audio: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON a receiver gets for ``event`` (``audio``: its row, if it still exists)."""
    audio_id = str(event.audio_id)
    data: dict[str, Any] = {
        "audio_id": audio_id,
        "name": audio["original_name"] if audio else None,
        "state": event.state,
        "tenant": event.tenant,
    }
    if event.state in ("failed", "rejected"):
        reason = audio.get("error") if audio else None
        data["error" if event.state == "failed" else "reason"] = reason
    data["links"] = {
        "audio": f"/v1/audio/{audio_id}",
        "transcript": f"/v1/audio/{audio_id}/transcript",
    }
    return {
        "specversion": "1.0",
        "id": str(event.id),
        "type": TYPE_PREFIX + event.type,
        "source": SOURCE,
        "subject": audio_id,
        "time": to_jsonable_python(event.occurred_at),
        "datacontenttype": "application/json",
        "data": data,
    }


class WebhookHandler:
    """Delivers events to webhook endpoints; one HTTP client for all of them."""

    def __init__(
        self,
        db: Database,
        settings: DeliverySettings,
        *,
        allow_private: bool,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.allow_private = allow_private
        self.timeout_s = settings.timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
            follow_redirects=False,
            trust_env=False,  # a proxy would resolve the name again, past the address check
            # No kept-alive connections: a pooled one is keyed by the address alone, and
            # could carry one host's request over a TLS session verified for another's.
            limits=httpx.Limits(
                max_connections=settings.concurrency * 2, max_keepalive_connections=0
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, event: Event, target: str) -> None:
        webhook_id = _webhook_id(target)
        async with self.db.connection() as conn:
            hook = await deliveries.get_webhook_target(conn, webhook_id)
            audio = await deliveries.audio_summary(conn, event.audio_id)
        if hook is None:
            raise DeliveryRefused("the webhook was deleted")
        if not hook.enabled:
            raise DeliveryRefused("the webhook is disabled (no longer configured)")
        try:
            destination = await resolve_destination(hook.url, allow_private=self.allow_private)
        except UnresolvedHost as exc:
            raise DeliveryFailed(f"{hook.url}: {exc}") from None
        except UnsafeUrl as exc:
            raise DeliveryRefused(f"refused to deliver to {hook.url}: {exc}") from None
        body = json.dumps(event_document(event, audio), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: str(event.id),
            SIGNATURE_HEADER: sign(hook.secret, body, int(time.time())),
        }
        await self._post(hook.url, destination, body, headers)

    async def _post(
        self, url: str, destination: Destination, body: bytes, headers: dict[str, str]
    ) -> None:
        """POST to the checked address (trying each in turn if one cannot be reached)."""
        original = httpx.URL(url)
        errors: list[str] = []
        for address in destination.addresses:
            pinned = original.copy_with(host=address)
            extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
            request = self._client.build_request(
                "POST",
                pinned,
                content=body,
                headers={**headers, "Host": _host_header(original)},
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True)
                try:
                    snippet = "" if response.is_success else await _first_chars(response)
                finally:
                    await response.aclose()
            except httpx.ConnectError as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
                continue
            except httpx.TimeoutException:
                raise DeliveryFailed(f"{url}: no answer within {self.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"{url}: {type(exc).__name__}: {exc}") from None
            _check(url, response, snippet)
            return
        raise DeliveryFailed(f"{url}: cannot connect ({'; '.join(errors)})")


async def _first_chars(response: httpx.Response) -> str:
    """The start of a refusing receiver's answer, never more of it than that."""
    async for chunk in response.aiter_bytes():
        return chunk[:ERROR_SNIPPET_CHARS].decode("utf-8", "replace")
    return ""


def _check(url: str, response: httpx.Response, snippet: str) -> None:
    if response.is_success:
        return
    status = f"{response.status_code} {response.reason_phrase}".strip()
    if response.is_redirect:
        where = response.headers.get("location", "")
        raise DeliveryFailed(f"{url} answered {status} (redirects are not followed) to {where}")
    snippet = " ".join(snippet.split())
    raise DeliveryFailed(f"{url} answered {status}" + (f": {snippet}" if snippet else ""))


def _host_header(url: httpx.URL) -> str:
    host = url.host if ":" not in url.host else f"[{url.host}]"
    return host if url.port is None else f"{host}:{url.port}"


def _webhook_id(target: str) -> uuid.UUID:
    try:
        return uuid.UUID(target.removeprefix(deliveries.WEBHOOK_PREFIX))
    except ValueError:
        raise DeliveryRefused(f"not a webhook target: {target}") from None
