"""Versions of one source: a row waiting to be superseded, and the row that supersedes it.

A hot-folder file that changed after it was ingested (a writer carried on), or
that could not be read yet, has its row marked ``supersede_pending``. The next
version recorded for the same ``source_uri`` supersedes it, in the transaction
that records that version: the old row keeps its transcript but points at the
new one (``superseded_by``), which keeps it out of datasets and search.
"""

from __future__ import annotations

import uuid

import structlog

from pipeline.db.database import AsyncConn

log = structlog.get_logger(__name__)


async def mark_pending(conn: AsyncConn, audio_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE audio SET supersede_pending = true, updated_at = now()"
        " WHERE id = %s AND superseded_by IS NULL",
        (audio_id,),
    )


async def adopt_version(
    conn: AsyncConn, source_uri: str, source_version: str | None, sha256: str
) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """A pending row of this source with the very same bytes takes the new version.

    Only its fingerprint moved (a ``touch``, a copy tool setting times late): it is
    the same recording, not a new one to supersede it. Returns its id and
    ``duplicate_of``, or None when no such row waits.
    """
    cur = await conn.execute(
        "UPDATE audio SET source_version = %s, supersede_pending = false, updated_at = now()"
        " WHERE id = (SELECT id FROM audio WHERE source_uri = %s AND supersede_pending"
        "  AND sha256 = %s LIMIT 1)"
        " RETURNING id, duplicate_of",
        (source_version, source_uri, sha256),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return row["id"], row["duplicate_of"]  # type: ignore[return-value]


async def supersede_pending(
    conn: AsyncConn, source_uri: str, audio_id: uuid.UUID, *, name: str
) -> None:
    """Point the rows of this source that wait for a new version at ``audio_id``."""
    cur = await conn.execute(
        "UPDATE audio SET superseded_by = %s, supersede_pending = false, updated_at = now()"
        " WHERE source_uri = %s AND supersede_pending AND id <> %s RETURNING id",
        (audio_id, source_uri, audio_id),
    )
    for row in await cur.fetchall():
        log.info("superseded", file=name, audio_id=str(row["id"]), superseded_by=str(audio_id))
