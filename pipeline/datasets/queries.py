"""Reading dataset versions and training runs (CLI and gateway).

Like :mod:`pipeline.catalog`, every query takes ``tenant``: a tenant name limits
rows to that tenant's versions and runs, ``None`` (an operator) sees all.
"""

from __future__ import annotations

from typing import Any

from pipeline.db.database import AsyncConn

_VERSION_COLUMNS = (
    "id, tenant, name, version, languages, state, prefix, audio_hours, utterance_hours, stats,"
    " model, manifest_sha256, created_at, frozen_at"
)


async def list_versions(
    conn: AsyncConn, name: str | None = None, *, tenant: str | None = None
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM dataset_versions"  # noqa: S608 - a constant
        " WHERE (%(name)s::text IS NULL OR name = %(name)s)"
        " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
        " ORDER BY name, tenant, version DESC",
        {"name": name, "tenant": tenant},
    )
    return await cur.fetchall()


async def get_version(
    conn: AsyncConn, *, tenant: str, name: str, version: int
) -> dict[str, Any] | None:
    """One version of ``tenant``'s dataset ``name`` (numbers count per tenant)."""
    cur = await conn.execute(
        f"SELECT {_VERSION_COLUMNS}, filters FROM dataset_versions"  # noqa: S608 - a constant
        " WHERE tenant = %s AND name = %s AND version = %s",
        (tenant, name, version),
    )
    return await cur.fetchone()


async def audio_keys(conn: AsyncConn, version_id: int) -> list[str]:
    """The object keys of the audio a version holds."""
    cur = await conn.execute(
        "SELECT a.storage_key FROM dataset_items i JOIN audio a ON a.id = i.audio_id"
        " WHERE i.version_id = %s",
        (version_id,),
    )
    return [str(r["storage_key"]) for r in await cur.fetchall()]


async def list_runs(
    conn: AsyncConn, limit: int = 50, *, tenant: str | None = None
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT r.id, r.state, r.launcher, v.tenant, v.name AS dataset, v.version, v.languages,"
        " r.started_at, r.finished_at, r.exit_code, r.http_status, r.remote_id, r.log_key,"
        " r.error, r.created_at FROM training_runs r JOIN dataset_versions v ON v.id = r.version_id"
        " WHERE (%(tenant)s::text IS NULL OR v.tenant = %(tenant)s)"
        " ORDER BY r.created_at DESC LIMIT %(limit)s",
        {"tenant": tenant, "limit": limit},
    )
    return await cur.fetchall()
