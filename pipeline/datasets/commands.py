"""What ``ai2text dataset stats`` and ``ai2text dataset freeze`` do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.datasets.eligibility import eligible_hours
from pipeline.datasets.freeze import Freezer
from pipeline.datasets.materialize import materialize
from pipeline.datasets.queries import audio_keys, list_versions
from pipeline.db.database import AsyncConn, Database
from pipeline.storage import ObjectStore


async def dataset_stats(conn: AsyncConn, settings: Settings) -> dict[str, Any]:
    return {
        "name": settings.dataset.name,
        "eligible_hours": await eligible_hours(conn, settings.dataset),
        "threshold_hours": settings.training.threshold_hours,
        "versions": await list_versions(conn, settings.dataset.name),
    }


async def freeze_now(
    settings: Settings, db: Database, store: ObjectStore, materialize_dir: Path | None
) -> dict[str, Any]:
    frozen = await Freezer(settings, db, store).freeze()
    result: dict[str, Any] = {
        "name": frozen.name,
        "version": frozen.version,
        "location": store.uri(frozen.prefix),
        "audio_hours": frozen.audio_hours,
        "utterance_hours": frozen.utterance_hours,
        "stats": frozen.stats,
    }
    if materialize_dir is not None:
        async with db.connection() as conn:
            keys = [str(r["storage_key"]) for r in await audio_keys(conn, frozen.id)]
        mapping = {store.uri(k): k for k in keys}
        dest = await asyncio.to_thread(
            materialize_into, store, frozen.prefix, mapping, materialize_dir
        )
        result["materialized"] = str(dest)
    return result


def materialize_into(store: ObjectStore, prefix: str, mapping: dict[str, str], where: Path) -> Path:
    dest = where.expanduser().absolute()
    materialize(store, prefix, mapping, dest)
    return dest


def describe(result: dict[str, Any]) -> str:
    if "versions" in result:
        lines = [
            f"dataset {result['name']}: {result['eligible_hours']:.3f} eligible hours"
            f" (training threshold {result['threshold_hours']:g} h)"
        ]
        for v in result["versions"]:
            hours = f"{v['audio_hours']:.3f} h" if v["audio_hours"] is not None else "-"
            lines.append(f"  v{v['version']}  {v['state']:9}  {hours}  {v['prefix']}")
        return "\n".join(lines) + "\n"
    text = (
        f"froze {result['name']} v{result['version']} at {result['location']}:"
        f" {result['stats']['utterances']} utterances, {result['audio_hours']:.3f} audio hours\n"
    )
    if "materialized" in result:
        text += f"audio and manifests copied to {result['materialized']}\n"
    return text
