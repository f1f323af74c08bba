"""``/v1/datasets`` and ``/v1/training-runs``.

Datasets are per tenant: a tenant's token sees its own versions, files and runs
only (another tenant's simply do not exist for it); an admin sees every tenant's
and picks one with ``?tenant=``. Served manifests name audio by object key.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.schemas import DatasetVersionDetail, DatasetVersions, TrainingRuns, answers
from gateway.security import require
from pipeline.datasets import queries
from pipeline.datasets.layout import DEFAULT_TENANT
from pipeline.datasets.served import make_servable, served_models
from pipeline.staging import process_staging_dir

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
DatasetReader = Annotated[Principal, Depends(require("datasets:read"))]
RunReader = Annotated[Principal, Depends(require("training:read"))]
ManifestName = Literal["train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl", "dataset.json"]
Name = Annotated[str | None, Query(max_length=200)]
Tenant = Annotated[str | None, Query(max_length=200, description="admin only: whose datasets")]


@router.get("/datasets", responses=answers(DatasetVersions))
async def list_datasets(
    ctx: Ctx, principal: DatasetReader, tenant: Tenant = None
) -> dict[str, Any]:
    """The caller's dataset versions with hours and counts, newest first per name."""
    own = principal.tenant_filter()
    if own is not None and tenant is not None and tenant != own:
        return {"items": []}
    async with ctx.db.connection() as conn:
        rows = await queries.list_versions(conn, tenant=own or tenant)
    return {"items": [_served(row) for row in rows]}


@router.get("/datasets/{version}", responses=answers(DatasetVersionDetail))
async def get_dataset(
    ctx: Ctx, principal: DatasetReader, version: int, name: Name = None, tenant: Tenant = None
) -> dict[str, Any]:
    """One version's stats, filters, checksums and manifest links."""
    row = await _version(ctx, principal, name, tenant, version)
    query = urlencode({"name": row["name"], "tenant": row["tenant"]})
    row["manifests"] = {
        m: f"/v1/datasets/{version}/files/{m}?{query}"
        for m in ("train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl", "dataset.json")
    }
    return row


@router.get(
    "/datasets/{version}/files/{file}",
    response_model=None,
    responses={
        200: {
            "description": "the manifest: JSON lines, or JSON for dataset.json",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def download_manifest(
    ctx: Ctx,
    principal: DatasetReader,
    version: int,
    file: ManifestName,
    name: Name = None,
    tenant: Tenant = None,
) -> FileResponse:
    """Stream a manifest of a frozen version (through a temp file, never held in memory)."""
    row = await _version(ctx, principal, name, tenant, version)
    if row["state"] != "frozen":
        raise ApiError(
            409,
            f"version {version} is {row['state']}",
            kind="not-frozen",
            title="Version not frozen",
        )
    path = await asyncio.to_thread(_fetch, ctx, f"{row['prefix']}/{file}", file == "dataset.json")
    media = "application/json" if file.endswith(".json") else "application/x-ndjson"
    return FileResponse(
        path,
        media_type=media,
        filename=file,
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def _fetch(ctx: AppContext, key: str, description: bool) -> Path:
    staging = process_staging_dir(ctx.settings.temp_dir)
    fd, name = tempfile.mkstemp(prefix="manifest-", dir=staging)
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            ctx.store.download(key, out)
        make_servable(path, description=description)  # for versions frozen before 0005
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def _version(
    ctx: AppContext, principal: Principal, name: str | None, tenant: str | None, version: int
) -> dict[str, Any]:
    """A version of the caller's tenant (an admin's: ``tenant``, else its own or default)."""
    own = principal.tenant_filter()
    if own is not None and tenant is not None and tenant != own:
        raise ApiError(404, "no such dataset version")
    whose = own or tenant or principal.tenant or DEFAULT_TENANT
    async with ctx.db.connection() as conn:
        row = await queries.get_version(
            conn, tenant=whose, name=name or ctx.settings.dataset.name, version=version
        )
    if row is None:
        raise ApiError(404, "no such dataset version")
    return _served(row)


def _served(row: dict[str, Any]) -> dict[str, Any]:
    """A version row with its ASR models named without server paths."""
    row["model"] = served_models(row["model"])
    return row


@router.get("/training-runs", responses=answers(TrainingRuns))
async def list_training_runs(
    ctx: Ctx, principal: RunReader, limit: int = 50, tenant: Tenant = None
) -> dict[str, Any]:
    """The caller's training runs newest first: state, version, launcher, exit code."""
    own = principal.tenant_filter()
    if own is not None and tenant is not None and tenant != own:
        return {"items": []}
    size = max(1, min(limit, ctx.settings.gateway.page_size_max))
    async with ctx.db.connection() as conn:
        rows = await queries.list_runs(conn, size, tenant=own or tenant)
    return {"items": rows}
