"""``/v1/datasets`` and ``/v1/training-runs``."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.security import require
from pipeline.datasets import queries

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
DatasetReader = Annotated[Principal, Depends(require("datasets:read"))]
RunReader = Annotated[Principal, Depends(require("training:read"))]
ManifestName = Literal["train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl", "dataset.json"]


@router.get("/datasets")
async def list_datasets(ctx: Ctx, principal: DatasetReader) -> dict[str, Any]:
    """Every dataset version with its hours and counts, newest first per name."""
    async with ctx.db.connection() as conn:
        return {"items": await queries.list_versions(conn)}


@router.get("/datasets/{version}")
async def get_dataset(
    ctx: Ctx, principal: DatasetReader, version: int, name: str | None = None
) -> dict[str, Any]:
    """One version's stats, filters, checksums and manifest links."""
    row = await _version(ctx, name, version)
    row["manifests"] = {
        m: f"/v1/datasets/{version}/files/{m}?name={row['name']}"
        for m in ("train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl", "dataset.json")
    }
    return row


@router.get("/datasets/{version}/files/{file}", response_model=None)
async def download_manifest(
    ctx: Ctx, principal: DatasetReader, version: int, file: ManifestName, name: str | None = None
) -> FileResponse:
    """Stream a manifest of a frozen version (through a temp file, never held in memory)."""
    row = await _version(ctx, name, version)
    if row["state"] != "frozen":
        raise ApiError(
            409,
            f"version {version} is {row['state']}",
            kind="not-frozen",
            title="Version not frozen",
        )
    path = await asyncio.to_thread(_fetch, ctx, f"{row['prefix']}/{file}")
    media = "application/json" if file.endswith(".json") else "application/x-ndjson"
    return FileResponse(
        path,
        media_type=media,
        filename=file,
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def _fetch(ctx: AppContext, key: str) -> Path:
    ctx.settings.temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="ai2text-manifest-", dir=ctx.settings.temp_dir)
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            ctx.store.download(key, out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def _version(ctx: AppContext, name: str | None, version: int) -> dict[str, Any]:
    async with ctx.db.connection() as conn:
        row = await queries.get_version(conn, name or ctx.settings.dataset.name, version)
    if row is None:
        raise ApiError(404, "no such dataset version")
    return row


@router.get("/training-runs")
async def list_training_runs(ctx: Ctx, principal: RunReader, limit: int = 50) -> dict[str, Any]:
    """Training runs newest first: state, version, launcher, exit code or HTTP status."""
    async with ctx.db.connection() as conn:
        rows = await queries.list_runs(conn, max(1, min(limit, ctx.settings.gateway.page_size_max)))
    return {"items": rows}
