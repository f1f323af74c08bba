"""Versioned SQL migrations, applied at start-up under an advisory lock.

Migration files live in ``pipeline/db/migrations`` as ``NNNN_name.sql``. Each is
applied in its own transaction and recorded in ``schema_migrations``; the whole
run holds a session advisory lock so two processes starting together apply each
migration exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog

log = structlog.get_logger(__name__)

# An arbitrary constant shared by every ai2text process ("ai2t" in ASCII).
MIGRATION_LOCK_KEY = 0x61693274
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("pipeline.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def migrate(conn: psycopg.Connection[object]) -> list[int]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[int] = []
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        done = {int(r[0]) for r in rows}  # type: ignore[index]
        for migration in available_migrations():
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("migration applied", version=migration.version, name=migration.name)
            applied_now.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now
