"""Liveness, readiness and metrics. Bodies say nothing about versions, hosts or counts."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.schemas import Ready
from gateway.security import require

router = APIRouter()


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    """The process is alive."""
    return "ok"


@router.get(
    "/readyz",
    response_model=None,
    responses={
        200: {"model": Ready},
        503: {"model": Ready, "description": "database or object storage unreachable"},
    },
)
async def readyz(ctx: Annotated[AppContext, Depends(get_context)]) -> Response:
    """Database and object storage reachable."""
    try:
        async with ctx.db.connection() as conn:
            await conn.execute("SELECT 1")
        await asyncio.to_thread(ctx.store.check)
    except Exception:  # noqa: BLE001 - any database or storage failure means "not ready"
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    response_model=None,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("admin"))],
) -> Response:
    """Prometheus text format of the whole process (admin only)."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
