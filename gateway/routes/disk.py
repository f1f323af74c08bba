"""``GET /v1/disk``: free space against each configured floor (admin only).

Three floors keep a full disk from breaking the service: the hot folder stops taking
files below ``watch.min_free_bytes`` on the data directory, uploads are refused (503)
below it on the staging directory, and a training run does not start below
``training.min_free_bytes`` where its dataset is materialised. This answers, for the
disks this gateway's process sees, how far each is from its floor.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.security import require
from pipeline.config import Settings

router = APIRouter(prefix="/v1")

Ctx = Annotated[AppContext, Depends(get_context)]
Admin = Annotated[Principal, Depends(require("admin"))]


class DiskFloor(BaseModel):
    """One disk and the floor that guards it."""

    name: str
    path: str
    free_bytes: int | None
    total_bytes: int | None
    floor_bytes: int
    below_floor: bool
    effect: str


class DiskState(BaseModel):
    items: list[DiskFloor]


def _floors(settings: Settings) -> list[tuple[str, Path, int, str]]:
    floors = [
        (
            "data",
            settings.data_dir,
            settings.watch.min_free_bytes,
            "the hot folder stops taking new files",
        ),
        (
            "staging",
            settings.temp_dir,
            settings.watch.min_free_bytes,
            "uploads are refused with 503",
        ),
    ]
    if settings.training.enabled:
        floors.append(
            (
                "training",
                settings.training.materialize_dir or settings.data_dir,
                settings.training.min_free_bytes,
                "training runs do not start",
            )
        )
    return floors


def _measure(name: str, path: Path, floor: int, effect: str) -> DiskFloor:
    try:
        usage = shutil.disk_usage(path)
    except OSError:  # not created yet, or gone: nothing to measure, nothing below
        return DiskFloor(
            name=name,
            path=str(path),
            free_bytes=None,
            total_bytes=None,
            floor_bytes=floor,
            below_floor=False,
            effect=effect,
        )
    return DiskFloor(
        name=name,
        path=str(path),
        free_bytes=usage.free,
        total_bytes=usage.total,
        floor_bytes=floor,
        below_floor=usage.free < floor,
        effect=effect,
    )


@router.get("/disk")
async def disk_state(ctx: Ctx, principal: Admin) -> DiskState:
    """Free space of the data, staging and training disks against their floors."""
    items = [await asyncio.to_thread(_measure, *floor) for floor in _floors(ctx.settings)]
    return DiskState(items=items)
