"""Reading dataset versions and training runs (CLI and gateway)."""

from __future__ import annotations

from typing import Any

from pipeline.db.database import AsyncConn


async def list_versions(conn: AsyncConn, name: str | None = None) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, name, version, state, prefix, audio_hours, utterance_hours, stats, model,"
        " manifest_sha256, created_at, frozen_at FROM dataset_versions"
        " WHERE (%(name)s::text IS NULL OR name = %(name)s) ORDER BY name, version DESC",
        {"name": name},
    )
    return await cur.fetchall()


async def get_version(conn: AsyncConn, name: str, version: int) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, name, version, state, prefix, audio_hours, utterance_hours, stats, model,"
        " filters, manifest_sha256, created_at, frozen_at FROM dataset_versions"
        " WHERE name = %s AND version = %s",
        (name, version),
    )
    return await cur.fetchone()


async def audio_keys(conn: AsyncConn, version_id: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT a.storage_key FROM dataset_items i JOIN audio a ON a.id = i.audio_id"
        " WHERE i.version_id = %s",
        (version_id,),
    )
    return await cur.fetchall()


async def list_runs(conn: AsyncConn, limit: int = 50) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT r.id, r.state, r.launcher, v.name AS dataset, v.version, r.started_at,"
        " r.finished_at, r.exit_code, r.http_status, r.remote_id, r.log_key, r.error,"
        " r.created_at FROM training_runs r JOIN dataset_versions v ON v.id = r.version_id"
        " ORDER BY r.created_at DESC LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()
