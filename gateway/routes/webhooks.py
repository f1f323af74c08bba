"""``/v1/webhooks``: endpoints told of audio state changes, and their deliveries.

A tenant's token (scope ``webhooks:manage``) sees and manages its own tenant's
endpoints and deliveries only (another tenant's do not exist for it); an admin
sees every tenant's and registers for one with ``tenant``. An endpoint's secret is
shown once, in the answer to its registration (or to the change that rotates it),
never listed. ``PATCH`` changes an endpoint's URL, events, whether it is enabled, and
its secret. Endpoints from the settings (origin ``config``) are changed there, not here.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.schemas import ChangedWebhook, Deliveries, NewWebhookSecret, Webhooks, answers
from gateway.security import require
from pipeline.config import WebhookEventType
from pipeline.db import deliveries
from pipeline.deliveries.addresses import (
    UnsafeUrl,
    private_addresses_allowed,
    resolve_destination,
)
from pipeline.errors import Conflict

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
Manager = Annotated[Principal, Depends(require("webhooks:manage"))]
DEFAULT_EVENTS: tuple[WebhookEventType, ...] = (
    "audio.transcribed",
    "audio.failed",
    "audio.rejected",
)


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked by resolve_destination (http(s), a public address): 422 with the reason.
    url: str = Field(min_length=1, max_length=2000)
    # Generated (and returned once) when not given.
    secret: str | None = Field(default=None, min_length=16, max_length=200)
    events: list[WebhookEventType] = Field(default=list(DEFAULT_EVENTS), min_length=1)
    # Admins only: whose endpoint it is (default: the token's tenant, else "default").
    tenant: str | None = Field(default=None, min_length=1, max_length=200)


class WebhookChanges(BaseModel):
    """What to change of an endpoint; what is not given stays as it is."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[WebhookEventType] | None = Field(default=None, min_length=1)
    enabled: bool | None = None
    # A new secret: this one, or one generated with ``rotate_secret`` (shown once).
    secret: str | None = Field(default=None, min_length=16, max_length=200)
    rotate_secret: bool = False


@router.get("/webhooks", responses=answers(Webhooks))
async def list_webhooks(ctx: Ctx, principal: Manager) -> dict[str, Any]:
    """The caller's endpoints (an admin: everyone's), with counts of their deliveries."""
    async with ctx.db.connection() as conn:
        rows = await deliveries.list_webhooks(conn, tenant=principal.tenant_filter())
    return {"items": rows}


@router.post("/webhooks", status_code=201, responses=answers(NewWebhookSecret, 201))
async def create_webhook(ctx: Ctx, principal: Manager, body: NewWebhook) -> dict[str, Any]:
    """Register an endpoint; the answer holds its signing secret, the only time it is shown."""
    own = principal.tenant_filter()
    if own is not None and body.tenant is not None and body.tenant != own:
        raise ApiError(403, "a tenant's token registers webhooks for its own tenant only")
    tenant = own or body.tenant or principal.tenant or "default"
    try:
        await resolve_destination(body.url, allow_private=private_addresses_allowed(ctx.settings))
    except UnsafeUrl as exc:
        raise ApiError(422, f"webhook URL refused: {exc}", kind="unsafe-url") from None
    secret = body.secret or secrets.token_urlsafe(32)
    try:
        async with ctx.db.connection() as conn:
            row = await deliveries.create_webhook(
                conn,
                tenant=tenant,
                url=body.url,
                secret=secret,
                event_types=list(dict.fromkeys(body.events)),
            )
    except Conflict:
        raise ApiError(409, f"tenant {tenant} already has a webhook for this URL") from None
    return {**row, "secret": secret}


@router.patch("/webhooks/{webhook_id}", responses=answers(ChangedWebhook))
async def change_webhook(
    ctx: Ctx, principal: Manager, webhook_id: uuid.UUID, body: WebhookChanges
) -> dict[str, Any]:
    """Change an endpoint registered here: URL, events, enabled, secret.

    Deliveries not made yet go to the endpoint as it is when they are made (a new URL,
    signed with the new secret). A new secret is in the answer, the only time it is shown.
    """
    if body.secret is not None and body.rotate_secret:
        raise ApiError(400, "give a secret or ask for a generated one (rotate_secret), not both")
    if body.model_dump(exclude_defaults=True) == {}:
        raise ApiError(400, "nothing to change: give url, events, enabled, secret or rotate_secret")
    if body.url is not None:
        try:
            allow = private_addresses_allowed(ctx.settings)
            await resolve_destination(body.url, allow_private=allow)
        except UnsafeUrl as exc:
            raise ApiError(422, f"webhook URL refused: {exc}", kind="unsafe-url") from None
    secret = secrets.token_urlsafe(32) if body.rotate_secret else body.secret
    events = list(dict.fromkeys(body.events)) if body.events is not None else None
    tenant = principal.tenant_filter() or "its tenant"
    try:
        async with ctx.db.connection() as conn:
            tenant = (await _api_webhook(conn, webhook_id, principal, "change"))["tenant"]
            changed = await deliveries.update_webhook(
                conn,
                webhook_id,
                url=body.url,
                secret=secret,
                event_types=events,
                enabled=body.enabled,
            )
    except Conflict:
        raise ApiError(409, f"tenant {tenant} already has a webhook for this URL") from None
    if changed is None:
        raise ApiError(404, "no such webhook")
    return {**changed, "secret": secret}  # None unless changed: never shown otherwise


async def _api_webhook(
    conn: Any, webhook_id: uuid.UUID, principal: Principal, action: str
) -> dict[str, Any]:
    """The caller's endpoint ``webhook_id``, registered through this API; else 404/409."""
    row = await deliveries.get_webhook(conn, webhook_id, tenant=principal.tenant_filter())
    if row is None:
        raise ApiError(404, "no such webhook")
    if row["origin"] != "api":
        raise ApiError(
            409,
            f"this webhook comes from the settings (deliveries.webhooks); {action} it there",
            kind="configured-webhook",
        )
    return row


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(ctx: Ctx, principal: Manager, webhook_id: uuid.UUID) -> Response:
    """Delete an endpoint registered here; its pending deliveries are dropped."""
    async with ctx.db.connection() as conn:
        await _api_webhook(conn, webhook_id, principal, "remove")
        await deliveries.delete_webhook(conn, webhook_id)
    return Response(status_code=204)


@router.get("/webhooks/deliveries", responses=answers(Deliveries))
async def list_deliveries(
    ctx: Ctx,
    principal: Manager,
    state: Literal["pending", "delivered", "dead"] | None = None,
    webhook_id: Annotated[uuid.UUID | None, Query(description="one endpoint's only")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Deliveries to webhooks, newest event first: state, attempts, last error."""
    target = deliveries.webhook_target(webhook_id) if webhook_id else None
    async with ctx.db.connection() as conn:
        rows = await deliveries.list_deliveries(
            conn,
            tenant=principal.tenant_filter(),
            state=state,
            target=target,
            kind="webhook",
            limit=limit,
        )
    return {"items": rows}


@router.post("/webhooks/deliveries/{event_id}/retry", responses=answers(Deliveries))
async def retry_deliveries(ctx: Ctx, principal: Manager, event_id: uuid.UUID) -> dict[str, Any]:
    """Put an event's dead webhook deliveries back in the queue with fresh attempts."""
    tenant = principal.tenant_filter()
    async with ctx.db.connection() as conn:
        retried = await deliveries.retry_delivery(conn, event_id, tenant=tenant, kind="webhook")
        if not retried and not await deliveries.event_exists(conn, event_id, tenant=tenant):
            raise ApiError(404, "no such event")
    if not retried:
        raise ApiError(409, "no dead webhook delivery of this event", kind="not-dead")
    return {"items": retried}
