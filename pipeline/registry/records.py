"""The ``models`` table: the only code that writes it.

Every change (a candidate registered, a promotion, a refusal, a rollback) is one
transaction that also appends to ``model_events`` and sends a NOTIFY on
``MODELS_CHANNEL``, delivered at commit: workers hear of a promotion once it is true.

Rollback follows the promotion history as a stack: each promotion pushes, each
rollback pops, and the model below (if any) is promoted again; with none left,
workers return to the configured ``asr.model``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pipeline.db.database import AsyncConn
from pipeline.errors import Ai2TextError, Conflict

MODELS_CHANNEL = "ai2text_models"
STATES = ("candidate", "promoted", "retired")
_COLUMNS = (
    "id, name, base_model, base_model_id, dataset_version_id, tenant, run_id, metrics, size_bytes,"
    " prefix, files, state, decision, created_by, created_at, promoted_at, promoted_by,"
    " retired_at, retired_by"
)


class ModelNotFound(Ai2TextError):
    """No registered model has that id or name."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One registered model, as the table holds it."""

    id: uuid.UUID
    name: str
    base_model: str
    base_model_id: uuid.UUID | None
    dataset_version_id: int | None
    tenant: str | None
    run_id: uuid.UUID | None
    metrics: dict[str, Any]
    size_bytes: int
    prefix: str
    files: list[dict[str, Any]]
    state: str
    decision: str | None
    created_by: str
    created_at: datetime
    promoted_at: datetime | None
    promoted_by: str | None
    retired_at: datetime | None
    retired_by: str | None

    @property
    def file_list(self) -> list[ModelFile]:
        return [ModelFile(str(f["name"]), int(f["size"]), str(f["sha256"])) for f in self.files]

    def wer(self, model: str, split: str) -> float | None:
        value = (self.metrics.get("wer") or {}).get(model, {}).get(split)
        return float(value) if isinstance(value, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (CLI ``--json`` and the API); the file list without server paths."""
        return {
            "id": str(self.id),
            "name": self.name,
            "state": self.state,
            "base_model": self.base_model,
            "base_model_id": str(self.base_model_id) if self.base_model_id else None,
            "dataset_version_id": self.dataset_version_id,
            "tenant": self.tenant,
            "run_id": str(self.run_id) if self.run_id else None,
            "metrics": self.metrics,
            "size_bytes": self.size_bytes,
            "prefix": self.prefix,
            "decision": self.decision,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "promoted_at": self.promoted_at,
            "promoted_by": self.promoted_by,
            "retired_at": self.retired_at,
            "retired_by": self.retired_by,
        }


@dataclass(frozen=True, slots=True)
class NewModel:
    """What registering a candidate records; ``id`` is chosen before its files upload."""

    id: uuid.UUID
    name: str
    base_model: str
    base_model_id: uuid.UUID | None
    dataset_version_id: int | None
    run_id: uuid.UUID | None
    metrics: dict[str, Any]
    prefix: str
    files: list[ModelFile]
    created_by: str = "orchestrator"
    tenant: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


async def _notify(conn: AsyncConn, action: str, model_id: uuid.UUID | None) -> None:
    payload = json.dumps({"action": action, "model_id": str(model_id) if model_id else None})
    await conn.execute("SELECT pg_notify(%s, %s)", (MODELS_CHANNEL, payload))


async def _event(
    conn: AsyncConn, model_id: uuid.UUID | None, action: str, reason: str | None, actor: str
) -> None:
    await conn.execute(
        "INSERT INTO model_events (model_id, action, reason, actor) VALUES (%s, %s, %s, %s)",
        (model_id, action, reason, actor),
    )


async def _fetch(conn: AsyncConn, where: str, params: tuple[Any, ...]) -> list[ModelRecord]:
    async with conn.cursor(row_factory=class_row(ModelRecord)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM models {where}", params)  # noqa: S608 - fixed SQL fragments
        return await cur.fetchall()


async def register(conn: AsyncConn, new: NewModel) -> ModelRecord:
    """Record ``new`` as a candidate (its files are already in object storage)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO models (id, name, base_model, base_model_id, dataset_version_id,"
            " run_id, metrics, size_bytes, prefix, files, created_by, tenant)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                new.id,
                new.name,
                new.base_model,
                new.base_model_id,
                new.dataset_version_id,
                new.run_id,
                Jsonb(new.metrics),
                new.size_bytes,
                new.prefix,
                Jsonb([{"name": f.name, "size": f.size, "sha256": f.sha256} for f in new.files]),
                new.created_by,
                new.tenant,
            ),
        )
        await _event(conn, new.id, "registered", None, new.created_by)
        await _notify(conn, "registered", new.id)
    return await get(conn, str(new.id))


async def list_models(conn: AsyncConn) -> list[ModelRecord]:
    """Every registered model: the promoted one first, then newest first."""
    return await _fetch(conn, "ORDER BY state = 'promoted' DESC, created_at DESC", ())


async def promoted(conn: AsyncConn) -> ModelRecord | None:
    """The model workers are to run, or None for the configured ``asr.model``."""
    found = await _fetch(conn, "WHERE state = 'promoted'", ())
    return found[0] if found else None


async def get(conn: AsyncConn, ref: str) -> ModelRecord:
    """A model by id, name, or a unique prefix of its id; ``ModelNotFound`` otherwise."""
    ref = ref.strip()
    try:
        by_id = await _fetch(conn, "WHERE id = %s", (uuid.UUID(ref),))
    except ValueError:
        by_id = []
    if by_id:
        return by_id[0]
    by_name = await _fetch(conn, "WHERE name = %s", (ref,))
    if by_name:
        return by_name[0]
    if len(ref) >= 4 and all(c in "0123456789abcdef-" for c in ref.lower()):
        matches = await _fetch(conn, "WHERE id::text LIKE %s", (ref.lower() + "%",))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"{m.id} ({m.name})" for m in matches)
            raise ModelNotFound(f"{ref!r} matches several models: {names}")
    raise ModelNotFound(f"no registered model has the id or name {ref!r}")


async def promote(conn: AsyncConn, ref: str, *, actor: str, reason: str) -> ModelRecord:
    """Make ``ref`` the promoted model; the one promoted before is retired."""
    async with conn.transaction():
        await _lock(conn)
        model = await get(conn, ref)
        if model.state == "promoted":
            raise Conflict(f"model {model.name} is already the promoted model")
        await _retire_current(conn, actor)
        await conn.execute(
            "UPDATE models SET state = 'promoted', promoted_at = now(), promoted_by = %s,"
            " decision = %s, retired_at = NULL, retired_by = NULL WHERE id = %s",
            (actor, reason, model.id),
        )
        await _event(conn, model.id, "promoted", reason, actor)
        await _notify(conn, "promoted", model.id)
    return await get(conn, str(model.id))


async def refuse(conn: AsyncConn, ref: str, *, actor: str, reason: str) -> ModelRecord:
    """Record that the gate kept ``ref`` from promotion, and why."""
    async with conn.transaction():
        model = await get(conn, ref)
        await conn.execute("UPDATE models SET decision = %s WHERE id = %s", (reason, model.id))
        await _event(conn, model.id, "refused", reason, actor)
        await _notify(conn, "refused", model.id)
    return await get(conn, str(model.id))


async def rollback(conn: AsyncConn, *, actor: str) -> tuple[ModelRecord, ModelRecord | None]:
    """Retire the promoted model and promote again the one before it (None: asr.model).

    Returns (retired, restored); ``Conflict`` when no model is promoted.
    """
    async with conn.transaction():
        await _lock(conn)
        current = await promoted(conn)
        if current is None:
            raise Conflict("no model is promoted: the workers already run the configured model")
        stack = await _promotion_stack(conn)
        while stack and stack[-1] == current.id:
            stack.pop()
        restored_id = stack[-1] if stack else None
        await conn.execute(
            "UPDATE models SET state = 'retired', retired_at = now(), retired_by = %s"
            " WHERE id = %s",
            (actor, current.id),
        )
        why = f"rolled back to {restored_id or 'the configured model'}"
        await _event(conn, current.id, "rolled_back", why, actor)
        if restored_id is not None:
            await conn.execute(
                "UPDATE models SET state = 'promoted', promoted_at = now(), promoted_by = %s,"
                " retired_at = NULL, retired_by = NULL,"
                " decision = 'promoted again by a rollback' WHERE id = %s",
                (actor, restored_id),
            )
        await _notify(conn, "rolled_back", restored_id)
    restored = await get(conn, str(restored_id)) if restored_id else None
    return await get(conn, str(current.id)), restored


async def _promotion_stack(conn: AsyncConn) -> list[uuid.UUID]:
    """Promoted models in order, each rollback having taken the top one off."""
    cur = await conn.execute(
        "SELECT model_id, action FROM model_events WHERE action IN ('promoted', 'rolled_back')"
        " AND model_id IS NOT NULL ORDER BY seq"
    )
    stack: list[uuid.UUID] = []
    for row in await cur.fetchall():
        if row["action"] == "promoted":
            stack.append(uuid.UUID(str(row["model_id"])))
        elif stack:
            stack.pop()
    return stack


async def _lock(conn: AsyncConn) -> None:
    """One promotion or rollback at a time (the transaction's advisory lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MODELS_LOCK_KEY,))


async def _retire_current(conn: AsyncConn, actor: str) -> None:
    await conn.execute(
        "UPDATE models SET state = 'retired', retired_at = now(), retired_by = %s"
        " WHERE state = 'promoted'",
        (actor,),
    )


# Shared by every process that changes the registry ("ai2m").
MODELS_LOCK_KEY = 0x6169326D
