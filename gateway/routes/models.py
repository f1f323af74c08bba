"""``/v1/models/registry``: trained models, promotion and rollback (admin only).

The registry is shared by every tenant (workers run one promoted model for all),
so listing it and changing it take the ``admin`` scope. Promotion runs the same
gate as ``ai2text models promote``; a refusal is 409 with the gate's reason (and is
recorded on the model); ``force`` promotes anyway and records that it was forced.
OpenAI's own ``GET /v1/models`` (the names a call may use) is in ``openai_compat``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.security import require
from pipeline.errors import Conflict
from pipeline.registry import candidates, records

router = APIRouter(prefix="/v1/models/registry")

Ctx = Annotated[AppContext, Depends(get_context)]
Admin = Annotated[Principal, Depends(require("admin"))]


class RegisteredModel(BaseModel):
    """One trained model: where it came from, what it measured, whether workers run it."""

    id: str
    name: str
    state: str
    base_model: str
    base_model_id: str | None
    dataset_version_id: int | None
    tenant: str | None
    run_id: str | None
    # The run's metrics.json: WER per split and language, for both models.
    metrics: dict[str, Any]
    size_bytes: int
    prefix: str
    # Why the last promotion decision went as it did.
    decision: str | None
    created_by: str
    created_at: datetime
    promoted_at: datetime | None
    promoted_by: str | None
    retired_at: datetime | None
    retired_by: str | None


class RegistryList(BaseModel):
    items: list[RegisteredModel]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Promote even when the gate says no (the reason records that it was forced).
    force: bool = False


class Promoted(BaseModel):
    model: RegisteredModel
    reason: str


class RolledBack(BaseModel):
    retired: RegisteredModel
    # The model promoted again; None: workers return to the configured asr.model.
    promoted: RegisteredModel | None


def _entry(model: records.ModelRecord) -> RegisteredModel:
    return RegisteredModel.model_validate(model.as_dict())


@router.get("", response_model=RegistryList)
async def list_registry(ctx: Ctx, principal: Admin) -> RegistryList:
    """Every registered model: the promoted one first, then newest first."""
    async with ctx.db.connection() as conn:
        rows = await records.list_models(conn)
    return RegistryList(items=[_entry(m) for m in rows])


@router.post("/rollback", response_model=RolledBack)
async def rollback(ctx: Ctx, principal: Admin) -> RolledBack:
    """Retire the promoted model; the one promoted before it runs again (or asr.model)."""
    try:
        async with ctx.db.connection() as conn:
            retired, restored = await records.rollback(conn, actor=_actor(principal))
    except Conflict as exc:
        raise ApiError(409, str(exc), kind="nothing-to-roll-back") from None
    return RolledBack(
        retired=_entry(retired), promoted=_entry(restored) if restored is not None else None
    )


@router.post("/{ref}/promote", response_model=Promoted)
async def promote(
    ctx: Ctx,
    principal: Admin,
    ref: Annotated[str, Field(min_length=1, max_length=100)],
    body: Annotated[PromoteRequest | None, Body()] = None,
) -> Promoted:
    """Promote ``ref`` (id, name or id prefix) if the gate allows; 409 with why if not."""
    rules = candidates.rules_of(ctx.settings.training)
    force = body.force if body is not None else False
    try:
        model, decision = await candidates.judge(
            ctx.db, ref, rules, actor=_actor(principal), force=force
        )
    except records.ModelNotFound as exc:
        raise ApiError(404, str(exc), kind="model-not-found") from None
    except Conflict as exc:
        raise ApiError(409, str(exc), kind="promotion-refused") from None
    if not decision.promote:
        raise ApiError(
            409, decision.reason, kind="promotion-refused", title="Promotion refused by the gate"
        )
    return Promoted(model=_entry(model), reason=decision.reason)


def _actor(principal: Principal) -> str:
    return f"api:{principal.subject}"
