"""What ``ai2text dataset stats`` and ``ai2text dataset freeze`` do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.datasets.eligibility import eligible_hours_by_tenant
from pipeline.datasets.freeze import Freezer
from pipeline.datasets.layout import DEFAULT_TENANT
from pipeline.datasets.materialize import materialize
from pipeline.datasets.queries import audio_keys, list_versions
from pipeline.db.database import AsyncConn, Database
from pipeline.storage import ObjectStore


async def dataset_stats(
    conn: AsyncConn, settings: Settings, tenant: str | None = None
) -> dict[str, Any]:
    """Eligible hours (in all and per tenant) and versions, of one tenant or of all."""
    by_tenant = await eligible_hours_by_tenant(conn, settings.dataset)
    if tenant is not None:
        by_tenant = {tenant: by_tenant.get(tenant, 0.0)}
    return {
        "name": settings.dataset.name,
        "eligible_hours": sum(by_tenant.values()),
        "eligible_hours_by_tenant": by_tenant,
        "threshold_hours": settings.training.threshold_hours,
        "versions": await list_versions(conn, settings.dataset.name, tenant=tenant),
    }


async def freeze_now(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    materialize_dir: Path | None,
    tenant: str = DEFAULT_TENANT,
) -> dict[str, Any]:
    """Freeze a version of ``tenant``'s dataset now, optionally copying it to local disk."""
    freezer = Freezer(db, store, dataset=settings.dataset, temp_dir=settings.temp_dir)
    frozen = await freezer.freeze(tenant=tenant)
    result: dict[str, Any] = {
        "tenant": frozen.tenant,
        "name": frozen.name,
        "version": frozen.version,
        "location": store.uri(frozen.prefix),
        "audio_hours": frozen.audio_hours,
        "utterance_hours": frozen.utterance_hours,
        "stats": frozen.stats,
    }
    if materialize_dir is not None:
        async with db.connection() as conn:
            keys = await audio_keys(conn, frozen.id)
        dest = await asyncio.to_thread(
            materialize_into, store, frozen.prefix, keys, materialize_dir
        )
        result["materialized"] = str(dest)
    return result


def materialize_into(store: ObjectStore, prefix: str, keys: list[str], where: Path) -> Path:
    dest = where.expanduser().absolute()
    materialize(store, prefix, keys, dest)
    return dest


def describe(result: dict[str, Any]) -> str:
    if "versions" in result:
        lines = [
            f"dataset {result['name']}: {result['eligible_hours']:.3f} eligible hours"
            f" (training threshold {result['threshold_hours']:g} h per tenant)"
        ]
        by_tenant = result["eligible_hours_by_tenant"]
        if list(by_tenant) not in ([], [DEFAULT_TENANT]):
            lines.extend(f"  tenant {t}: {h:.3f} eligible hours" for t, h in by_tenant.items())
        for v in result["versions"]:
            hours = f"{v['audio_hours']:.3f} h" if v["audio_hours"] is not None else "-"
            lines.append(
                f"  {v['tenant']}  v{v['version']}  {v['state']:9}  {hours}  {v['prefix']}"
            )
        return "\n".join(lines) + "\n"
    text = (
        f"froze {result['name']} v{result['version']} of tenant {result['tenant']}"
        f" at {result['location']}: {result['stats']['utterances']} utterances,"
        f" {result['audio_hours']:.3f} audio hours\n"
    )
    if "materialized" in result:
        text += f"audio and manifests copied to {result['materialized']}\n"
    return text
